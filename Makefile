# The two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every command finds var/local.env by itself (omnichannel/settings.py: env_file_path); it is named
# here because `make test` moves VAR_DIR to var/test, where no local.env is.
export ENV_FILE ?= var/local.env

.PHONY: run test lint format clean-var

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

var/local.env: | $(BIN)/python
	$(BIN)/python scripts/make_local_env.py $@

## Run the product: web, worker, beat and the LINE stand-in, with demo data. Ctrl-C stops all.
run: $(VENV)/.installed var/local.env
	scripts/run.sh

## Run the tests (on the embedded defaults unless DATABASE_URL / CELERY_BROKER_URL say otherwise).
test: $(VENV)/.installed var/local.env
	VAR_DIR=var/test $(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
