# The two commands a new user needs: `make run` and `make test`. Both create the
# virtual environment on first use, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 5000
# Where the browser tests save their screenshots (tests/browser).
POCKET_SCREENSHOTS ?= build/screenshots

.PHONY: run test lint format bench status verify migrate follow clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pocket serve --host $(HOST) --port $(PORT)

# The other `pocket` commands, on the same data as `make run` (or the database
# POCKET_DATABASE_URL names); ARGS passes options: make migrate ARGS="--version 1".
status verify migrate follow: $(STAMP)
	$(BIN)/pocket $@ $(ARGS)

# The benchmark, from this checkout (it does not ship with the package): make
# bench ARGS="--tiny --backend sqlite".
bench: $(STAMP)
	$(BIN)/python -m tools.bench $(ARGS)

test: $(STAMP)
	POCKET_SCREENSHOTS=$(POCKET_SCREENSHOTS) $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pocket tests tools
	$(BIN)/ruff format --check pocket tests tools
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix pocket tests tools
	$(BIN)/ruff format pocket tests tools

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
