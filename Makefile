# Everything runs from the project's own virtualenv (.venv), made on first use.
# The project is (re)installed into it only when pyproject.toml changed since
# the last install, so `make run` and `make test` are quick after the first time.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.keel-installed

.PHONY: help setup run test test-fast bench lint migrate clean clean-data

help:
	@echo "make run         start Keel locally (Temporal dev server, worker, API) in the foreground"
	@echo "make test        run the test-suite"
	@echo "make test-fast   the test-suite without the engine tests and MySQL, for the edit-test loop"
	@echo "make lint        ruff and mypy"
	@echo "make migrate     apply database migrations"
	@echo "make clean       remove the virtualenv and caches (keeps data/)"
	@echo "make clean-data  remove data/ (the local databases)"

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/keel up

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# Everything but tests/engine (the whole platform per test) and the MySQL runs;
# the workflow's own tests (tests/workflows) stay in.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not engine and not mysql" $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): rewrites docs/benchmarks.md, about 8 minutes.
# KEEL_BENCH_QUICK=1 make bench is a quick validation run. py-spy comes with '.[bench]'.
bench: $(STAMP)
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

migrate: $(STAMP)
	$(BIN)/keel migrate

clean:
	rm -rf $(VENV) *.egg-info build dist .pytest_cache .mypy_cache .ruff_cache

clean-data:
	rm -rf data
