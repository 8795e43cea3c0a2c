# Short verbs. `make demo` and `make test` create or refresh .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench bench-workers bench-startup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## send the sample digest to a local capture inbox under var/
	$(BIN)/newsletter demo

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff, mypy, and the layering contracts in pyproject.toml (import-linter)
	$(BIN)/ruff check newsletter tests bench
	$(BIN)/ruff format --check newsletter tests bench
	$(BIN)/mypy newsletter
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)  ## delivery throughput against smtp-sink (see README)
	$(BIN)/python bench/delivery.py $(BENCH_ARGS)
	$(BIN)/python bench/pipelining.py $(BENCH_RTT_ARGS)

bench-workers: $(STAMP)  ## deliveries/s with 1, 2 and 4 workers on PostgreSQL vs one on SQLite
	$(BIN)/python bench/workers.py $(BENCH_ARGS)

bench-startup: $(STAMP)  ## newsletter --help / --version start-up time against Python's own
	$(BIN)/python bench/startup.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
