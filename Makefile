# kpisheet: `make run` serves the demo sheet, `make test` runs the whole suite.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test lint format bench bench-large bench-peers bench-app clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/kpisheet serve

test: $(VENV)/.installed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest --durations=15

# Benchmarks on synthetic sheets (see docs/performance.md); never part of `make test`. Each
# prints kpisheet's own table, then kpisheet against DuckDB and Polars (the `bench` extra, which
# these targets install; never a dependency of kpisheet), results checked equal, with the targets.
bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run.py --size S --size M
	$(BIN)/python benchmarks/peers.py --size S --size M

bench-large: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run.py --size L
	$(BIN)/python benchmarks/peers.py --size L

# Only the comparison with DuckDB and Polars, sizes S and M.
bench-peers: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/peers.py --size S --size M

# 50 simulated pages against `kpisheet serve` at size M on loopback (about 5 minutes, at most 20).
bench-app: $(VENV)/.installed
	timeout 1500 $(BIN)/python benchmarks/app_load.py --size M --sessions 50

lint: $(VENV)/.installed
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis .mypy_cache
