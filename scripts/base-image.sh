#!/usr/bin/env bash
# The build inputs this host must supply before `docker compose build` (or `up`) works here:
#
# 1. The base image pinned in the Dockerfile (ARG DEBIAN_IMAGE: tag and digest). Normally a
#    `docker pull`; where no container registry is reachable, an equivalent is built from the
#    Debian mirror with debootstrap and imported under the same tag. A digest cannot name a
#    local import, so DEBIAN_IMAGE=<tag> then goes into .env, which compose reads by itself.
# 2. This host's extra CA certificates (EXTRA_CA_DIR, default /usr/local/share/ca-certificates)
#    copied to build/ca/, so the image builds trust a TLS-intercepting proxy as the host does.
set -euo pipefail
cd "$(dirname "$0")/.."

PINNED=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' Dockerfile)
TAG=${PINNED%@*}
SUITE=bookworm
EXTRA_CA_DIR=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}

log() { printf 'base-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# Run a noisy command silently; show its output only if it fails.
quiet() { local out; out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }; }

[[ $PINNED == *:*@sha256:* ]] || die "no pinned ARG DEBIAN_IMAGE=<name>:<tag>@sha256:<digest> in Dockerfile"
docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/docker-engine.sh first"

# Only *.crt (what update-ca-certificates reads); build/ca/README.md stays.
find build/ca -maxdepth 1 -name '*.crt' -delete
if compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
  cp "$EXTRA_CA_DIR"/*.crt build/ca/
  log "build/ca: $(cd build/ca && echo *.crt) (from $EXTRA_CA_DIR)"
fi

# use_local: compose builds from the local tag (no digest) instead of the pinned reference.
use_local() {
  local line="DEBIAN_IMAGE=$TAG"
  touch .env
  if ! grep -qxF "$line" .env; then
    sed -i '/^# Set by make base-image/d; /^DEBIAN_IMAGE=/d' .env
    printf '# Set by make base-image: %s was bootstrapped locally (no registry).\n%s\n' "$TAG" "$line" >>.env
    log ".env: $line"
  fi
}

docker image inspect "$PINNED" >/dev/null 2>&1 && exit 0
if docker image inspect "$TAG" >/dev/null 2>&1; then use_local; exit 0; fi

# Real-world path: the registry. Bounded, because an unreachable registry can hang for minutes.
log "pulling $PINNED"
if quiet timeout 60 docker pull -q "$PINNED"; then exit 0; fi
log "pull failed; bootstrapping $TAG from the Debian mirror instead"

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root; run as root, or make '$PINNED' available (docker pull/load)"
command -v apt-get >/dev/null || die "no apt-get here; make '$PINNED' available another way (docker pull/load)"

# The mirrors the host already uses (deb822 or one-line sources), so no extra network access is needed.
apt_uris() {
  grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -oE '[a-z]+://[^[:space:]]+' || true
}
mirror=$(apt_uris | grep -vE 'security' | grep -E '/debian/?$' | head -n1)
security=$(apt_uris | grep -E '/debian-security/?$' | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-http://deb.debian.org/debian-security}

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  quiet apt-get update -q
  quiet apt-get install -y -q --no-install-recommends debootstrap
fi

t0=$SECONDS
root=$(mktemp -d /var/tmp/bookworm-slim.XXXXXX)
cleanup() {
  # debootstrap mounts proc/sys inside the target; never rm -rf through a live mount.
  grep -oE " $root/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE from $mirror"
if ! quiet debootstrap --variant=minbase "$SUITE" "$root" "$mirror"; then
  tail -n 20 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
  die "debootstrap failed"
fi

# Make it behave like the official slim image (debuerreotype's tweaks): full apt sources,
# no docs/man/locales now or after later installs, no daemons started by package scripts.
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 0755 "$root/usr/sbin/policy-rc.d"

# Trim: indexes, caches, logs, docs/man/locales; docker supplies hostname/hosts/resolv.conf at run time.
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
       "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
       "$root"/usr/share/groff/* "$root"/usr/share/lintian/* "$root"/tmp/* "$root"/root/.bash_history \
       "$root"/etc/hostname "$root"/etc/resolv.conf
find "$root/var/log" -type f -delete  # keep the dirs: apt fails without /var/log/apt
mkdir -p "$root/var/lib/apt/lists/partial"
: >"$root/etc/hostname"

log "importing as $TAG"
tar --numeric-owner --xattrs -C "$root" -c . \
  | quiet docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      --message "debootstrap --variant=minbase $SUITE $mirror" \
      - "$TAG"
docker run --rm "$TAG" cat /etc/debian_version >/dev/null || die "imported $TAG does not run"
log "$TAG built in $((SECONDS - t0))s ($(docker image inspect -f '{{.Size}}' "$TAG" | numfmt --to=iec))"
use_local
