# The two commands of the README: `make run` and `make test`. Everything else is a helper of those.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed
WEB_NODE_STAMP := web/node_modules/.installed
# The web client is rebuilt only when one of its sources changed; the stamp lives in the build output.
WEB_BUILD := web/dist/.stamp
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json

.PHONY: run test lint venv node web soak bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

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

run: $(STAMP) $(WEB_BUILD)
	$(BIN)/chatwire serve

lint: $(STAMP)
	$(BIN)/ruff check chatwire tests $(wildcard bench)
	$(BIN)/ruff format --check chatwire tests $(wildcard bench)

test: $(STAMP) $(NODE_STAMP) $(WEB_BUILD)
	$(BIN)/ruff check chatwire tests $(wildcard bench)
	cd web && npm run typecheck --silent && npx vitest run
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Benchmarks print tables of ratios against a peer measured in the same run; `make bench` runs them all and
# writes bench/RESULTS.md (see README).
bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

# The long soak (not part of `make test`, which runs a 1-minute, 300-client version): see README "Faults and soak".
soak: $(STAMP) $(NODE_STAMP)
	$(BIN)/python bench/soak.py --clients 2000 --minutes 10

clean:
	rm -rf $(VENV) tests/node/node_modules web/node_modules web/dist
