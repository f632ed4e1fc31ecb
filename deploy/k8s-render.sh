#!/usr/bin/env bash
# Render every overlay of deploy/k8s with `kubectl kustomize` into OUT (default build/k8s):
# OUT/cpu.yaml, OUT/gpu.yaml. Needs kubectl with kustomize v5 (kubectl 1.27 or newer): the
# overlays use kustomize components and replacements. Debian 12's kubernetes-client is kubectl
# 1.20, whose kustomize (v2.0.3) has neither; it is refused here with that message.
# Usage: deploy/k8s-render.sh [OUT]      (make k8s-render generates the base first)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/k8s}"
kubectl="${KUBECTL:-kubectl}"

if ! command -v "$kubectl" >/dev/null; then
    echo "k8s-render: no kubectl on PATH (it renders with its built-in kustomize)" >&2
    exit 3
fi
version="$("$kubectl" version --client 2>&1 || true)"
kustomize="$(sed -n 's/^Kustomize Version: v//p' <<<"$version")"
if [ -z "$kustomize" ] || [ "${kustomize%%.*}" -lt 5 ]; then
    echo "k8s-render: ${version%%$'\n'*}" >&2
    echo "k8s-render: needs kubectl with kustomize v5 (kubectl >= 1.27), this one has" \
        "kustomize ${kustomize:-older than v4 (kubectl < 1.24; Debian 12: v2.0.3)}" >&2
    exit 3
fi
mkdir -p "$out"
for overlay in deploy/k8s/overlays/*/; do
    name="$(basename "$overlay")"
    "$kubectl" kustomize "$overlay" >"$out/$name.yaml"
    echo "k8s-render: $out/$name.yaml ($(grep -c '^kind:' "$out/$name.yaml") objects, kustomize v$kustomize)"
done
