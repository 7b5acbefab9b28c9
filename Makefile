# One entry point for everything: `make up` starts the stack, `make test` proves it.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard proto/api/*.proto)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements/*.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## the development virtualenv (.venv)

# The generated package `api` mirrors proto/api, so `from api import cheese_pb2` works as is.
api/.built: $(PROTOS) $(BIN)/.installed
	rm -rf api && mkdir -p api && touch api/__init__.py api/py.typed
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--mypy_out=. --mypy_grpc_out=. $(PROTOS)
	touch $@

.PHONY: proto
proto: api/.built ## generate the gRPC code into api/

# Keys are group-readable (never world-readable) so that the containers, which run as a
# non-root user with the key files' group added (see docker-compose.yml), can read them.
.PHONY: certs
certs: ## the development CA, server and client certificates (certs/); keeps what is valid
	@certs/gen-certs.sh certs --key-mode 0640

videos/demo.mp4: $(BIN)/.installed soccer/demo_video.py
	$(BIN)/python -m soccer.demo_video --out $@

.PHONY: video
video: videos/demo.mp4 ## the synthetic demo match (videos/demo.mp4)

.PHONY: lint
lint: proto ## ruff and strict mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: unit
unit: proto ## the unit and integration suite (servers on loopback, mutual TLS)
	$(BIN)/pytest

.PHONY: test
test: lint unit ## everything CI runs

.PHONY: run-cheese run-movie run-soccer
run-cheese run-movie run-soccer: run-%: proto certs video ## run one server on the host (mutual TLS)
	$(BIN)/python -m $*

.PHONY: clean
clean: ## remove generated code, the virtualenv and caches (keeps certs and videos)
	rm -rf api $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
