# Every image of the stack, one target each; docker-compose.yml names the target per service,
# so `docker compose build` (or `up`) builds the whole graph by itself, shared stages once.
#
# Targets:
#   cheese, movie     a service's code on `base`: grpcio and protobuf, no OpenCV or NumPy
#   soccer, client    on `video-base`: base + NumPy and OpenCV
#   edge              HAProxy, the host's one entry: TCP to every replica, TLS passes through
#   pki               the one-shot that creates the development PKI and hands each service its
#                     own key (certs/distribute.sh); it carries the scripts, never a key
#   grpcurl           grpcurl, built from source at a pinned version, for the compose network
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
# Dependencies before source, for cache hits: these layers change only with requirements.
COPY requirements/ /src/requirements/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet -r /src/requirements/runtime.txt
# Video libraries go to their own folder so that only video-base carries them.
RUN /opt/venv/bin/pip install --quiet --no-deps --target /opt/video -r /src/requirements/video.txt
RUN python3 -m venv /opt/tools \
 && /opt/tools/bin/pip install --quiet "$(grep -E '^grpcio-tools==' /src/requirements/dev.txt)"
COPY proto/ /src/proto/
RUN mkdir -p /app/api && touch /app/api/__init__.py /app/api/py.typed \
 && /opt/tools/bin/python -m grpc_tools.protoc -I/src/proto --python_out=/app \
      --grpc_python_out=/app /src/proto/api/*.proto

FROM python AS base
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app app
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

FROM os AS edge
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY deploy/edge/haproxy.cfg /usr/local/etc/haproxy/haproxy.cfg
USER 10001:10001
# -W: master-worker, so SIGTERM (docker stop) ends it cleanly; -db: stay in the foreground.
ENTRYPOINT ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]

# Runs as root on purpose, with only the capabilities it needs (docker-compose.yml): it
# writes into the host's certs/ whoever owns it, and chowns each service's copy to 10001.
FROM os AS pki
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY certs/gen-certs.sh certs/distribute.sh /usr/local/bin/
ENTRYPOINT ["distribute.sh"]

# grpcurl v1.9.4 needs Go 1.25: bookworm-backports' Go 1.23 fetches that toolchain from the
# Go module proxy (GOTOOLCHAIN), then builds the pinned release statically.
FROM os AS grpcurl-build
RUN echo 'deb http://deb.debian.org/debian bookworm-backports main' \
      > /etc/apt/sources.list.d/backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends -t bookworm-backports golang-1.23-go ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY build/ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates
ARG GRPCURL_VERSION=v1.9.4
RUN GOTOOLCHAIN=go1.25.0 CGO_ENABLED=0 GOBIN=/out /usr/lib/go-1.23/bin/go install -trimpath \
      -ldflags "-s -w -X main.version=${GRPCURL_VERSION}" \
      "github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION}" \
 && rm -rf /root/go /root/.cache

FROM os AS grpcurl
COPY --from=grpcurl-build /out/grpcurl /usr/local/bin/grpcurl
USER 10001:10001
ENTRYPOINT ["grpcurl"]
