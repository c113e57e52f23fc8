# Every target creates ./.venv when it is missing; `make help` lists them.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help venv demo ui chromium test test-fast bench bench-full bench-scale bench-hosts team-up team-down lint format clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[pipeline,dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create ./.venv and install everything (torch from local disk)

demo: $(STAMP) ## The main job, end to end on embedded defaults
	$(PY) -m flows.demo

ui: $(STAMP) ## MLflow UI on this project's store (http://127.0.0.1:5000); says where Prefect's is
	$(VENV)/bin/unlearn ui

# The browser tests need a Chromium. Playwright's own download is blocked on machines with a
# closed network, so Debian's package is installed when none is found (as root, with apt-get);
# UNLEARN_REQUIRE_BROWSER makes a missing browser fail those tests instead of skipping them.
chromium: $(STAMP) ## A Chromium for the browser tests: one on PATH, else Debian's (or Playwright's)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	  || command -v google-chrome >/dev/null || [ -n "$$UNLEARN_CHROMIUM" ] \
	  || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	       echo "installing Debian's chromium for the browser tests"; \
	       apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
	       || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }; \
	     else $(VENV)/bin/playwright install chromium || echo "no Chromium found: see README, Browser test"; fi

# Two passes. Every test that starts no process of its own runs on two xdist workers, one file
# each at a time (each worker builds its own golden roots and trained fixtures; one torch thread
# per process, tests/conftest.py): 26 min 8 s serial -> 7 min 6 s. Then the tests marked
# `subprocess` (workers, servers, hosts, a browser, fresh interpreters) run alone, serially:
# they wait on other processes with wall-clock timeouts, which a busy second core would eat.
test: $(STAMP) chromium ## Run every test (unit, flows, behavioral, doctests, a real browser)
	UNLEARN_REQUIRE_BROWSER=1 $(PY) -m pytest -q -m "not subprocess" -n 2 --dist loadfile --durations=15
	UNLEARN_REQUIRE_BROWSER=1 $(PY) -m pytest -q -m subprocess --durations=10

# Two xdist workers, one file each at a time (each starts its own Prefect harness and golden
# root): 3 min 17 s -> 2 min 14 s on 2 cores. `make test` stays serial: its worker, server and
# host tests start processes of their own with wall-clock timeouts.
test-fast: $(STAMP) ## Unit tests, doctests and a smoke set of flows (not marked slow); < 4 min
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile tests/unit tests/flows delete tasks flows

bench: $(STAMP) ## Quick benchmarks: methods, applications, pipeline overhead, model zoo, hosts, scale
	$(PY) -m delete.bench --quick --out bench_results
	$(PY) -m delete.bench.applications --quick --out bench_results --threads 1
	$(PY) -m delete.bench.backdoor_repair --out bench_results
	$(PY) -m flows.bench_pipeline --out bench_results
	$(PY) -m delete.bench.zoo_bench --out bench_results --threads 1
	$(PY) -m delete.bench.zoo_bench --out bench_results/short_forget_sets --threads 1 \
		--models "small_cnn (project),plain_cnn" --forget-images 128 --paper-classes 0
	$(PY) -m flows.bench_hosts --out bench_results
	$(MAKE) bench-scale

bench-hosts: $(STAMP) ## Several hosts: 2 workers vs 1 on the same requests, servers vs embedded overhead
	$(PY) -m flows.bench_hosts --out bench_results

TEAM_DIR ?= /tmp/unlearn-team
WORKERS ?= 2
team-up: $(STAMP) ## A team on this machine: prefect + mlflow servers, $(WORKERS) workers in own clones
	$(PY) -m deploy.team up --dir $(TEAM_DIR) --workers $(WORKERS)

team-down: ## Stop what team-up started
	$(PY) -m deploy.team down --dir $(TEAM_DIR)

bench-full: $(STAMP) ## Full benchmark (3 seeds x 3 classes + multi-class, every method)
	$(PY) -m delete.bench --out bench_results/full
	$(PY) -m delete.bench.applications --out bench_results/full
	$(PY) -m delete.bench.backdoor_repair --epochs 12 --out bench_results/full

bench-scale: $(STAMP) ## Scale case: register + one request on generated 5k then 50k-image folders
	$(PY) -m flows.bench_scale --images 5000 --out bench_results
	$(PY) -m flows.bench_scale --images 50000 --out bench_results

lint: $(STAMP) ## ruff (lint + format check) and mypy on delete/, tasks/, flows/, deploy/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP) ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## Remove generated runs, results and caches (keeps .venv)
	rm -rf bench_results runs artifacts .pytest_cache .mypy_cache .ruff_cache
