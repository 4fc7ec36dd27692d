#!/usr/bin/env bash
# `make check-deploy` (part of `make test`): renders every Kustomize overlay with `kubectl
# kustomize`, validates each object against the Kubernetes schemas (kubernetes-validate), checks
# that service binaries and Deployments match, and validates deploy/compose.yaml against the
# Compose Specification. The logic is in scripts/check_deploy.py; this wrapper provides its
# pinned Python tools in a virtualenv under .tools/ (ignored by git), created on first use.
# It needs kubectl 1.30 or later (`make tools` installs a pinned one into .tools/bin when the
# machine has none) and fails without it: nothing here is skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# As in the Makefile: the kubectl that `make tools` installed comes first, also when this script
# is run by hand.
export PATH="$ROOT/.tools/bin:$PATH"
VENV="$ROOT/.tools/deploy-venv"
# Pinned: kubernetes-validate carries the Kubernetes JSON schemas (1.25 to 1.37);
# check-jsonschema carries a vendored copy of the Compose Specification schema.
REQUIREMENTS=(
  kubernetes-validate==1.37.0
  check-jsonschema==0.39.0
  jsonschema==4.26.0
  PyYAML==6.0.3
)

if ! command -v kubectl >/dev/null 2>&1; then
  echo "check-deploy: FAIL: kubectl is not installed, so the Kustomize overlays cannot be rendered;" >&2
  echo "check-deploy: run \`make tools\` (it installs a pinned kubectl into .tools/bin)" >&2
  exit 1
fi
kubectl_version="$({ kubectl version --client 2>/dev/null || true; } | { grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' || true; } | head -n 1)"
kubectl_minor="$(echo "$kubectl_version" | cut -s -d. -f2)"
if [ -z "$kubectl_minor" ] || [ "${kubectl_version%%.*}" != "v1" ] || [ "$kubectl_minor" -lt 30 ]; then
  echo "check-deploy: FAIL: $(command -v kubectl) is kubectl ${kubectl_version:-of unknown version}; kubectl 1.30 or later is needed" >&2
  echo "check-deploy: run \`make tools\` (it installs a pinned kubectl into .tools/bin)" >&2
  exit 1
fi

stamp="$VENV/.requirements"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
  echo "check-deploy: installing ${REQUIREMENTS[*]} into .tools/deploy-venv"
  PY="$(command -v python3 || true)"
  if [ -z "$PY" ]; then
    echo "check-deploy: FAIL: python3 (3.11 or later, with venv) is needed" >&2
    exit 1
  fi
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "check-deploy: FAIL: $("$PY" --version) is too old; Python 3.11 or later is needed" >&2
    exit 1
  fi
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  echo "${REQUIREMENTS[*]}" > "$stamp"
fi

exec "$VENV/bin/python" "$ROOT/scripts/check_deploy.py" check
