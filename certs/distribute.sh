#!/usr/bin/env bash
# distribute.sh — the `pki` one-shot of docker-compose.yml, run before any server starts, and
# each round of the `renewer` (certs/renew.sh).
#
# Usage: distribute.sh [PKI_DIR] [TLS_ROOT]   (defaults: /pki and /tls)
#
# 1. The PKI in PKI_DIR (the host's certs/, bind-mounted). When it is gen-certs.sh's (it has
#    .generated-by-gen-certs, or a CA of that script's) or anything is missing, gen-certs.sh
#    creates what is missing and renews every leaf past half its lifetime (CERT_LIFETIME), so a
#    stack left off for days starts with valid leaves; it never replaces an existing CA. When
#    ca.crt and {cheese,movie,soccer,client,edge,edge-server}.{crt,key} are all there and are
#    not gen-certs.sh's, that is a PKI of your own: it is used exactly as it is and nothing
#    renews it (one log line says so, with its earliest expiry). New files belong to
#    PKI_DIR's owner, so host tools (grpcurl, the client, make bench) can read them.
# 2. Each service's own files go to its own volume, TLS_ROOT/<name>/: a server gets
#    server.crt, server.key and ca.crt; the client gets client.crt, client.key and ca.crt;
#    the edge gets edge.crt and edge.key (its identity towards the servers), server.crt and
#    server.key (edge-server's: what its clients see) and ca.crt. ca.crt there is what the
#    peer trusts: ca-bundle.crt when PKI_DIR has one (both CAs during a CA rotation).
#    Owned by the containers' user (10001), keys 0400. Nothing else: no other service's key,
#    never ca.key.
#
# Publishing is atomic per volume, as Kubernetes' atomic writer does it: a new folder
# ..<time>/ holds every file, the symlink ..data is renamed onto it, and each name
# (server.crt, ...) is a symlink through ..data. A reader sees the old set or the new one,
# never half of each once it has resolved ..data; the servers also check that a key matches
# its certificate. The rename of ..data is what Envoy's watched_directory reacts to.
# An unchanged set is not published again, so readers see no rotation where there is none.
set -euo pipefail

pki=${1:-/pki}
tls=${2:-/tls}
uid=10001
servers=(cheese movie soccer)

# One JSON object a line, as the servers log.
log() {
  local severity=$1 message=$2 extra=${3:-}
  message=${message//\\/\\\\}
  message=${message//\"/\\\"}
  printf '{"time": "%s", "severity": "%s", "logger": "pki", "message": "%s"%s}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$severity" "$message" "${extra:+, $extra}" >&2
}
die() { log ERROR "$*"; exit 1; }

[[ -d $pki ]] || die "$pki is not a folder (mount the host's certs/ there)"

required=(ca.crt {cheese,movie,soccer,client,edge,edge-server}.{crt,key})
missing=()
for file in "${required[@]}"; do
  [[ -s $pki/$file ]] || missing+=("$file")
done
ours=0
if [[ -e $pki/.generated-by-gen-certs ]] ||
  [[ -s $pki/ca.crt && "$(openssl x509 -noout -subject -nameopt multiline -in "$pki/ca.crt" 2>/dev/null)" == *"commonName"*"= grpc-compose dev CA"* ]]; then
  ours=1
fi

if ((${#missing[@]} || ours)); then
  ((${#missing[@]} == 0)) || log INFO "missing in certs/: ${missing[*]}; creating them"
  marker=$(mktemp)
  out=$(gen-certs.sh "$pki" 2>&1) || { printf '%s\n' "$out" >&2; die "gen-certs.sh failed"; }
  # Said when something was issued, not every round of the renewer.
  if [[ $out == *created* ]]; then
    [[ $out != *warning:* ]] || log WARNING "$(grep -m1 warning: <<<"$out")"
    log INFO "${out##*$'\n'}"
  fi
  # What was just written belongs to whoever owns certs/, not to root.
  find "$pki" -maxdepth 1 -type f -newer "$marker" -exec chown "$(stat -c %u:%g "$pki")" {} +
  rm -f "$marker"
elif [[ ${OWN_PKI_LOGGED:-0} != 1 ]]; then
  earliest="" earliest_file=""
  for file in "$pki"/*.crt; do
    end=$(date -u -d "$(openssl x509 -noout -enddate -in "$file" | cut -d= -f2)" +%s)
    if [[ -z $earliest ]] || ((end < earliest)); then earliest=$end earliest_file=${file##*/}; fi
  done
  log INFO "using your own PKI in certs/ as it is: nothing renews it" \
    "\"earliest_expiry\": \"$(date -u -d "@$earliest" +%Y-%m-%dT%H:%M:%SZ)\", \"earliest_expiring\": \"$earliest_file\""
fi

trust=$pki/ca.crt
[[ ! -s $pki/ca-bundle.crt ]] || trust=$pki/ca-bundle.crt

# publish NAME DEST=SRC...: NAME's volume gets every DEST (a name in it) from SRC, at once.
publish() {
  local name=$1 dir=$tls/$1 pair dest stage current changed=0
  shift
  [[ -d $dir ]] || die "$dir is not mounted"
  current=$dir/..data
  for pair in "$@"; do
    dest=${pair%%=*}
    if ! cmp -s "${pair#*=}" "$current/$dest" || [[ ! -L $dir/$dest ]]; then changed=1; fi
  done
  chown "$uid:$uid" "$dir"
  chmod 0500 "$dir"
  ((changed)) || return 0
  stage=$dir/..$(date -u +%Y_%m_%d_%H_%M_%S.%N)
  mkdir "$stage"
  for pair in "$@"; do
    dest=${pair%%=*}
    cp "${pair#*=}" "$stage/$dest"
    case $dest in *.key) chmod 0400 "$stage/$dest" ;; *) chmod 0444 "$stage/$dest" ;; esac
  done
  chown -R "$uid:$uid" "$stage"
  chmod 0500 "$stage"
  # The one rename readers may see: ..data from the old set to the new one.
  ln -sfn "${stage##*/}" "$dir/..data_tmp"
  mv -Tf "$dir/..data_tmp" "$dir/..data"
  for pair in "$@"; do
    dest=${pair%%=*}
    if [[ "$(readlink "$dir/$dest" 2>/dev/null)" != "..data/$dest" ]]; then
      ln -sfn "..data/$dest" "$dir/.$dest.tmp"
      mv -Tf "$dir/.$dest.tmp" "$dir/$dest"
    fi
  done
  find "$dir" -mindepth 1 -maxdepth 1 -type d -name '..*' ! -name "${stage##*/}" -exec rm -rf {} +
  log INFO "$name: published $(printf '%s ' "${@%%=*}" | sed 's/ $//')" \
    "\"serial\": \"$(openssl x509 -noout -serial -in "$stage/${2%%=*}" | cut -d= -f2)\""
}

for name in "${servers[@]}"; do
  publish "$name" "ca.crt=$trust" "server.crt=$pki/$name.crt" "server.key=$pki/$name.key"
done
publish client "ca.crt=$trust" "client.crt=$pki/client.crt" "client.key=$pki/client.key"
publish edge "ca.crt=$trust" "edge.crt=$pki/edge.crt" "edge.key=$pki/edge.key" \
  "server.crt=$pki/edge-server.crt" "server.key=$pki/edge-server.key"
