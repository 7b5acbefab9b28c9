#!/bin/bash
# Imports image tarballs (`docker save` archives) into the running lab's containerd; pods
# name them as saved (grpcdemo-cheese:latest is docker.io/library/grpcdemo-cheese:latest).
#   scripts/k8s-lab/load.sh IMAGES.tar [...]
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/env.sh"
for t in "$@"; do
  $NS ctr -a "$R/containerd.sock" -n k8s.io images import "$t" >/dev/null
done
