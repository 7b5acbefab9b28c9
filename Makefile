# Conveniences over the compose file: `make up` bootstraps an engine where none runs, then
# `docker compose up -d --wait`; `make test` proves it all.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard proto/api/*.proto)
# grpc's own reflection v1 contract (grpcio-reflection ships only v1alpha). Compiled as
# api/grpc/...: generated into the `api` package, beside the contracts, so that its module
# `api.grpc.reflection.v1` never shadows grpcio's own `grpc` package.
REFLECTION_V1 := grpc/reflection/v1/reflection.proto

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
PROTOC_PY := $(BIN)/python -m grpc_tools.protoc --python_out=. --grpc_python_out=. \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	--mypy_out=. --mypy_grpc_out=.
api/.built: $(PROTOS) proto/$(REFLECTION_V1) $(BIN)/.installed
	rm -rf api && mkdir -p api && touch api/__init__.py api/py.typed
	$(PROTOC_PY) -Iproto $(PROTOS)
	$(PROTOC_PY) -Iapi/grpc=proto/grpc proto/$(REFLECTION_V1)
	touch $@

.PHONY: proto
proto: api/.built ## generate the gRPC code into api/

# On the host, for host tools; `docker compose up` creates the same files itself when they
# are missing (the `pki` one-shot), and renews nothing: this target also renews expiring leaves.
.PHONY: certs
certs: ## the development CA, server and client certificates (certs/); keeps what is valid
	@certs/gen-certs.sh certs

videos/demo.mp4: $(BIN)/.installed soccer/demo_video.py
	$(BIN)/python -m soccer.demo_video --out $@

.PHONY: video
video: videos/demo.mp4 ## the synthetic demo match (videos/demo.mp4)

.PHONY: lint
lint: proto actionlint buf ## ruff, strict mypy, hadolint, actionlint, buf lint and buf breaking
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	scripts/buf-check.sh

BUF_VERSION := 1.75.0

# npm's @bufbuild/buf, which carries the release binary for this platform; its bin/buf is
# a small node launcher for it. Reinstalled only when the version differs.
.PHONY: buf
buf: ## buf (npm @bufbuild/buf, pinned) in .tools/bin, for make lint's contract checks
	@if [[ "$$(.tools/bin/buf --version 2>/dev/null)" != $(BUF_VERSION) ]]; then \
		rm -rf .tools/buf && mkdir -p .tools/bin \
		&& npm install --prefix .tools/buf --no-audit --no-fund --no-save --ignore-scripts \
			--loglevel=error @bufbuild/buf@$(BUF_VERSION) \
		&& ln -sf ../buf/node_modules/@bufbuild/buf/bin/buf .tools/bin/buf \
		&& echo "buf: installed .tools/bin/buf $$(.tools/bin/buf --version)"; fi

ACTIONLINT_VERSION := v1.7.12

# Offline: the workflow syntax, expressions, action inputs, and shellcheck on every run: step.
.PHONY: actionlint
actionlint: venv ## check .github/workflows (actionlint, pinned, built by scripts/go-tool.sh)
	scripts/go-tool.sh actionlint github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
	.tools/bin/actionlint -shellcheck $(BIN)/shellcheck

.PHONY: unit
unit: proto buf ## the unit and integration suite (servers on loopback, mutual TLS)
	$(BIN)/pytest

# The reference pages' generated parts; tests/test_docs.py fails when they are not current.
.PHONY: docs
docs: proto ## write docs/configuration.md's settings and docs/make-targets.md from the code
	$(BIN)/python -m docgen

.PHONY: k8s-check
k8s-check: venv ## render deploy/k8s (kustomize) and validate it offline; no cluster needed
	scripts/k8s-check.sh

# Not in make test: it takes minutes (and the local lab's first build about 15 more).
.PHONY: k8s-e2e
k8s-e2e: proto base-image ## the overlays on a real cluster (kubectl's, kind, else the local lab) and tests/k8s
	scripts/k8s-e2e.sh

# promtool runs inside the Prometheus image (Debian's 2.42, the one the stack runs), on the
# working tree's rules: no Prometheus on the host, and the same version that will load them.
.PHONY: rules-check
rules-check: base-image ## the Prometheus config, rules and alerts: promtool check and test rules
	$(COMPOSE) --profile observability build --quiet prometheus
	docker run --rm --network none -v "$(CURDIR)/deploy/prometheus:/etc/prometheus:ro" \
		-w /etc/prometheus/tests --entrypoint promtool grpcdemo-prometheus:latest \
		check config /etc/prometheus/prometheus.yml
	docker run --rm --network none -v "$(CURDIR)/deploy/prometheus:/etc/prometheus:ro" \
		-w /etc/prometheus/tests --entrypoint promtool grpcdemo-prometheus:latest \
		test rules rules_test.yml

.PHONY: test
test: lint unit k8s-check rules-check e2e ## everything CI runs: lint, unit suite, manifests, rules, end-to-end on compose

.PHONY: run-cheese run-movie run-soccer
run-cheese run-movie run-soccer: run-%: proto certs video ## run one server on the host (mutual TLS)
	$(BIN)/python -m $*

.PHONY: soak
soak: venv base-image ## 5 minutes of mixed load on the stack (SOAK_SECONDS)
	scripts/stack-test.sh -m soak tests/chaos -s

