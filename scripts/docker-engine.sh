#!/usr/bin/env bash
# Ensure a running Docker engine with the Compose v2 and buildx plugins (`docker compose`,
# `docker buildx`: BuildKit builds, no legacy builder). On a normal workstation/CI with
# Docker installed this exits 0 at once; on a bare Debian box (as root) it installs Debian's
# docker.io plus both plugins taken from Debian trixie, and starts dockerd in the background.
set -euo pipefail

log() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# Run a noisy command silently; show its output only if it fails.
quiet() { local out; out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }; }

PLUGINS=/usr/local/lib/docker/cli-plugins
DOCKERD_LOG=/var/log/dockerd.log
DEADLINE=60   # seconds to wait for dockerd to answer
TMPDIRS=()
trap 'rm -rf "${TMPDIRS[@]}"' EXIT

engine_ok() { docker info >/dev/null 2>&1; }
# Compose before 2.27 can panic on Ctrl-C (see install_plugin); Compose builds through buildx
# bake, which wants buildx 0.17 or later.
declare -A MIN_VERSION=([compose]=2.27.0 [buildx]=0.17.0)
# version_ok NAME: the plugin answers, at MIN_VERSION or later.
version_ok() {
  local have min=${MIN_VERSION[$1]}
  have=$(docker "$1" version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1) || return 1
  [[ -n $have && $(printf '%s\n' "$min" "$have" | sort -V | head -n1) == "$min" ]]
}
compose_ok() { version_ok compose; }
buildx_ok() { version_ok buildx; }

# Real-world path: nothing to do.
if engine_ok && compose_ok && buildx_ok; then exit 0; fi

# We only know how to provision Debian as root; elsewhere, say what is missing.
os_id=""
# shellcheck source=/dev/null
[[ -r /etc/os-release ]] && os_id=$(. /etc/os-release && echo "${ID:-}")
if [[ $os_id != debian || $(id -u) -ne 0 ]]; then
  engine_ok || log "missing: a running Docker engine ('docker info' fails)"
  if [[ -S /var/run/docker.sock && ! -w /var/run/docker.sock ]]; then
    log "note: /var/run/docker.sock exists but is not writable by you; join the 'docker' group or use sudo"
  fi
  compose_ok || log "missing: the Compose v2 plugin, ${MIN_VERSION[compose]} or later ('docker compose version')"
  buildx_ok || log "missing: the buildx plugin, ${MIN_VERSION[buildx]} or later ('docker buildx version')"
  die "install Docker Engine with the Compose and buildx plugins (https://docs.docker.com/engine/install/ or Docker Desktop) and start it; this script only provisions Debian as root"
fi

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update_once() {
  ((apt_updated)) && return 0
  log "apt-get update"
  quiet apt-get update -q
  apt_updated=1
}

