# tinymlops — one entry point for people and CI. Every target installs what it needs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: install run test test-fast bench lint format mlflow-ui clean serve

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

## run: the whole pipeline on embedded defaults (SQLite MLflow, ephemeral Prefect, local DVC remote)
run: install
	$(BIN)/tinymlops run

## test: the whole suite (unit, data, model, integration); what CI runs
test: install
	$(BIN)/python -m pytest -p no:cacheprovider

## test-fast: skip the tests marked slow (whole-flow and dvc repro runs)
test-fast: install
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow"

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
