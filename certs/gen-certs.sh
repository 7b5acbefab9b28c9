#!/usr/bin/env bash
# gen-certs.sh — the development PKI for mutual TLS between the services and their clients.
#
# Usage: certs/gen-certs.sh [OUT_DIR] [--lifetime DURATION] [--renew-all] [--force-ca]
#                           [--rotate-ca begin|switch|finish] [--key-mode MODE] [--extra-sans LIST]
#
#   OUT_DIR           where to write (default: the directory holding this script, i.e. certs/)
#   --lifetime D      leaf lifetime (env CERT_LIFETIME, default 24h): <n>m, <n>h or <n>d, from
#                     1h to 825d; under 1 h (down to 1m) is accepted with a warning, for tests
#   --days N          the same as --lifetime Nd
#   --renew-all       reissue every leaf now, whatever its age (env FORCE_RENEW=1)
#   --force-ca        replace an existing CA (env FORCE_CA=1); every leaf is then reissued
#   --rotate-ca STEP  move to a new CA with an overlap in which both are trusted (below)
#   --key-mode MODE   chmod for the leaf keys (env KEY_MODE, default 0600)
#   --extra-sans LIST extra SANs for every server cert (env EXTRA_SANS), e.g. "DNS:foo,IP:10.0.0.1"
#
# Writes ca.crt/ca.key (the CA, 10 years), ca-bundle.crt (every CA to trust: ca.crt alone, or
# two during a rotation), cheese/movie/soccer .crt/.key (server: CN and DNS SAN = the service
# name, plus localhost, 127.0.0.1 and ::1; serverAuth only, so a server's key cannot act as a
# client), edge-server.crt/.key (the same for the edge, which the host's clients reach as
# localhost), and the client identities, clientAuth only: client.crt/.key (calls the services),
# monitor.crt/.key (asks health only) and edge.crt/.key (the edge's own identity towards the
# servers: it asks health, and forwards the calls of the clients it verified). Each service's
# authz.json names them. Keys are EC P-256; leaves are issued with `openssl ca`.
#
# Renewal: a leaf is kept while it verifies against the current CA for its purpose and for no
# other (a server cert from an older run, which also had clientAuth, is reissued), matches its
# key, covers the wanted SANs, lives no longer than the lifetime asked for, and has used less
# than half of its lifetime; anything else is reissued (with a new key). The compose
# `renewer` (certs/renew.sh) runs this every few minutes, so leaves are renewed at about half
# their lifetime without a person. The file .generated-by-gen-certs marks OUT_DIR as this
# script's: certs/distribute.sh uses a PKI without it (your own) as it is and renews nothing.
#
# The CA is never replaced without --force-ca, because every issued cert and every copy of
# ca.crt handed out would silently stop verifying. To replace it without failing a call:
#   --rotate-ca begin   a new CA (ca-next.*); ca-bundle.crt trusts both. Hand it out and wait
#                       until every peer has reloaded it (the renewer does it within minutes).
#   --rotate-ca switch  the new CA becomes ca.crt/ca.key (the old one is kept as ca-prev.crt,
#                       still trusted, its key deleted) and every leaf is reissued from it.
#   --rotate-ca finish  once every peer shows a new leaf: ca-prev.crt goes, ca-bundle.crt
#                       trusts the new CA alone.
#
# Files are written to a temp dir and renamed, key before certificate, so an interrupted run
# leaves no half-written PEM behind; readers check that a key matches its certificate.
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
force_renew="${FORCE_RENEW:-0}"
lifetime="${CERT_LIFETIME:-24h}"
[[ -n "${DAYS:-}" ]] && lifetime="${DAYS}d"
key_mode="${KEY_MODE:-0600}"
extra_sans="${EXTRA_SANS:-}"
rotate=""

