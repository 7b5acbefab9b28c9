#!/usr/bin/env bash
# Create or update the TLS Secrets that deploy/k8s mounts, from the certificates of
# `make certs`, and the namespace they live in:
#   cheese-tls, movie-tls, soccer-tls: server.crt, server.key, ca.crt
#   client-tls:                        client.crt, client.key, ca.crt
#
#   scripts/k8s-secrets.sh [-n NAMESPACE] [--certs DIR] [--context CONTEXT]
#
# The keys go straight from certs/ to the API server through a pipe: no file is written.
# The CA's own key (ca.key) never leaves certs/.
set -euo pipefail

log() { printf 'k8s-secrets: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
namespace=grpcdemo  # the overlays' namespace
certs=$repo/certs
kubectl=(kubectl)

while [[ $# -gt 0 ]]; do
  case $1 in
    -n | --namespace) namespace=${2:?}; shift 2 ;;
    --certs) certs=${2:?}; shift 2 ;;
    --context) kubectl+=(--context "${2:?}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

command -v kubectl >/dev/null || die "kubectl not found"
for f in ca.crt {cheese,movie,soccer,client}.{crt,key}; do
  [[ -r $certs/$f ]] || die "$certs/$f missing: run make certs"
done

# apply, not create: running it again (say after make certs renewed a certificate) updates
# the Secrets. Server-side, so that no last-applied annotation keeps a second copy of each key.
apply() { "${kubectl[@]}" apply --server-side --field-manager=k8s-secrets -f - >/dev/null; }

"${kubectl[@]}" create namespace "$namespace" --dry-run=client -o yaml | apply

for svc in cheese movie soccer; do
  "${kubectl[@]}" --namespace "$namespace" create secret generic "$svc-tls" \
    --from-file=server.crt="$certs/$svc.crt" \
    --from-file=server.key="$certs/$svc.key" \
    --from-file=ca.crt="$certs/ca.crt" \
    --dry-run=client -o yaml | apply
  log "secret $namespace/$svc-tls"
done

"${kubectl[@]}" --namespace "$namespace" create secret generic client-tls \
  --from-file=client.crt="$certs/client.crt" \
  --from-file=client.key="$certs/client.key" \
  --from-file=ca.crt="$certs/ca.crt" \
  --dry-run=client -o yaml | apply
log "secret $namespace/client-tls"

# Renewed certificates need no restart: the kubelet updates the mounted files within about
# a minute and the servers load them for new connections (grpckit/transport/tls.py).
log "done"
