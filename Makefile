# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
export NUMBA_CACHE_DIR ?= $(HOME)/.cache/tfsched/numba
PYTEST_ARGS ?=

.PHONY: demo test bootstrap down lint bench

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/tfsched demo

down:
	.venv/bin/tfsched devcluster down

test: bootstrap
	.venv/bin/ruff check .
	.venv/bin/pytest -q $(PYTEST_ARGS)

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

bench: bootstrap
	.venv/bin/python bench/bench_extender.py
