#!/usr/bin/env bash
# Render deploy/k8s (the base and every overlay) with a pinned kustomize and validate every
# object offline against the Kubernetes schemas bundled with kubernetes-validate (pinned in
# requirements/dev.txt), plus the project's rules (deploy/k8s/check.py). No cluster needed.
#   scripts/k8s-check.sh            (make k8s-check: also makes the venv)
# KUBE_VERSIONS: the Kubernetes versions to validate against, oldest and newest supported.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2  # v5.8.3 needs Go 1.27
KUBE_VERSIONS=${KUBE_VERSIONS:-1.30 1.37}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[[ -x .venv/bin/python ]] || { echo "k8s-check: no .venv; run make venv" >&2; exit 1; }

scripts/go-tool.sh kustomize "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rendered=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir=${dir%/}
  file=$dir.yaml
  mkdir -p "$out/$(dirname "$file")"
  .tools/bin/kustomize build "$dir" >"$out/$file"
  rendered+=("$file")
done

versions=()
for v in $KUBE_VERSIONS; do versions+=(--kubernetes-version "$v"); done
# From the folder of the rendered files, so that messages name the kustomization.
cd "$out"
"$repo/.venv/bin/python" "$repo/deploy/k8s/check.py" "${versions[@]}" "${rendered[@]}"
