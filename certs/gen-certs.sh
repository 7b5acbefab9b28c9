#!/usr/bin/env bash
# gen-certs.sh — the development PKI for mutual TLS between the services and their clients.
#
# Usage: certs/gen-certs.sh [OUT_DIR] [--force-ca] [--days N] [--key-mode MODE] [--extra-sans LIST]
#
#   OUT_DIR           where to write (default: the directory holding this script, i.e. certs/)
#   --force-ca        replace an existing CA (env FORCE_CA=1); every leaf is then reissued
#   --days N          leaf validity in days (env DAYS, default 825; the CA gets 3650)
#   --key-mode MODE   chmod for the leaf keys (env KEY_MODE, default 0600)
#   --extra-sans LIST extra SANs for every server cert (env EXTRA_SANS), e.g. "DNS:foo,IP:10.0.0.1"
#
# Writes ca.crt/ca.key, cheese/movie/soccer .crt/.key (server: CN and DNS SAN = the service name,
# plus localhost, 127.0.0.1 and ::1; serverAuth only, so a server's key cannot act as a client),
# edge-server.crt/.key (the same for the edge, which the host's clients reach as localhost),
# and the client identities, clientAuth only: client.crt/.key (calls the services),
# monitor.crt/.key (asks health only) and edge.crt/.key (the edge's own identity towards the
# servers: it asks health, and forwards the calls of the clients it verified). Each service's
# authz.json names them. Keys are EC P-256.
#
# Re-running is safe: the CA is never replaced without --force-ca, because every issued cert and
# every copy of ca.crt handed out would silently stop verifying. A leaf is kept while it verifies
# against the current CA for its purpose and for no other (a server cert from an older run, which
# also had clientAuth, is reissued), matches its key, covers the wanted SANs and is valid for
# another 30 days; anything else is reissued. Files are written to a temp dir and renamed, so an
# interrupted run leaves no half-written PEM behind.
#
# Key permissions: keys are 0600, owned by whoever runs this. The containers run as uid 10001 and
# get the keys bind-mounted read-only, so they cannot read a 0600 key owned by you. Pick one:
#   --key-mode 0644                       simplest; only for throwaway dev keys on a private host
#   --key-mode 0640 + chgrp <gid> *.key   group-readable, if the container runs with that gid
#   sudo chown 10001 certs/*.key          keeps 0600 (rootless Docker/Podman map uids differently)
# ca.key always stays 0600: it signs, and no container needs it.
set -euo pipefail

die() { printf 'gen-certs: %s\n' "$*" >&2; exit 1; }

out_dir=""
force_ca="${FORCE_CA:-0}"
days="${DAYS:-825}"
key_mode="${KEY_MODE:-0600}"
extra_sans="${EXTRA_SANS:-}"

while (($#)); do
  case "$1" in
    --force-ca) force_ca=1 ;;
    --days) (($# >= 2)) || die "--days needs a value"; days="$2"; shift ;;
    --days=*) days="${1#*=}" ;;
    --key-mode) (($# >= 2)) || die "--key-mode needs a value"; key_mode="$2"; shift ;;
    --key-mode=*) key_mode="${1#*=}" ;;
    --extra-sans) (($# >= 2)) || die "--extra-sans needs a value"; extra_sans="$2"; shift ;;
    --extra-sans=*) extra_sans="${1#*=}" ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) [[ -z "$out_dir" ]] || die "only one OUT_DIR allowed"; out_dir="$1" ;;
  esac
  shift
done

