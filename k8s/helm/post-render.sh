#!/usr/bin/env bash
# Helm post-renderer: reads the chart's rendered objects on stdin, writes them patched by
# k8s/helm/post-render/kustomization.yaml. Needs kustomize, or kubectl (kubectl kustomize).
#   helm upgrade --install dagster dagster/dagster ... --post-renderer k8s/helm/post-render.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
cp "${here}/post-render/kustomization.yaml" "${work}/"
cat > "${work}/chart.yaml"
if command -v kustomize > /dev/null; then
  kustomize build "${work}"
else
  kubectl kustomize "${work}"
fi
