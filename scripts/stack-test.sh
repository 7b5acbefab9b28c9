#!/usr/bin/env bash
# Tests against the compose stack: started with the command users run, `docker compose up -d
# --wait`, then `pytest ARGS` (the e2e job by default; `make chaos` passes its own), then torn
# down (volumes included) whatever happens; the services' logs are printed on failure.
#
# In CI (CI set) the checkout must be a fresh clone: no PKI in certs/ and no videos/, so that
# `up` is proven to build and create everything a new user lacks. Elsewhere the existing PKI
# and videos are used as they are, as they would be for a user.
#
# COMPOSE_PROFILES=observability (make e2e sets it) adds Prometheus and Jaeger to the stack,
# which the servers' and the client's traces then reach.
set -euo pipefail
cd "$(dirname "$0")/.."

# One stack per engine: the project's name, its published ports and its images' tags are
# fixed, so a run from another checkout (or make k8s-e2e's build) waits for this one.
exec {lock_fd}>"${STACK_LOCK:-/tmp/grpcdemo-stack.lock}"
flock "$lock_fd"

# A --profile flag replaces COMPOSE_PROFILES, so ps, logs and down name every profile.
every_profile=(--profile tools --profile observability)

teardown() {
  local status=$?
  if ((status != 0)); then
    echo "stack-test failed (exit $status): the services' logs follow" >&2
    docker compose "${every_profile[@]}" ps -a >&2 || true
    docker compose "${every_profile[@]}" logs --no-color --timestamps >&2 || true
  fi
  docker compose "${every_profile[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || true
  exit "$status"
}
trap teardown EXIT

pki=$(compgen -G 'certs/*.crt' || true)
if [[ -n ${CI:-} && ( -n $pki || -e videos ) ]]; then
  echo "stack-test: CI must start from a fresh clone, but found: $pki $(ls -d videos 2>/dev/null)" >&2
  exit 1
fi
echo "stack-test: starting from ${pki:+an existing PKI}${pki:-no PKI}, $([[ -e videos/demo.mp4 ]] && echo "the existing demo video" || echo "no demo video")"

# `up` builds only images that do not exist yet: images of an older checkout, under the same
# tags, would be tested instead of this one. Built from the cache, this takes seconds.
docker compose build --quiet
started=$SECONDS
docker compose up -d --wait
echo "stack-test: docker compose up -d --wait: healthy in $((SECONDS - started)) s"
# The tests also run the tools' images (client, grpcurl, grpcui), which `up` does not build.
docker compose --profile tools build --quiet client grpcurl grpcui
# tests/faults holds a short case of `make faults` too, so that CI keeps it alive.
if (($#)); then .venv/bin/pytest "$@"; else .venv/bin/pytest -m "e2e and not rollout" tests/e2e tests/faults; fi
