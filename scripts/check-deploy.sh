#!/usr/bin/env bash
# `make check-deploy` (part of `make test`): renders every Kustomize overlay with `kubectl
# kustomize`, validates each object against the Kubernetes schemas (kubernetes-validate), checks
# that service binaries and Deployments match, and validates deploy/compose.yaml against the
# Compose Specification. The logic is in scripts/check_deploy.py; this wrapper provides its
# pinned Python tools in a virtualenv under .tools/ (ignored by git), created on first use.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
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
  echo "check-deploy: SKIPPED: kubectl is not installed, so the Kustomize overlays cannot be rendered"
  echo "check-deploy: (install kubectl 1.30 or later, which includes kustomize, to run these checks)"
  exit 0
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
