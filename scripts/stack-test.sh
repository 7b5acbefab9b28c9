#!/usr/bin/env bash
# Tests against the compose stack: up and healthy, then `pytest ARGS` (the e2e job by default;
# `make chaos` passes its own), then torn down (volumes included) whatever happens; the
# services' logs are printed on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

teardown() {
  local status=$?
  if ((status != 0)); then
    echo "stack-test failed (exit $status): the services' logs follow" >&2
    docker compose --profile tools ps -a >&2 || true
    docker compose logs --no-color --timestamps >&2 || true
  fi
  docker compose --profile tools down --volumes --remove-orphans >/dev/null 2>&1 || true
  exit "$status"
}
trap teardown EXIT

started=$SECONDS
docker compose up -d --wait
echo "stack-test: stack healthy in $((SECONDS - started)) s"
if (($#)); then .venv/bin/pytest "$@"; else .venv/bin/pytest -m e2e tests/e2e; fi
