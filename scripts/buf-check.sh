#!/usr/bin/env bash
# The wire contracts' checks (make lint): buf lint over proto/, then buf breaking twice:
#   against contracts/baseline, the contracts as the original documents fix them, and
#   against proto/ of the previous commit (HEAD~1), so nothing published since breaks either.
# Additive changes pass both. Usage: scripts/buf-check.sh [WORKSPACE] (default: this
# checkout; a workspace has buf.yaml, proto/ and contracts/baseline/, and is checked against
# its own git history). BUF: the buf binary (default .tools/bin/buf, from `make buf`).
set -euo pipefail

log() { printf 'buf-check: %s\n' "$*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ws=$(cd "${1:-$repo}" && pwd)
buf=${BUF:-$repo/.tools/bin/buf}
[[ -x $buf ]] || { log "error: $buf missing (make buf)"; exit 1; }
cd "$ws"

status=0
"$buf" lint || { log "buf lint failed"; status=1; }
"$buf" breaking proto --against contracts/baseline \
  || { log "proto/ breaks the original contracts (contracts/baseline)"; status=1; }

# The previous commit's proto/, read with git archive: works in worktrees and in shallow
# clones that have the parent (actions/checkout with fetch-depth 2). With no parent (the
# first commit, or a clone of depth 1) there is nothing published to compare with.
if git rev-parse --verify --quiet 'HEAD~1^{commit}' >/dev/null 2>&1 \
  && git cat-file -e 'HEAD~1:proto' 2>/dev/null; then
  previous=$(mktemp -d)
  trap 'rm -rf "$previous"' EXIT
  git archive HEAD~1 proto | tar -x -C "$previous"
  "$buf" breaking proto --against "$previous/proto" \
    || { log "proto/ breaks the previous commit's ($(git rev-parse --short HEAD~1))"; status=1; }
else
  log "no previous commit with proto/ here (first commit or shallow clone): checked against the baseline only"
fi
exit "$status"