# The mirror the system already uses (deb822 or one-line format), so trixie comes from the same place.
system_mirror() {
  local m
  m=$(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
      | grep -oE '[a-z]+://[^[:space:]]+' | grep -vE 'security|updates' | grep -E '/debian/?$' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

install_engine() {
  command -v dockerd >/dev/null && return 0
  local t0=$SECONDS created_policy=0
  apt_update_once
  # Keep the package's init script from starting dockerd itself: we start it below with our own flags.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
  fi
  log "installing docker.io (Debian package; /usr/local/bin/docker stays first on PATH)"
  # --no-install-recommends: containerd, runc, iptables, tini come as hard dependencies.
  if ! quiet apt-get install -y -q --no-install-recommends docker.io; then
    ((created_policy)) && rm -f /usr/sbin/policy-rc.d
    die "apt-get install docker.io failed"
  fi
  ((created_policy)) && rm -f /usr/sbin/policy-rc.d
  log "docker.io $(dpkg-query -W -f='${Version}' docker.io) installed in $((SECONDS - t0))s"
}

# Compose v2 and buildx are not packaged for bookworm. Debian's docker-compose and
# docker-buildx are Go plugins that only need libc6 >= 2.34, so fetch those two .debs with a
# private apt config (nothing else upgrades). From the testing suite, not trixie: trixie's
# Compose 2.26.1 can panic on Ctrl-C during a foreground `up` (docker/compose#11710, fixed in
# 2.27). Testing moves, so the versions are checked against a floor instead of pinned.
SUITE=forky
SUITE_DIR=""
suite_apt() {
  local arch mirror
  arch=$(dpkg --print-architecture)
  if [[ -z $SUITE_DIR ]]; then
    SUITE_DIR=$(mktemp -d)
    TMPDIRS+=("$SUITE_DIR")
    mirror=$(system_mirror)
    mkdir -p "$SUITE_DIR/etc/sources.list.d" "$SUITE_DIR/lists/partial" "$SUITE_DIR/cache/archives/partial"
    echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main" \
      >"$SUITE_DIR/etc/sources.list"
    log "reading Debian $SUITE's package lists ($mirror)"
    suite_apt update -q || die "apt-get update for $SUITE failed"
  fi
  quiet apt-get \
    -o "Dir::Etc::SourceList=$SUITE_DIR/etc/sources.list" \
    -o "Dir::Etc::SourceParts=$SUITE_DIR/etc/sources.list.d" \
    -o "Dir::State::Lists=$SUITE_DIR/lists" \
    -o "Dir::Cache=$SUITE_DIR/cache" \
    -o "APT::Architectures::=$arch" \
    -o Debug::NoLocking=1 \
    -o APT::Sandbox::User=root \
    "$@"  # APT::Sandbox::User: the private dirs are not readable by _apt
}

# install_plugin PACKAGE NAME: the suite's PACKAGE carries cli-plugins/docker-NAME.
install_plugin() {
  local package=$1 name=$2 t0=$SECONDS deb bin version
  deb=$(mktemp -d)
  TMPDIRS+=("$deb")
  log "fetching the $name plugin from Debian $SUITE ($package)"
  suite_apt --version  # the lists, read once, outside the subshell below
  (cd "$deb" && suite_apt download -q "$package") || die "apt-get download $package ($SUITE) failed"
  version=$(dpkg-deb -f "$deb"/"${package}"_*.deb Version)
  dpkg --compare-versions "$version" ge "${MIN_VERSION[$name]}" \
    || die "$SUITE has $package $version; at least ${MIN_VERSION[$name]} is needed"
  dpkg-deb -x "$deb"/"${package}"_*.deb "$deb/x"
  bin=$(find "$deb/x" -path "*cli-plugins/docker-$name" -type f | head -n1)
  [[ -n $bin ]] || die "no cli-plugins/docker-$name inside $(basename "$deb"/*.deb)"
  install -D -m 0755 "$bin" "$PLUGINS/docker-$name"
  docker "$name" version >/dev/null 2>&1 || die "installed $PLUGINS/docker-$name but 'docker $name version' fails"
  log "$(docker "$name" version | head -n1) installed at $PLUGINS/docker-$name in $((SECONDS - t0))s"
}

# iptables-nft needs nf_tables in the kernel; fall back to the legacy backend if it is absent.
ensure_iptables() {
  iptables -w -t nat -L -n >/dev/null 2>&1 && return 0
  if command -v iptables-legacy >/dev/null && iptables-legacy -t nat -L -n >/dev/null 2>&1; then
    log "iptables (nft) unusable here; switching to iptables-legacy"
    update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
    update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
    return 0
  fi
  die "iptables does not work (no nf_tables nor legacy ip_tables in this kernel?)"
}

# Wait until `docker info` answers, dockerd (pid $1, if given) dies, or the deadline passes.
wait_engine() {
  local pid=${1:-$$} end=$((SECONDS + DEADLINE))
  while ((SECONDS < end)); do
    engine_ok && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

start_dockerd() {
  local driver=$1 mtu pid args=()
  # Match the uplink MTU (1400 here) on the default bridge rather than rely on path-MTU discovery.
  mtu=$(ip -o route get 1.1.1.1 2>/dev/null | grep -oE 'dev [^ ]+' | awk '{print $2}' | head -n1 \
        | xargs -r -I{} cat /sys/class/net/{}/mtu 2>/dev/null || true)
  # Flags may not repeat a key of /etc/docker/daemon.json (dockerd refuses to start).
  if ! grep -qs '"storage-driver"' /etc/docker/daemon.json; then args+=(--storage-driver="$driver"); fi
  if [[ -n $mtu && $mtu -lt 1500 ]] && ! grep -qs '"mtu"' /etc/docker/daemon.json; then args+=(--mtu="$mtu"); fi
  # Published ports through iptables alone: the userland proxy (docker-proxy, one process per
  # port) exits for good on its first failed accept (EMFILE under a few thousand idle
  # connections), and the port is dead until the container is recreated.
  if ! grep -qs '"userland-proxy"' /etc/docker/daemon.json; then args+=(--userland-proxy=false); fi
  log "starting dockerd ${args[*]} (log: $DOCKERD_LOG)"
  # setsid+nohup: dockerd outlives this script and its terminal; it starts its own containerd.
  # It must not inherit any other descriptor of its caller: one that holds a lock (a `flock`
  # around `make e2e`) would hold it for as long as the engine runs.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid nohup bash -c '
    for fd in /proc/$$/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec dockerd "$@"' dockerd "${args[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null &
  pid=$!
  wait_engine "$pid" && return 0
  kill "$pid" 2>/dev/null || true
  # Let it release /var/run/docker.pid and the socket before another attempt.
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  return 1
}

ensure_running() {
  engine_ok && return 0
  # A systemd host runs docker as a service; here PID 1 usually is not systemd.
  if [[ -d /run/systemd/system ]]; then
    systemctl start docker && wait_engine && return 0
    die "systemctl start docker did not give a working engine (see: journalctl -u docker)"
  fi
  pgrep -x dockerd >/dev/null && die "dockerd runs but 'docker info' fails; see $DOCKERD_LOG"
  ensure_iptables
  local t0=$SECONDS
  if ! start_dockerd overlay2; then
    log "dockerd with overlay2 failed (tail of $DOCKERD_LOG below); retrying with vfs (slow, disk-hungry)"
    tail -n 5 "$DOCKERD_LOG" >&2 || true
    start_dockerd vfs || die "dockerd did not come up within ${DEADLINE}s; see $DOCKERD_LOG"
  fi
  log "dockerd $(docker info -f '{{.ServerVersion}} storage={{.Driver}} cgroup={{.CgroupDriver}}/v{{.CgroupVersion}}') ready in $((SECONDS - t0))s"
}

install_engine
compose_ok || install_plugin docker-compose compose
buildx_ok || install_plugin docker-buildx buildx
ensure_running
