#!/usr/bin/env bash
# distribute.sh — the `pki` one-shot of docker-compose.yml, run before any server starts.
#
# Usage: distribute.sh [PKI_DIR] [TLS_ROOT]   (defaults: /pki and /tls)
#
# 1. The PKI in PKI_DIR (the host's certs/, bind-mounted): when any of ca.crt and
#    {cheese,movie,soccer,client,edge,edge-server}.{crt,key} is missing, gen-certs.sh
#    creates what is missing (it never replaces an existing CA). When all are there, they are used exactly as they are:
#    that is how a user brings their own PKI. New files belong to PKI_DIR's owner, so host
#    tools (grpcurl, the client, make bench) can read them; keys are 0600.
# 2. Each service's own files go to its own volume, TLS_ROOT/<name>/: a server gets
#    server.crt, server.key and ca.crt; the client gets client.crt, client.key and ca.crt;
#    the edge gets edge.crt and edge.key (its identity towards the servers), server.crt and
#    server.key (edge-server's: what its clients see) and ca.crt.
#    Owned by the containers' user (10001), keys 0400. Nothing else: no other service's key,
#    never ca.key. Files are replaced by rename, so a running server reloads them whole.
#
# Re-run it (`docker compose run --rm pki`, or any `docker compose up`) after changing certs/.
set -euo pipefail

pki=${1:-/pki}
tls=${2:-/tls}
uid=10001
servers=(cheese movie soccer)

log() { printf 'pki: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -d $pki ]] || die "$pki is not a folder (mount the host's certs/ there)"

missing=()
for file in ca.crt {cheese,movie,soccer,client,edge,edge-server}.{crt,key}; do
  [[ -s $pki/$file ]] || missing+=("$file")
done
if ((${#missing[@]})); then
  log "missing in certs/: ${missing[*]}; creating them"
  marker=$(mktemp)
  gen-certs.sh "$pki"
  # What was just written belongs to whoever owns certs/, not to root.
  find "$pki" -maxdepth 1 -type f -newer "$marker" -exec chown "$(stat -c %u:%g "$pki")" {} +
  rm -f "$marker"
else
  log "using the PKI in certs/ as it is"
fi

# install_file SRC DEST MODE: write beside DEST, then rename over it; an unchanged file is
# left alone, so servers see no rotation where there is none.
install_file() {
  local src=$1 dest=$2 mode=$3
  if cmp -s "$src" "$dest"; then
    chown "$uid:$uid" "$dest" && chmod "$mode" "$dest"
    return
  fi
  cp "$src" "$dest.new"
  chown "$uid:$uid" "$dest.new"
  chmod "$mode" "$dest.new"
  mv -f "$dest.new" "$dest"
}

# hand_out NAME FILE_PREFIX: NAME's volume gets <FILE_PREFIX>.crt/.key and the CA.
hand_out() {
  local name=$1 prefix=$2 dir=$tls/$1
  [[ -d $dir ]] || die "$dir is not mounted"
  chown "$uid:$uid" "$dir"
  chmod 0500 "$dir"
  # Key before certificate, as gen-certs.sh writes them.
  install_file "$pki/ca.crt" "$dir/ca.crt" 0444
  install_file "$pki/$name.key" "$dir/$prefix.key" 0400
  install_file "$pki/$name.crt" "$dir/$prefix.crt" 0444
  log "$name: $prefix.crt, $prefix.key, ca.crt"
}

for name in "${servers[@]}"; do hand_out "$name" server; done
hand_out client client
hand_out edge edge
install_file "$pki/edge-server.key" "$tls/edge/server.key" 0400
install_file "$pki/edge-server.crt" "$tls/edge/server.crt" 0444
log "edge: server.crt, server.key (edge-server)"