.PHONY: bench
bench: proto certs ## benchmarks against a seed-style baseline (minutes; never part of make test)
	scripts/go-tool.sh ghz github.com/bojand/ghz/cmd/ghz@v0.121.0
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: clean
clean: ## remove generated code, the virtualenv and caches (keeps certs and videos)
	rm -rf api $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# ---- Containers ---------------------------------------------------------------------------
# The compose file is the build graph and the stack; these only bootstrap and wrap it.
COMPOSE := docker compose
# The same version the grpcurl image builds (Dockerfile, ARG GRPCURL_VERSION).
GRPCURL_VERSION := v1.9.4

.PHONY: engine
engine: ## a running Docker engine with Compose v2 and buildx (installs them on Debian as root)
	@scripts/docker-engine.sh

# EXTRA_CA_DIR: the host's extra CAs, trusted while images build (default /usr/local/share/ca-certificates).
.PHONY: base-image
base-image: engine ## the pinned Debian base (pulled, or debootstrapped if no registry) and build/ca
	@scripts/base-image.sh

.PHONY: images
images: base-image ## every image, the tools' and observability's too (docker compose build)
	$(COMPOSE) --profile tools --profile observability build
	@docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'grpcdemo-*'

.PHONY: grpcurl
grpcurl: ## grpcurl (pinned, go install) in .tools/bin, for calling the stack from this machine
	scripts/go-tool.sh grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

.PHONY: up
up: base-image ## bootstrap an engine if needed, then docker compose up -d --wait
	$(COMPOSE) up -d --wait
	@scripts/how-to-call.sh

.PHONY: down
down: ## stop and remove the stack, its volumes and networks
	$(COMPOSE) --profile tools --profile observability down --volumes --remove-orphans

# The stack with Prometheus and Jaeger beside it, where the servers' and the client's traces go.
.PHONY: observability
observability: base-image ## the stack plus Prometheus (:9090, page /consoles/grpc.html) and Jaeger (:16686)
	$(COMPOSE) --profile observability up -d --wait
	@echo "Prometheus: http://127.0.0.1:$${PROMETHEUS_PORT:-9090}/consoles/grpc.html  Jaeger: http://127.0.0.1:$${JAEGER_PORT:-16686}/"

# The browser the page test drives (Debian's chromium; Playwright cannot download its own here).
.PHONY: browser
browser: ## Debian's chromium for the e2e page test (installs it on Debian as root)
	@scripts/browser.sh

.PHONY: logs
logs: ## follow the services' logs
	$(COMPOSE) logs -f

.PHONY: ps
ps: ## the services and their health
	$(COMPOSE) ps

.PHONY: e2e
e2e: venv base-image browser ## end to end over the compose network (from docker compose up, with observability), then down
	COMPOSE_PROFILES=observability scripts/stack-test.sh

# Certificates renewed under load (issue 23): 2-minute leaves for ten minutes (ROTATION_SECONDS),
# every server and the edge renewing without a restart or a failed call. Not in make test.
.PHONY: rotation-test
rotation-test: venv base-image ## 2-minute leaves renewed under load for 10 minutes (prints figures)
	CERT_LIFETIME=2m scripts/stack-test.sh -m rotation tests/rotation -s

# Rolling upgrades (issue 23, docs/operations.md): a service's replicas replaced one at a
# time, the new one healthy and in the edge's rotation before an old one drains.
.PHONY: rollout
rollout: ## replace SERVICE's replicas one at a time (cheese, movie, soccer; the edge stop-first)
	@[[ -n "$(SERVICE)" ]] || { echo "usage: make rollout SERVICE=cheese|movie|soccer|edge" >&2; exit 2; }
	scripts/rollout.sh $(SERVICE)

# Not in make test: each service rolled out at 1 and 3 replicas under load (about 17 minutes).
# tests/rollout/compose.yml sizes soccer's decoders to the test's viewers.
.PHONY: rollout-test
rollout-test: venv base-image browser ## rollouts under load, the viewers' frames and a refused rollout (prints figures)
	COMPOSE_FILE=docker-compose.yml:tests/rollout/compose.yml scripts/stack-test.sh -m rollout tests/rollout -s

# Faults under load on the stack; the movie catalogue is a scratch copy the test replaces.
.PHONY: chaos
chaos: venv base-image ## kill, stop and corrupt under load (prints recovery times)
	scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; chmod 755 "$$scratch"; \
	cp movie/data/movies.json "$$scratch/"; \
	MOVIE_DATA_DIR="$$scratch" scripts/stack-test.sh -m chaos tests/chaos -s

# Failures that close no connection (issue 17): a replica frozen or blackholed under load, a
# viewer whose replica freezes, a viewer on a slow or distant link (toxiproxy, pinned).
.PHONY: faults
faults: venv base-image ## frozen, blackholed and slow replicas under the client's load (prints figures)
	scripts/go-tool.sh toxiproxy github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0
	scripts/stack-test.sh -m faults tests/faults -s

# Floods of stalled streams and connections while legitimate clients keep going (issue 12).
# The legitimate clients have an identity of their own, `viewer`, which the run's policies
# (tests/stress/policies.py, a scratch folder) allow next to `client`; tests/stress/compose.yml
# points the servers at them.
.PHONY: stress
stress: venv base-image ## hostile floods with a legitimate viewer and caller alongside (prints figures)
	scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; chmod 755 "$$scratch"; \
	$(BIN)/python -m tests.stress.policies "$$scratch"; \
	STRESS_AUTHZ_DIR="$$scratch" COMPOSE_FILE=docker-compose.yml:tests/stress/compose.yml \
		scripts/stack-test.sh -m stress tests/stress -s
