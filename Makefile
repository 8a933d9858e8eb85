# The two commands a new user needs: `make run` and `make test`. Both create the
# virtual environment on first use, so a fresh clone needs only python3 and make.
# One venv, two stamps: `make run` (and the operator commands) install what Pocket
# needs to run; `make test`, `make lint` and `make bench` add the development
# extra (pytest, mypy, Playwright, ...: about ten times the size) to the same venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-stamp
DEV := $(VENV)/.dev-stamp
HOST ?= 127.0.0.1
PORT ?= 5000
# Where the browser tests save their screenshots (tests/browser).
POCKET_SCREENSHOTS ?= build/screenshots

.PHONY: run test lint format bench status verify migrate follow clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $(RUNTIME)

# The development extra holds the runtime packages too: both stamps are true.
$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(RUNTIME) $(DEV)

run: $(RUNTIME)
	$(BIN)/pocket serve --host $(HOST) --port $(PORT)

# The other `pocket` commands, on the same data as `make run` (or the database
# POCKET_DATABASE_URL names); ARGS passes options: make migrate ARGS="--version 1".
status verify migrate follow: $(RUNTIME)
	$(BIN)/pocket $@ $(ARGS)

# The benchmark, from this checkout (it does not ship with the package): make
# bench ARGS="--tiny --backend sqlite". It compares waitress with granian, a
# development package.
bench: $(DEV)
	$(BIN)/python -m tools.bench $(ARGS)

test: $(DEV)
	POCKET_SCREENSHOTS=$(POCKET_SCREENSHOTS) $(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check pocket tests tools
	$(BIN)/ruff format --check pocket tests tools
	$(BIN)/mypy

format: $(DEV)
	$(BIN)/ruff check --fix pocket tests tools
	$(BIN)/ruff format pocket tests tools

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
