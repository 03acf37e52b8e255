# Slipway — `make demo` runs the main job on the embedded local cluster; `make test` runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export SLIPWAY_CACHE_DIR ?= $(HOME)/.cache/slipway
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Python must keep the bytecode it compiles: with PYTHONDONTWRITEBYTECODE set (some CI images
# set it), every Airflow task process and test subprocess recompiles Airflow and the kubernetes
# client from source (`import airflow.sdk` 20 s instead of 5 s on this machine).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help deps system-deps binaries binaries-range test-range test-airflow test-fleet test-distributed test-faults cluster-up cluster-down lint typecheck unit test demo demo-down bench clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==0.13.9
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements.txt -c constraints.txt
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -c constraints.txt -e .
	touch $@

deps: $(VENV)/.installed ## Python virtualenv with pinned Airflow, providers and tools

system-deps: ## Debian packages the tests need (haproxy for the clusters, rclone for migrated volumes, chromium for the report page)
	@command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
	@command -v rclone >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null; }
	@command -v chromium >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

binaries: deps ## Build the official Kubernetes/etcd/kwok binaries from Go modules (cached by version)
	$(VENV)/bin/slipway-local build

RANGE_RELEASES := etcd=3.5.21 etcd=3.5.32 etcd=3.6.4 kubernetes=1.31.14 kubernetes=1.32.13 kubernetes=1.33.13 kubernetes=1.34.4 \
	kubernetes=1.25.16 kubernetes=1.26.15

binaries-range: deps ## Also build the source document's range (1.25 -> 1.26, 1.31 -> 1.34, etcd 3.5/3.6); not part of `make test`
	$(VENV)/bin/slipway-local build $(RANGE_RELEASES)

cluster-up: deps system-deps binaries ## Start the local HA cluster with sample workloads
	$(VENV)/bin/slipway-local up --workloads

cluster-down: ## Stop the local cluster and delete its state
	-$(VENV)/bin/slipway-local down --purge

lint: deps ## ruff + mypy
	$(VENV)/bin/ruff check include dags plugins tests bench
	$(VENV)/bin/ruff format --check include dags plugins tests bench
	$(VENV)/bin/mypy

unit: deps ## Pure-logic tests only (no cluster)
	$(VENV)/bin/pytest -q tests/unit

test: deps system-deps binaries lint ## The whole suite: lint, unit, DAG, local-cluster and fault-matrix tests
	$(VENV)/bin/pytest -q tests --ignore=tests/range --ignore=tests/airflow_live --ignore=tests/fleet_live --ignore=tests/distributed --ignore=tests/migration

test-range: deps system-deps binaries binaries-range ## The seed's range through the DAGs: 1.25 -> 1.26, and 1.31 + etcd 3.5 -> 1.34 + etcd 3.6 hop by hop (heavy)
	$(VENV)/bin/pytest -q -s tests/range

test-airflow: deps system-deps binaries ## Airflow's own processes killed mid-run (scheduler, task process, triggerer) under a real scheduler (heavy)
	$(VENV)/bin/pytest -q -s tests/airflow_live

test-fleet: deps system-deps binaries ## k8s_fleet_upgrade under a real scheduler: three local clusters in two stages, child runs executing (heavy)
	$(VENV)/bin/pytest -q -s tests/fleet_live

test-distributed: deps system-deps binaries ## CeleryExecutor for real: private Postgres and Redis (Debian packages), scheduler, dag-processor, triggerer, api-server and two Celery workers; one worker killed mid-drain (heavy)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	$(VENV)/bin/pytest -q -s tests/distributed

MIGRATION_TOOLS := velero=1.18.3 velero-plugin-for-aws=1.14.3 gofakes3=1.2.0
.PHONY: test-migration
test-migration: deps system-deps binaries ## Velero between two local clusters: builds Velero, its AWS plugin and an S3 server from Go modules (cached by version), then tests/migration (heavy)
	time $(VENV)/bin/slipway-local build $(MIGRATION_TOOLS)
	$(VENV)/bin/pytest -q -s tests/migration

test-faults: deps system-deps binaries ## The fault matrix alone, printing its table (also part of `make test`)
	$(VENV)/bin/pytest -q -s tests/faults

demo: deps system-deps binaries ## Local cluster + Airflow standalone + the upgrade DAG, end to end
	$(PY) -m slipway.demo

demo-down: ## Stop the demo's Airflow and cluster
	$(PY) -m slipway.demo --down

bench: deps system-deps binaries ## Benchmarks (ratios against a baseline measured in the same run)
	$(PY) bench/run.py

BENCH_AIRFLOW_NODES ?= 30
.PHONY: bench-airflow
bench-airflow: deps system-deps binaries ## Worker phase through Airflow standalone vs a kubectl script (BENCH_AIRFLOW_NODES=30)
	$(PY) bench/bench_airflow.py --nodes $(BENCH_AIRFLOW_NODES)

clean: cluster-down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache airflow-home