[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer, got '$days'"
[[ "$key_mode" =~ ^0?[0-7]{3}$ ]] || die "--key-mode must be an octal mode like 0600, got '$key_mode'"
[[ "$force_ca" =~ ^(0|1)$ ]] || die "FORCE_CA must be 0 or 1"
command -v openssl >/dev/null || die "openssl not found"

extra_sans="${extra_sans//[[:space:]]/}"
extra_sans="${extra_sans#,}"
extra_sans="${extra_sans%,}"
if [[ -n "$extra_sans" ]]; then
  IFS=, read -ra _sans <<<"$extra_sans"
  for s in "${_sans[@]}"; do
    [[ "$s" =~ ^(DNS:[A-Za-z0-9*.-]+|IP:[0-9A-Fa-f:.]+)$ ]] || die "bad extra SAN '$s' (want DNS:name or IP:addr)"
  done
fi

out_dir="${out_dir:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
umask 077
tmp="$(mktemp -d "$out_dir/.gen-certs.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# openssl is chatty on stderr even when it succeeds: show its output only when it fails.
run() {
  local log
  log="$("$@" 2>&1)" || { printf '%s\n' "$log" >&2; die "failed: $*"; }
}

new_key() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
key_matches() {
  [[ "$(openssl x509 -noout -pubkey -in "$1" 2>/dev/null)" == \
    "$(openssl pkey -pubout -in "$2" 2>/dev/null)" ]]
}

cat >"$tmp/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = grpc-compose dev CA
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

created=() kept=()

ca_crt="$out_dir/ca.crt" ca_key="$out_dir/ca.key"
if [[ "$force_ca" == 1 || (! -e "$ca_crt" && ! -e "$ca_key") ]]; then
  new_key "$tmp/ca.key"
  run openssl req -x509 -new -config "$tmp/openssl.cnf" -extensions v3_ca -key "$tmp/ca.key" \
    -days 3650 -sha256 -set_serial "0x$(openssl rand -hex 16)" -out "$tmp/ca.crt"
  chmod 0600 "$tmp/ca.key"
  chmod 0644 "$tmp/ca.crt"
  # Key first: a crash between the two renames leaves a mismatch that the next run reports.
  mv -f "$tmp/ca.key" "$ca_key"
  mv -f "$tmp/ca.crt" "$ca_crt"
  created+=(ca)
  reissue_all=1
else
  [[ -e "$ca_crt" && -e "$ca_key" ]] || die "only one of ca.crt/ca.key exists in $out_dir; rerun with --force-ca"
  key_matches "$ca_crt" "$ca_key" || die "ca.key does not match ca.crt in $out_dir; rerun with --force-ca"
  kept+=(ca)
  reissue_all=0
fi

# leaf NAME PURPOSE EKU SANS — keep NAME.crt/.key if still good, otherwise issue a fresh pair.
leaf() {
  local name="$1" purpose="$2" eku="$3" sans="$4" crt="$out_dir/$1.crt" key="$out_dir/$1.key"
  if ((reissue_all == 0)) && [[ -s "$crt" && -s "$key" ]] && leaf_ok "$crt" "$key" "$purpose" "$sans"; then
    chmod "$key_mode" "$key"
    kept+=("$name")
    return
  fi
  cat >"$tmp/$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $eku
subjectAltName = $sans
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  new_key "$tmp/$name.key"
  run openssl req -new -config "$tmp/openssl.cnf" -key "$tmp/$name.key" -subj "/CN=$name" \
    -out "$tmp/$name.csr"
  run openssl x509 -req -in "$tmp/$name.csr" -CA "$ca_crt" -CAkey "$ca_key" -days "$days" -sha256 \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$tmp/$name.ext" -out "$tmp/$name.crt"
  chmod "$key_mode" "$tmp/$name.key"
  chmod 0644 "$tmp/$name.crt"
  mv -f "$tmp/$name.key" "$key"
  mv -f "$tmp/$name.crt" "$crt"
  created+=("$name")
}

leaf_ok() {
  local crt="$1" key="$2" purpose="$3" sans="$4" san
  openssl verify -CAfile "$ca_crt" -purpose "$purpose" "$crt" >/dev/null 2>&1 || return 1
  local other=sslclient
  [[ "$purpose" == sslclient ]] && other=sslserver
  ! openssl verify -CAfile "$ca_crt" -purpose "$other" "$crt" >/dev/null 2>&1 || return 1
  openssl x509 -noout -checkend $((30 * 86400)) -in "$crt" >/dev/null 2>&1 || return 1
  key_matches "$crt" "$key" || return 1
  IFS=, read -ra _want <<<"$sans"
  for san in "${_want[@]}"; do
    case "$san" in
      DNS:*) [[ "$(openssl x509 -noout -in "$crt" -checkhost "${san#DNS:}" 2>/dev/null)" == *"does match"* ]] ;;
      IP:*) [[ "$(openssl x509 -noout -in "$crt" -checkip "${san#IP:}" 2>/dev/null)" == *"does match"* ]] ;;
    esac || return 1
  done
}

for svc in cheese movie soccer; do
  leaf "$svc" sslserver serverAuth "DNS:$svc,DNS:localhost,IP:127.0.0.1,IP:::1${extra_sans:+,$extra_sans}"
done
# What the edge shows its clients (the host's, on the published ports); `edge`, below, is what
# it shows the servers.
leaf edge-server sslserver serverAuth "DNS:edge,DNS:localhost,IP:127.0.0.1,IP:::1${extra_sans:+,$extra_sans}"
leaf client sslclient clientAuth "DNS:client"
leaf monitor sslclient clientAuth "DNS:monitor"
leaf edge sslclient clientAuth "DNS:edge"

summary="gen-certs: $out_dir:"
((${#created[@]})) && summary+=" created ${created[*]}"
((${#created[@]} && ${#kept[@]})) && summary+=";"
((${#kept[@]})) && summary+=" kept ${kept[*]}"
printf '%s (leaf keys %s)\n' "$summary" "$key_mode"
