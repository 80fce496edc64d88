# The two commands of the README: `make serve` and `make test`. Both build the
# virtualenv from the pinned files on first use, so a fresh machine needs only Python 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATA   ?= ./data

.PHONY: serve test lint venv clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-cache-dir -c requirements.lock -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/yim serve --host $(HOST) --port $(PORT) --data $(DATA)

test: $(STAMP)
	$(BIN)/ruff check yim tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check yim tests
	$(BIN)/ruff format --check yim tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# `make bench`: the one-to-one benchmark against yim and the bare relay, medians of 3
# (docs/performance.md). BENCH_ARGS adds options, e.g. BENCH_ARGS="--procs 2 --json".
.PHONY: bench
bench: $(STAMP)
	$(BIN)/yim bench pairs --runs 3 --compare-baseline $(BENCH_ARGS)
