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
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

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
	@# As root, hand the keys to the containers' group (10001); otherwise compose adds the
	@# keys' own group to the containers (CERTS_GID below).
	@if [ "$$(id -u)" = 0 ]; then chgrp 10001 certs/{cheese,movie,soccer,client}.key; fi

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

.PHONY: k8s-check
k8s-check: venv ## render deploy/k8s (kustomize) and validate it offline; no cluster needed
	scripts/k8s-check.sh

.PHONY: test
test: lint unit k8s-check e2e ## everything CI runs: lint, unit suite, manifests, end-to-end on compose

.PHONY: run-cheese run-movie run-soccer
run-cheese run-movie run-soccer: run-%: proto certs video ## run one server on the host (mutual TLS)
	$(BIN)/python -m $*

.PHONY: soak
soak: venv engine images certs demo-video ## 5 minutes of mixed load on the stack (SOAK_SECONDS)
	scripts/stack-test.sh -m soak tests/chaos -s

.PHONY: bench
bench: proto certs ## benchmarks against a seed-style baseline (minutes; never part of make test)
	scripts/go-tool.sh ghz github.com/bojand/ghz/cmd/ghz@v0.121.0
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: clean
clean: ## remove generated code, the virtualenv and caches (keeps certs and videos)
	rm -rf api $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# ---- Containers ---------------------------------------------------------------------------
COMPOSE := docker compose
GRPCURL_VERSION := v1.9.4
# Trusted while images build (TLS-intercepting proxies); never copied into a runtime image.
EXTRA_CA_DIR ?= /usr/local/share/ca-certificates
export CERTS_GID = $(shell stat -c %g certs/cheese.key 2>/dev/null || echo 10001)

.PHONY: engine
engine: ## a running Docker engine with Compose v2 (installs them on Debian as root)
	@scripts/docker-engine.sh

.PHONY: base-image
base-image: engine ## debian:bookworm-slim: pulled, or bootstrapped with debootstrap if no registry
	@scripts/base-image.sh

.PHONY: build-ca
build-ca:
	@rm -rf build/ca && mkdir -p build/ca
	@if ls $(EXTRA_CA_DIR)/*.crt >/dev/null 2>&1; then cp $(EXTRA_CA_DIR)/*.crt build/ca/; fi

.PHONY: images
images: base-image build-ca ## the base images and one image per service
	docker build --quiet -f Dockerfile.base --target base -t grpcdemo-base:latest .
	docker build --quiet -f Dockerfile.base --target video-base -t grpcdemo-video-base:latest .
	$(COMPOSE) --profile tools build cheese movie soccer edge client
	@docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'grpcdemo-*'

.PHONY: grpcurl
grpcurl: ## grpcurl (pinned, go install) in .tools/bin and as an image for the compose network
	scripts/go-tool.sh grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	cp .tools/bin/grpcurl deploy/grpcurl/grpcurl
	$(COMPOSE) --profile tools build grpcurl

# Generated in the soccer image, so `make up` needs no Python on the host.
.PHONY: demo-video
demo-video: images
	@if [ ! -f videos/demo.mp4 ]; then mkdir -p videos && docker run --rm \
		--user "$$(id -u):$$(id -g)" -v "$$PWD/videos:/videos" --entrypoint python \
		grpcdemo-soccer:latest -m soccer.demo_video --out /videos/demo.mp4; fi

.PHONY: up
up: engine images certs demo-video ## build and start everything, healthy (docker compose up --wait)
	$(COMPOSE) up -d --wait
	@scripts/how-to-call.sh

.PHONY: down
down: ## stop and remove the stack, its volumes and networks
	$(COMPOSE) --profile tools down --volumes --remove-orphans

.PHONY: logs
logs: ## follow the services' logs
	$(COMPOSE) logs -f

.PHONY: ps
ps: ## the services and their health
	$(COMPOSE) ps

.PHONY: e2e
e2e: venv engine images certs demo-video grpcurl ## end to end over the compose network, then down
	scripts/stack-test.sh

# Faults under load on the stack; the movie catalogue is a scratch copy the test replaces.
.PHONY: chaos
chaos: venv engine images certs demo-video ## kill, stop and corrupt under load (prints recovery times)
	scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; chmod 755 "$$scratch"; \
	cp movie/data/movies.json "$$scratch/"; \
	MOVIE_DATA_DIR="$$scratch" scripts/stack-test.sh -m chaos tests/chaos -s
