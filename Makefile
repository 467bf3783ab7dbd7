# rides: two commands on a fresh machine, `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_YES := 1
export PIPENV_NOSPIN := 1
export PIPENV_VERBOSITY := -1
# Real TLC months beside the project (../shared/data) are used when present; others download.
export RIDES_DATA_DIRS ?= $(abspath ../shared/data)
EVENTS ?= 10000

.PHONY: setup run test unit-test integration-test lint format bench deploy clean stack-up stack-down

setup: $(VENV)/.installed

$(VENV)/.installed: Pipfile.lock pyproject.toml
	@$(PYTHON) -m pipenv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet pipenv
	$(PYTHON) -m pipenv sync --dev
	@touch $@

run: setup  ## the whole flow on the embedded local stack, then a summary
	$(BIN)/rides demo --events $(EVENTS)

test: setup  ## unit tests, then integration tests against real local stack processes
	$(BIN)/pytest tests integration-test

unit-test: setup
	$(BIN)/pytest tests

integration-test: setup
	$(BIN)/pytest integration-test

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup  ## throughput, cold start, memory; writes bench/results.md
	$(BIN)/python -m bench.run

stack-up: setup
	$(BIN)/rides stack up

stack-down: setup
	$(BIN)/rides stack down

clean:
	rm -rf .rides .pytest_cache .ruff_cache htmlcov .coverage