while (($#)); do
  case "$1" in
    --force-ca) force_ca=1 ;;
    --renew-all) force_renew=1 ;;
    --lifetime) (($# >= 2)) || die "--lifetime needs a value"; lifetime="$2"; shift ;;
    --lifetime=*) lifetime="${1#*=}" ;;
    --days) (($# >= 2)) || die "--days needs a value"; lifetime="$2d"; shift ;;
    --days=*) lifetime="${1#*=}d" ;;
    --rotate-ca) (($# >= 2)) || die "--rotate-ca needs begin, switch or finish"; rotate="$2"; shift ;;
    --rotate-ca=*) rotate="${1#*=}" ;;
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

# lifetime_seconds DURATION: <n>m, <n>h or <n>d in seconds; the bounds are checked below.
lifetime_seconds() {
  [[ "$1" =~ ^([1-9][0-9]{0,6})(m|h|d)$ ]] || return 1
  local n=${BASH_REMATCH[1]}
  case "${BASH_REMATCH[2]}" in
    m) echo $((n * 60)) ;;
    h) echo $((n * 3600)) ;;
    d) echo $((n * 86400)) ;;
  esac
}
lifetime_s=$(lifetime_seconds "$lifetime") ||
  die "CERT_LIFETIME must be <n>m, <n>h or <n>d (e.g. 24h, 90m, 30d), got '$lifetime'"
# 825 days: the longest a publicly trusted TLS leaf could live (CA/Browser Forum), and what
# clients such as Apple's accept at most even from a private CA.
((lifetime_s <= 825 * 86400)) || die "CERT_LIFETIME $lifetime is over 825 days"
if ((lifetime_s < 3600)); then
  printf 'gen-certs: warning: CERT_LIFETIME %s is under 1 h: for tests only, a renewer must run all the time\n' \
    "$lifetime" >&2
fi
[[ "$key_mode" =~ ^0?[0-7]{3}$ ]] || die "--key-mode must be an octal mode like 0600, got '$key_mode'"
[[ "$force_ca" =~ ^(0|1)$ ]] || die "FORCE_CA must be 0 or 1"
[[ "$force_renew" =~ ^(0|1)$ ]] || die "FORCE_RENEW must be 0 or 1"
[[ "$rotate" =~ ^(|begin|switch|finish)$ ]] || die "--rotate-ca takes begin, switch or finish, got '$rotate'"
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
# epoch CERT startdate|enddate: that date of CERT in seconds since the epoch.
epoch() {
  local line
  line=$(openssl x509 -noout "-$2" -in "$1" 2>/dev/null) || return 1
  date -u -d "${line#*=}" +%s
}

# The CAs' subject starts with this; a CA that has it is this script's even without the
# marker (a PKI made before the marker existed), so it is renewed like any other.
ca_cn="grpc-compose dev CA"
marker="$out_dir/.generated-by-gen-certs"

cat >"$tmp/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $ca_cn
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
# openssl ca: a throwaway database per run; the serial is random (-rand_serial), the
# extensions each leaf's own (-extfile), the subject the request's.
[ca]
default_ca = dev_ca
[dev_ca]
database = $tmp/index.txt
new_certs_dir = $tmp
serial = $tmp/serial
unique_subject = no
default_md = sha256
policy = any_cn
email_in_dn = no
[any_cn]
commonName = supplied
EOF
: >"$tmp/index.txt"

created=() kept=()

# new_ca KEY CRT: a fresh CA, named with the time so that two CAs trusted together during a
# rotation never share a subject.
new_ca() {
  new_key "$tmp/new-ca.key"
  run openssl req -x509 -new -config "$tmp/openssl.cnf" -extensions v3_ca -key "$tmp/new-ca.key" \
    -subj "/CN=$ca_cn $(date -u +%Y-%m-%dT%H:%M:%SZ) $(openssl rand -hex 4)" \
    -days 3650 -sha256 -set_serial "0x$(openssl rand -hex 16)" -out "$tmp/new-ca.crt"
  chmod 0600 "$tmp/new-ca.key"
  chmod 0644 "$tmp/new-ca.crt"
  # Key first: a crash between the two renames leaves a mismatch that the next run reports.
  mv -f "$tmp/new-ca.key" "$1"
  mv -f "$tmp/new-ca.crt" "$2"
}

ca_crt="$out_dir/ca.crt" ca_key="$out_dir/ca.key"
next_crt="$out_dir/ca-next.crt" next_key="$out_dir/ca-next.key" prev_crt="$out_dir/ca-prev.crt"
if [[ "$force_ca" == 1 || (! -e "$ca_crt" && ! -e "$ca_key") ]]; then
  [[ -z "$rotate" ]] || die "--rotate-ca needs an existing CA"
  rm -f "$next_crt" "$next_key" "$prev_crt"
  new_ca "$ca_key" "$ca_crt"
  created+=(ca)
else
  [[ -e "$ca_crt" && -e "$ca_key" ]] || die "only one of ca.crt/ca.key exists in $out_dir; rerun with --force-ca"
  key_matches "$ca_crt" "$ca_key" || die "ca.key does not match ca.crt in $out_dir; rerun with --force-ca"
  kept+=(ca)
