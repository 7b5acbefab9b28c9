#!/usr/bin/env bash
# make k8s-e2e: the overlays deployed on a real Kubernetes cluster, and tests/k8s run there.
#
# The cluster: the one kubectl reaches (KUBECONFIG or the current context: yours, kind, a
# CI's) when one answers; otherwise the local lab of scripts/k8s-lab (root; built once, about
# 15 min on 2 cores, then cached in K8S_LAB, default ~/.cache/k8s-lab; up in about 20 s and
# stopped again afterwards unless K8S_E2E_KEEP=1). K8S_E2E_CLUSTER=lab or =current decides.
#
# The images are this checkout's: built with docker compose and saved to one archive while
# holding the shared stack lock (other checkouts build the same tags), then given to the
# cluster the way it takes them: `kind load image-archive` for a kind-* context, an import
# for the lab. Any other cluster must pull them: point the overlays at your registry first
# (deploy/k8s/README.md).
#
# PYTEST_ARGS: more pytest arguments, e.g. PYTEST_ARGS='-k drain'.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'k8s-e2e: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

started=$SECONDS
lab=scripts/k8s-lab
images=(grpcdemo-cheese:latest grpcdemo-movie:latest grpcdemo-soccer:latest grpcdemo-client:latest)
work=${K8S_E2E_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/grpcdemo-k8s-e2e}
lock=${STACK_LOCK:-/tmp/grpcdemo-stack.lock}
mkdir -p "$work"

cluster=${K8S_E2E_CLUSTER:-auto}
if [[ $cluster == auto ]]; then
  cluster=lab
  if command -v kubectl >/dev/null && kubectl version --request-timeout=10s >/dev/null 2>&1; then
    cluster=current
  fi
fi
[[ $cluster == lab || $cluster == current ]] || die "K8S_E2E_CLUSTER is lab, current or auto"
if [[ $cluster == lab && $(id -u) -ne 0 ]]; then
  die "no cluster answers kubectl, and the local lab needs root (namespaces, mounts, containerd)"
fi
if [[ $cluster == lab ]]; then log "cluster: the local lab ($lab)"; else log "cluster: $(kubectl config current-context)"; fi

certs/gen-certs.sh certs  # the Secrets come from these; keeps what is valid

t=$SECONDS
# shellcheck disable=SC2016 # expanded by the inner shell
flock "$lock" bash -c '
  docker compose build --quiet cheese movie soccer
  docker compose --profile tools build --quiet client
  docker save --output "$0" "$@"' "$work/images.tar" "${images[@]}"
log "images built and saved in $((SECONDS - t)) s ($(du -m "$work/images.tar" | cut -f1) MB)"

run=()
if [[ $cluster == lab ]]; then
  t=$SECONDS
  "$lab/build.sh" >"$work/lab-build.log" 2>&1 || { tail -n 30 "$work/lab-build.log" >&2; die "lab build failed"; }
  log "lab built (or found built) in $((SECONDS - t)) s"
  if ! "$lab/running.sh"; then
    t=$SECONDS
    "$lab/up.sh" >"$work/lab-up.log" 2>&1 || { tail -n 30 "$work/lab-up.log" >&2; die "lab up failed"; }
    log "lab up in $((SECONDS - t)) s"
    if [[ ${K8S_E2E_KEEP:-0} != 1 ]]; then
      trap 't=$SECONDS; "$lab/down.sh" >/dev/null 2>&1; log "lab down in $((SECONDS - t)) s"' EXIT
    fi
  fi
  t=$SECONDS
  "$lab/load.sh" "$work/images.tar"
  log "images imported in $((SECONDS - t)) s"
  # shellcheck source=k8s-lab/env.sh
  . "$lab/env.sh"
  # The lab's API server and pods live in its network namespace: so do kubectl and the suite.
  run=(nsenter "--net=/run/netns/$NETNS" env "KUBECONFIG=$KC/super-admin.conf" "PATH=$B:$PATH")
else
  context=$(kubectl config current-context)
  if [[ $context == kind-* ]]; then
    t=$SECONDS
    kind load image-archive "$work/images.tar" --name "${context#kind-}"
    log "images loaded into kind in $((SECONDS - t)) s"
  else
    log "context $context: its nodes must be able to pull ${images[*]}"
  fi
fi

t=$SECONDS
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of words
"${run[@]}" .venv/bin/pytest -p no:cacheprovider -m k8s tests/k8s -s ${PYTEST_ARGS:-}
log "suite passed in $((SECONDS - t)) s; make k8s-e2e took $((SECONDS - started)) s"
