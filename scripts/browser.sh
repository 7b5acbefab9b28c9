#!/usr/bin/env bash
# Ensure a Chromium for the e2e page test (tests/e2e/test_observability.py), which drives it
# through Playwright: Playwright cannot download its own browsers here, so it launches the
# system's. CHROMIUM names it (default /usr/bin/chromium). On Debian as root this installs
# Debian's chromium package; elsewhere it says what is missing.
set -euo pipefail

log() { printf 'browser: %s\n' "$*" >&2; }
browser=${CHROMIUM:-/usr/bin/chromium}

[[ -x $browser ]] && exit 0

os_id=""
# shellcheck source=/dev/null
[[ -r /etc/os-release ]] && os_id=$(. /etc/os-release && echo "${ID:-}")
if [[ $os_id != debian || $(id -u) -ne 0 || $browser != /usr/bin/chromium ]]; then
  log "error: no browser at $browser: install Chromium (Debian: apt-get install chromium) or set CHROMIUM"
  exit 1
fi

t0=$SECONDS
log "installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
out=$(apt-get update -q 2>&1 && apt-get install -y -q --no-install-recommends chromium 2>&1) \
  || { printf '%s\n' "$out" >&2; log "error: apt-get install chromium failed"; exit 1; }
log "$("$browser" --version 2>/dev/null || echo chromium) installed in $((SECONDS - t0))s"
