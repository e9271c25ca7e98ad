# seqlab: every target installs what it needs into .venv, so a fresh clone works.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# the CPU wheel on local disk, first: an unpinned torch would pull a CUDA build
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

# a short-range source, then a long-lag one: each leaderboard against its known optimum
demo: install
	$(BIN)/seqlab run --config configs/demo.yaml
	$(BIN)/seqlab run --config configs/demo-long-lag.yaml

# one pytest worker per core, each test file on one worker (its module fixtures built
# once), the heaviest files first (tests/conftest.py), one torch thread per worker
PYTEST := $(BIN)/pytest -q -n auto --dist loadfile --no-loadscope-reorder

test: install
	$(PYTEST) --durations=25

test-fast: install
	$(PYTEST) -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# every built benchmark, each writing benchmarks/results/NAME.json; then README's Results
bench: install
	$(BIN)/python -m benchmarks all
	$(BIN)/python -m benchmarks.readme

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
