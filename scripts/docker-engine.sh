#!/usr/bin/env bash
# Ensure a running Docker engine and the Compose v2 plugin (`docker compose`).
# On a normal workstation/CI with Docker installed this exits 0 at once; on a bare
# Debian box (as root) it installs Debian's docker.io plus the Compose v2 plugin
# taken from Debian trixie, and starts dockerd in the background.
set -euo pipefail

log() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# Run a noisy command silently; show its output only if it fails.
quiet() { local out; out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }; }

COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
DOCKERD_LOG=/var/log/dockerd.log
DEADLINE=60   # seconds to wait for dockerd to answer
TMPDIRS=()
trap 'rm -rf "${TMPDIRS[@]}"' EXIT

engine_ok() { docker info >/dev/null 2>&1; }
compose_ok() { docker compose version >/dev/null 2>&1; }

# Real-world path: nothing to do.
if engine_ok && compose_ok; then exit 0; fi

# We only know how to provision Debian as root; elsewhere, say what is missing.
os_id=""
# shellcheck source=/dev/null
[[ -r /etc/os-release ]] && os_id=$(. /etc/os-release && echo "${ID:-}")
if [[ $os_id != debian || $(id -u) -ne 0 ]]; then
  engine_ok || log "missing: a running Docker engine ('docker info' fails)"
  if [[ -S /var/run/docker.sock && ! -w /var/run/docker.sock ]]; then
    log "note: /var/run/docker.sock exists but is not writable by you; join the 'docker' group or use sudo"
  fi
  compose_ok || log "missing: the Compose v2 plugin ('docker compose version' fails)"
  die "install Docker Engine with the Compose plugin (https://docs.docker.com/engine/install/ or Docker Desktop) and start it; this script only provisions Debian as root"
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

# Compose v2 is not packaged for bookworm; trixie's docker-compose *is* Compose v2 and only
# needs libc6 >= 2.34, so fetch that one .deb with a private apt config (nothing else upgrades).
install_compose() {
  compose_ok && return 0
  local t0=$SECONDS tmp mirror arch bin
  tmp=$(mktemp -d)
  TMPDIRS+=("$tmp")
  mirror=$(system_mirror)
  arch=$(dpkg --print-architecture)
  mkdir -p "$tmp/etc/sources.list.d" "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/deb"
  echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
    >"$tmp/etc/sources.list"
  local apt_opts=(
    -o "Dir::Etc::SourceList=$tmp/etc/sources.list"
    -o "Dir::Etc::SourceParts=$tmp/etc/sources.list.d"
    -o "Dir::State::Lists=$tmp/lists"
    -o "Dir::Cache=$tmp/cache"
    -o "APT::Architectures::=$arch"
    -o Debug::NoLocking=1
    -o APT::Sandbox::User=root  # the private dirs are not readable by _apt
  )
  log "fetching the Compose v2 plugin from Debian trixie ($mirror)"
  quiet apt-get "${apt_opts[@]}" update -q || die "apt-get update for trixie failed"
  (cd "$tmp/deb" && quiet apt-get "${apt_opts[@]}" download -q docker-compose) \
    || die "apt-get download docker-compose (trixie) failed"
  dpkg-deb -x "$tmp"/deb/docker-compose_*.deb "$tmp/x"
  bin=$(find "$tmp/x" -path '*cli-plugins/docker-compose' -type f | head -n1)
  [[ -n $bin ]] || die "no cli-plugins/docker-compose inside $(basename "$tmp"/deb/*.deb)"
  install -D -m 0755 "$bin" "$COMPOSE_PLUGIN"
  compose_ok || die "installed $COMPOSE_PLUGIN but 'docker compose version' still fails"
  log "$(docker compose version) installed at $COMPOSE_PLUGIN in $((SECONDS - t0))s"
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
  log "starting dockerd ${args[*]} (log: $DOCKERD_LOG)"
  # setsid+nohup: dockerd outlives this script and its terminal; it starts its own containerd.
  setsid nohup dockerd "${args[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null &
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
install_compose
ensure_running
