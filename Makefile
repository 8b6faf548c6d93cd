# The two commands of the README: `make run` and `make test`. Everything else is a helper of those.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed

.PHONY: run test lint venv node soak bench clean

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

run: $(STAMP)
	$(BIN)/chatwire serve

lint: $(STAMP)
	$(BIN)/ruff check chatwire tests $(wildcard bench)
	$(BIN)/ruff format --check chatwire tests $(wildcard bench)

test: $(STAMP) $(NODE_STAMP)
	$(BIN)/ruff check chatwire tests $(wildcard bench)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Benchmarks print tables of ratios against a peer measured in the same run (see README).
bench: $(STAMP)
	$(BIN)/python bench/persistence.py

clean:
	rm -rf $(VENV) tests/node/node_modules
