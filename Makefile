# The two commands of the README: `make serve` and `make test`. Both build the
# virtualenv from the pinned files on first use; the machine needs Python 3.11 with venv
# and libmagic (Debian: python3-venv libmagic1), see the README.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATA   ?= ./data
# pytest processes `make test` runs at once (tests/parallel.py); 1 runs one, as pytest alone would
TEST_JOBS ?= 2

.PHONY: serve test lint venv clean

# The venv carries the `bench` extra (psutil) next to `test`, so `make bench` works in it
# too; a server installed alone (pip install .) has neither.
# pip's own progress (one line per package) is shown: the first install takes a minute or
# two, and a silent terminal for that long looks like a hang.
$(STAMP): pyproject.toml requirements.lock
	@echo "Setting up $(VENV): installing the pinned dependencies (first run only, a minute or two)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check --no-cache-dir -c requirements.lock -e '.[test,bench]'
	touch $(STAMP)
	@echo "$(VENV) is ready."

venv: $(STAMP)

serve: $(STAMP)
	@echo "Serving http://$(HOST):$(PORT) with data in $(DATA); Ctrl-C stops it."
	$(BIN)/yim serve --host $(HOST) --port $(PORT) --data $(DATA)

# Before pytest, so a mistake fails in seconds, not after the suite: mypy (settings and the
# checked paths in pyproject.toml; its cache, .mypy_cache, rechecks only what changed) and
# lint-imports (.importlinter: the layers only point down, docs/architecture.md, so a new
# back-edge fails the build; --no-cache: nothing written into the checkout).
# pytest then runs in TEST_JOBS processes at once, the test files split between them by their
# measured time (tests/parallel.py): most of the suite waits on real time (paced loads, killed
# and stopped nodes, timeouts, browsers), which a second process fills. With PYTEST_ARGS
# (`make test PYTEST_ARGS="tests/test_x.py -x"`) one pytest runs exactly what was asked.
test: $(STAMP)
	$(BIN)/ruff check yim yimbench tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python -m tests.parallel --jobs $(TEST_JOBS) -- $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check yim yimbench tests
	$(BIN)/ruff format --check yim yimbench tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache

# `make bench`: the one-to-one benchmark against yim and the bare relay, medians of 3
# (docs/performance.md). BENCH_ARGS adds options, e.g. BENCH_ARGS="--procs 2 --json".
.PHONY: bench
bench: $(STAMP)
	$(BIN)/yim bench pairs --runs 3 --compare-baseline $(BENCH_ARGS)
