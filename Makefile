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
