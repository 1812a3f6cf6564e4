# tinymlops — one entry point for people and CI. Every target installs what it needs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE = 1
# test workers (pytest-xdist, one test file per worker at a time: module fixtures are built once);
# TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider --durations=25 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: install run test test-fast check bench lint format mlflow-ui clean serve browser

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

## run: the whole pipeline on embedded defaults (SQLite MLflow, ephemeral Prefect, local DVC remote)
run: install
	$(BIN)/tinymlops run

## test: the house rules, then the whole suite (unit, integration, security, reliability, browser); what CI runs
test: install check browser
	$(PYTEST)

## browser: Debian's chromium for the dashboard's browser tests (Playwright drives it; it downloads no
## browser). Installed with apt when missing and possible; otherwise those tests skip with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "browser: apt could not install chromium; the dashboard's browser tests will skip"; \
	  else \
	    echo "browser: no chromium and no root apt-get here; the dashboard's browser tests will skip (install chromium to run them)"; \
	  fi; }

## check: the import contract, lint, format and the type checker (the house rules of docs/architecture.md)
check: install
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test-fast: skip the tests marked slow (whole-flow and dvc repro runs)
test-fast: install
	$(PYTEST) -m "not slow"

## bench: overhead of the orchestrated pipeline against the bare work
bench: install
	$(BIN)/python bench/overhead.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## serve: local Prefect server + process worker + the deployments of prefect.yaml; prints the UI URL, Ctrl-C stops
serve: install
	$(BIN)/tinymlops serve

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.tinymlops/mlflow.db --port 5000

clean:
	rm -rf .tinymlops data/raw data/prepared models reports
