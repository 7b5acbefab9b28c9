#!/usr/bin/env bash
# renew.sh — the compose `renewer`: keeps every leaf valid without a person.
#
# Usage: renew.sh [PKI_DIR] [TLS_ROOT]     run for ever (defaults: /pki and /tls)
#        renew.sh --healthy [TLS_ROOT]     the healthcheck: exit 0 while renewing works
#
# Every RENEW_CHECK_SECONDS (default: a twentieth of CERT_LIFETIME, from 5 s to 5 min) it runs
# distribute.sh, which has gen-certs.sh reissue each leaf past half its lifetime from the CA
# in PKI_DIR and publishes the new files atomically into each service's volume; every server
# and the edge then reload them without a restart. With a PKI of your own (no
# .generated-by-gen-certs) it renews nothing and says so once.
#
# Healthy means: the last round succeeded within three intervals, and every certificate
# published in TLS_ROOT is still valid for another interval.
set -euo pipefail

heartbeat=/tmp/renewer.ok
seconds() {
  [[ "${CERT_LIFETIME:-24h}" =~ ^([1-9][0-9]*)(m|h|d)$ ]] || { echo 3600; return; }
  local n=${BASH_REMATCH[1]}
  case "${BASH_REMATCH[2]}" in m) echo $((n * 60)) ;; h) echo $((n * 3600)) ;; d) echo $((n * 86400)) ;; esac
}
interval=${RENEW_CHECK_SECONDS:-$(($(seconds) / 20))}
((interval >= 5)) || interval=5
((interval <= 300)) || interval=300

if [[ ${1:-} == --healthy ]]; then
  tls=${2:-/tls}
  [[ -e $heartbeat ]] || { echo "no round has succeeded yet"; exit 1; }
  age=$(($(date +%s) - $(stat -c %Y "$heartbeat")))
  ((age <= 3 * interval + 30)) || { echo "last good round ${age}s ago"; exit 1; }
  for crt in "$tls"/*/..data/*.crt; do
    openssl x509 -noout -checkend "$interval" -in "$crt" >/dev/null ||
      { echo "$crt expires within ${interval}s"; exit 1; }
  done
  exit 0
fi

pki=${1:-/pki}
tls=${2:-/tls}
# SIGTERM (docker stop) ends the wait at once, not after the interval.
trap 'exit 0' TERM INT
printf '{"time": "%s", "severity": "INFO", "logger": "renewer", "message": "renewing leaves", "lifetime": "%s", "check_seconds": %d}\n' \
  "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "${CERT_LIFETIME:-24h}" "$interval" >&2
export OWN_PKI_LOGGED=0
while true; do
  if distribute.sh "$pki" "$tls"; then
    touch "$heartbeat"
    # A PKI of your own is announced once, not every round.
    export OWN_PKI_LOGGED=1
  fi
  sleep "$interval" &
  wait $! || true
done
