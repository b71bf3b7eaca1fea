# kvcluster — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test lint typecheck fmt check-imports sim-long soak bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Start a local 3-node cluster in the foreground (Ctrl-C stops it; data stays in ./data).
run: $(STAMP)
	$(VENV)/bin/kvcluster local --data-dir data

## Everything: lint, types, layering, the whole test suite.
test: $(STAMP) lint typecheck check-imports
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check node operator tests
	$(VENV)/bin/ruff format --check node operator tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check-imports: $(STAMP)
	$(VENV)/bin/lint-imports

fmt: $(STAMP)
	$(VENV)/bin/ruff format node operator tests
	$(VENV)/bin/ruff check --fix node operator tests

## Raft simulation over many more seeds than `make test` uses.
sim-long: $(STAMP)
	RAFT_SIM_SEEDS=2000 $(PY) -m pytest -q tests/raft

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
