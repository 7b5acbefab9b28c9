#!/usr/bin/env bash
# Install a pinned Go tool into <repo>/.tools/bin/NAME, e.g.
#   scripts/go-tool.sh grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
# Built static (CGO_ENABLED=0) so the same binary also runs when copied into a Debian container.
set -euo pipefail

log() { printf 'go-tool: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 2 && $2 == *@v* ]] || die "usage: $0 NAME MODULE/PATH@vX.Y.Z (a pinned version, not @latest)"
name=$1 target=$2
version=${target##*@}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir=$repo/.tools/bin
bin=$bindir/$name

# Go lives in /usr/local/go on many hosts without being on PATH.
command -v go >/dev/null || PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || die "go not found (install Go from https://go.dev/dl/ or put it on PATH)"

# Already there at the pinned version: nothing to do. A different version gets replaced.
if [[ -x $bin ]]; then
  have=$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" {print $3; exit}')
  [[ -z $have || $have == "$version" ]] && exit 0
  log "$name is $have, want $version; reinstalling"
fi

log "go install $target"
mkdir -p "$bindir"
t0=$SECONDS
# GOFLAGS cleared so a stray -mod=vendor etc. from the environment cannot break a module-mode install.
# -s -w halves the size; main.version is where grpcurl/ghz (and many tools) print their version from.
GOBIN=$bindir CGO_ENABLED=0 GOFLAGS='' go install -trimpath -ldflags "-s -w -X main.version=$version" "$target" \
  || die "go install $target failed"
# go install names the binary after the package's last element (toxiproxy's is `server`),
# or the one before it when that is a major version (kustomize/v5 is `kustomize`).
package=${target%@*}
element=$(basename "$package")
[[ $element =~ ^v[0-9]+$ ]] && element=$(basename "$(dirname "$package")")
built=$bindir/$element
[[ $built == "$bin" ]] || mv "$built" "$bin"
log "installed $bin ($version) in $((SECONDS - t0))s"
