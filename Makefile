# The two commands of the README: `make run` and `make test`. Everything else is a helper of those.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Both install from lock files (exact versions with hashes, `make lock` writes them): `make run` the runtime
# dependencies only, `make test` those plus the test tools.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
# A second virtualenv with the lowest versions pyproject.toml allows, for the transport tests (`make compat`).
LOWEST := .venv-lowest
LOWEST_STAMP := $(LOWEST)/.installed
# What the engine relies on in uvicorn and websockets (test_wsprotocol.py checks those interfaces), the engine's
# own tests and the app's socket suites.
TRANSPORT_TESTS := tests/unit/test_no_library_internals.py tests/engine/test_wsprotocol.py \
	tests/engine/test_units.py tests/engine/test_socketio_ws.py tests/integration/test_socket.py \
	tests/integration/test_recovery.py tests/integration/test_idle_connections.py
NODE_STAMP := tests/node/node_modules/.installed
WEB_NODE_STAMP := web/node_modules/.installed
# The web client is rebuilt only when one of its sources changed; the stamp lives in the build output.
WEB_BUILD := web/dist/.stamp
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json

.PHONY: run test lint venv node web soak bench clean lock compat

$(RUN_STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(RUN_STAMP)

$(STAMP): requirements-test.lock requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q --require-hashes -r requirements-test.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP) $(RUN_STAMP)

venv: $(STAMP)

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

node: $(NODE_STAMP)

$(WEB_NODE_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_NODE_STAMP)

$(WEB_BUILD): $(WEB_NODE_STAMP) $(WEB_SOURCES)
	cd web && npm run build --silent
	touch $(WEB_BUILD)

web: $(WEB_BUILD)

run: $(RUN_STAMP) $(WEB_BUILD)
	$(BIN)/chatwire serve

lint: $(STAMP)
	$(BIN)/ruff check chatwire tests $(wildcard bench)
	$(BIN)/mypy chatwire
	$(BIN)/ruff format --check chatwire tests $(wildcard bench)

test: $(STAMP) $(NODE_STAMP) $(WEB_BUILD)
	$(BIN)/ruff check chatwire tests $(wildcard bench)
	$(BIN)/mypy chatwire
	cd web && npm run typecheck --silent && npx vitest run
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory compat

# The lock files, from PyPI, for every platform (Python 3.11+): `make lock` keeps existing pins and adds what is
# new; `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed (then run `make test`).
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 -q \
	--custom-compile-command "make lock" $(LOCK_ARGS)
lock: $(STAMP)
	$(UV_COMPILE) --generate-hashes -o requirements.lock
	$(UV_COMPILE) --generate-hashes --extra test -o requirements-test.lock
	$(UV_COMPILE) --resolution lowest-direct -o requirements-lowest.lock

# The transport tests (and the library-internals check) on the lowest versions pyproject.toml allows; the
# test tools themselves come at their locked versions.
$(LOWEST_STAMP): requirements-lowest.lock requirements-test.lock | $(STAMP)
	$(BIN)/uv venv -q --allow-existing --python $(BIN)/python $(LOWEST)
	$(BIN)/uv pip sync -q --python $(LOWEST)/bin/python requirements-lowest.lock
	$(BIN)/uv pip install -q --python $(LOWEST)/bin/python -c requirements-test.lock \
		pytest pytest-asyncio pytest-timeout hypothesis
	touch $(LOWEST_STAMP)

compat: $(LOWEST_STAMP)
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(TRANSPORT_TESTS)

# Benchmarks print tables of ratios against a peer measured in the same run; `make bench` runs them all and
# writes bench/RESULTS.md (see README).
bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

# The long soak (not part of `make test`, which runs a 1-minute, 300-client version): see README "Faults and soak".
soak: $(STAMP) $(NODE_STAMP)
	$(BIN)/python bench/soak.py --clients 2000 --minutes 10

clean:
	rm -rf $(VENV) $(LOWEST) tests/node/node_modules web/node_modules web/dist build