fi
if [[ ! -e "$marker" ]]; then
  [[ "$(openssl x509 -noout -subject -nameopt multiline -in "$ca_crt")" == *"commonName"*"= $ca_cn"* ]] ||
    die "$ca_crt is not this script's CA (no $marker): a PKI of your own is used as it is, never renewed"
  printf 'Made by certs/gen-certs.sh, which renews the leaves here (see docs/certificates.md).\n' >"$marker"
  chmod 0644 "$marker"
fi

case "$rotate" in
  begin)
    [[ ! -e "$next_crt" && ! -e "$prev_crt" ]] || die "a CA rotation is already under way (ca-next.crt or ca-prev.crt exists)"
    new_ca "$next_key" "$next_crt"
    created+=(ca-next)
    ;;
  switch)
    [[ -e "$next_crt" && -e "$next_key" ]] || die "--rotate-ca switch needs ca-next.* from --rotate-ca begin"
    # The old CA stays trusted (ca-prev.crt, in the bundle) until finish; it signs nothing more.
    cp -p "$ca_crt" "$tmp/prev.crt"
    mv -f "$tmp/prev.crt" "$prev_crt"
    mv -f "$next_key" "$ca_key"
    mv -f "$next_crt" "$ca_crt"
    created+=(ca-from-ca-next)
    ;;
  finish)
    [[ ! -e "$next_crt" ]] || die "--rotate-ca finish comes after switch (ca-next.crt still exists)"
    rm -f "$prev_crt"
    ;;
esac

# ca-bundle.crt: what every peer trusts, the issuing CA plus the other one during a rotation.
{
  cat "$ca_crt"
  [[ ! -e "$next_crt" ]] || cat "$next_crt"
  [[ ! -e "$prev_crt" ]] || cat "$prev_crt"
} >"$tmp/ca-bundle.crt"
chmod 0644 "$tmp/ca-bundle.crt"
if cmp -s "$tmp/ca-bundle.crt" "$out_dir/ca-bundle.crt"; then
  rm -f "$tmp/ca-bundle.crt"
else
  mv -f "$tmp/ca-bundle.crt" "$out_dir/ca-bundle.crt"
  created+=(ca-bundle)
fi

now=$(date -u +%s)
# leaf NAME PURPOSE EKU SANS — keep NAME.crt/.key if still good, otherwise issue a fresh pair.
leaf() {
  local name="$1" purpose="$2" eku="$3" sans="$4" crt="$out_dir/$1.crt" key="$out_dir/$1.key"
  if ((force_renew == 0)) && [[ -s "$crt" && -s "$key" ]] && leaf_ok "$crt" "$key" "$purpose" "$sans"; then
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
  run openssl ca -batch -config "$tmp/openssl.cnf" -cert "$ca_crt" -keyfile "$ca_key" \
    -in "$tmp/$name.csr" -extfile "$tmp/$name.ext" -notext -rand_serial \
    -startdate "$(date -u -d "@$now" +%Y%m%d%H%M%SZ)" \
    -enddate "$(date -u -d "@$((now + lifetime_s))" +%Y%m%d%H%M%SZ)" -out "$tmp/$name.crt"
  chmod "$key_mode" "$tmp/$name.key"
  chmod 0644 "$tmp/$name.crt"
  mv -f "$tmp/$name.key" "$key"
  mv -f "$tmp/$name.crt" "$crt"
  created+=("$name")
}

leaf_ok() {
  local crt="$1" key="$2" purpose="$3" sans="$4" san start end
  openssl verify -CAfile "$ca_crt" -purpose "$purpose" "$crt" >/dev/null 2>&1 || return 1
  local other=sslclient
  [[ "$purpose" == sslclient ]] && other=sslserver
  ! openssl verify -CAfile "$ca_crt" -purpose "$other" "$crt" >/dev/null 2>&1 || return 1
  start=$(epoch "$crt" startdate) && end=$(epoch "$crt" enddate) || return 1
  # Longer-lived than asked (the setting went down): reissue. Half its life used: renew.
  ((end - start <= lifetime_s + 60)) || return 1
  ((now < start + (end - start) / 2)) || return 1
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
printf '%s (leaf lifetime %s, keys %s)\n' "$summary" "$lifetime" "$key_mode"
