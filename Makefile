# Everything runs from the project's own virtualenv (.venv), made on first use.
# Installs come from uv.lock (exact versions and hashes of every dependency, for
# every platform and Python 3.11-3.13), and are redone only when pyproject.toml or
# uv.lock changed since the last one, so `make run` and `make test` are quick after
# the first time. `make lock` rewrites uv.lock after a change to the dependencies.

PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.keel-installed
# uv (from PyPI, like everything else) installs the lock and rewrites it. The same
# version is named in the Dockerfile (ARG UV_VERSION).
UV_VERSION := 0.13.9
UV         := UV_PROJECT_ENVIRONMENT=$(abspath $(VENV)) $(BIN)/uv

.PHONY: help setup lock run test test-fast bench chaos lint ci migrate clean clean-data

help:
	@echo "make run         start Keel locally (Temporal dev server, worker, API) in the foreground"
	@echo "make test        run the test-suite"
	@echo "make test-fast   the test-suite without the engine tests and MySQL, for the edit-test loop"
	@echo "make chaos       200 runs while workers, Temporal, MariaDB and the API are killed;"
	@echo "                 rewrites the table in docs/reliability.md (CHAOS_ARGS=\"--runs 50\")"
	@echo "make lint        ruff (lint and format check) and mypy"
	@echo "make ci          what CI runs (.ci/run): a private MariaDB, make lint, make test"
	@echo "make lock        rewrite uv.lock after changing dependencies in pyproject.toml"
	@echo "make migrate     apply database migrations"
	@echo "make clean       remove the virtualenv and caches (keeps data/)"
	@echo "make clean-data  remove data/ (the local databases)"

setup: $(STAMP)

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --locked: fail, rather than quietly resolve again, when uv.lock does not match
# pyproject.toml (run `make lock`). Every extra (dev, bench) is installed.
$(STAMP): pyproject.toml uv.lock | $(BIN)/uv
	$(UV) sync --locked --all-extras
	touch $@

# The only command that changes uv.lock: run it after editing the dependencies in
# pyproject.toml, and commit both. `make lock LOCK_ARGS=--upgrade` moves every
# dependency to the newest release pyproject.toml allows.
lock: | $(BIN)/uv
	$(UV) lock $(LOCK_ARGS)

run: $(STAMP)
	$(BIN)/keel up

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# Everything but tests/engine (the whole platform per test) and the MySQL runs;
# the workflow's own tests (tests/workflows) stay in.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not engine and not mysql" $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): rewrites docs/benchmarks.md, about 8 minutes.
# KEEL_BENCH_QUICK=1 make bench is a quick validation run.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The chaos run (not part of `make test`; tests/scale/test_chaos.py is its short
# version): `keel up` on a private MariaDB (started with .ci/mariadb.sh) under a
# bounded load, its worker SIGKILLed every few seconds, Temporal, MariaDB and the API
# restarted once each; rewrites the table in docs/reliability.md. Around 15-25 minutes
# on a busy 2-core machine. CHAOS_ARGS: --runs N, --kill-every S, --database sqlite,
# --workdir DIR (keeps the logs), --report - (print only).
chaos: $(STAMP)
	$(BIN)/python -m tests.support.chaos $(CHAOS_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

ci:
	.ci/run

migrate: $(STAMP)
	$(BIN)/keel migrate

clean:
	rm -rf $(VENV) *.egg-info build dist .pytest_cache .mypy_cache .ruff_cache

clean-data:
	rm -rf data
