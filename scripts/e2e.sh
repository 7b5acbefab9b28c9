#!/usr/bin/env bash
# The end-to-end job: the compose stack up and healthy, the e2e tests over its network, and
# the stack torn down (volumes included) whatever happens; the logs are printed on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

teardown() {
  local status=$?
  if ((status != 0)); then
    echo "e2e failed (exit $status): the services' logs follow" >&2
    docker compose --profile tools ps -a >&2 || true
    docker compose logs --no-color --timestamps >&2 || true
  fi
  docker compose --profile tools down --volumes --remove-orphans >/dev/null 2>&1 || true
  exit "$status"
}
trap teardown EXIT

started=$SECONDS
docker compose up -d --wait
echo "e2e: stack healthy in $((SECONDS - started)) s"
.venv/bin/pytest -m e2e tests/e2e "$@"
