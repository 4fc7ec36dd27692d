#!/usr/bin/env bash
# `make check-run-stop` (part of `make test`): `make run` stops everything when a supervisor
# sends SIGTERM to `make`, as it does on Ctrl-C, even while a client holds a connection open.
# Starts `make run` on free ports with a temporary data dir, waits until it is ready, opens a
# connection that sends an authenticated request head and then stalls its body, sends SIGTERM
# to `make` alone, and checks that the script, Patchbay, NATS and PostgreSQL are all gone within
# a bound (60 s: Patchbay's grace is 10 s, each process is killed after 20 s).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$(mktemp -d)"
# PostgreSQL runs as its own user when we are root: it must reach its directory.
chmod 755 "$DATA"
MAKE_PID=""
fail() {
  echo "check-run-stop: $*" >&2
  echo "--- make run's output:" >&2
  cat "$DATA/run.out" >&2 || true
  exit 1
}
finish() {
  # Whatever a failed check left behind, by the pids this check started or read: asked to
  # stop (PostgreSQL with its fast shutdown), killed after 10 s.
  local p
  [ -n "$MAKE_PID" ] && kill -TERM "$MAKE_PID" 2>/dev/null
  for p in ${LEFT:-}; do
    if [ "$p" = "${PG_PID:-}" ]; then kill -INT "$p" 2>/dev/null; else kill -TERM "$p" 2>/dev/null; fi
  done
  for _ in $(seq 1 100); do
    local alive=""
    for p in ${LEFT:-}; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for p in ${LEFT:-}; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$DATA"
  return 0
}
trap finish EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT="$(free_port)"
# The script moves past busy ports, so distinct starting points are enough.
NATS_PORT="$(free_port)"
PG_PORT="$(free_port)"
FAKES_PORT="$(free_port)"

# Small streams: JetStream refuses streams whose byte caps exceed the free disk, and this
# check is about stopping, not capacity.
PATCHBAY_DATA_DIR="$DATA" PATCHBAY_HTTP_ADDR="127.0.0.1:$HTTP_PORT" PATCHBAY_NATS_PORT="$NATS_PORT" \
  PATCHBAY_PG_PORT="$PG_PORT" PATCHBAY_FAKES_PORT="$FAKES_PORT" PATCHBAY_NATS_MAX_STREAM_BYTES=67108864 \
  make -C "$ROOT" -s -o tools run >"$DATA/run.out" 2>&1 &
MAKE_PID=$!

# Ready once the script printed its banner (the build may take a while the first time).
for _ in $(seq 1 6000); do
  grep -q "Patchbay is running" "$DATA/run.out" 2>/dev/null && break
  kill -0 "$MAKE_PID" 2>/dev/null || fail "make run exited before it was ready"
  sleep 0.1
done
grep -q "Patchbay is running" "$DATA/run.out" || fail "make run was not ready within 10 minutes"
URL="$(grep -o 'Patchbay is running on http://[0-9.:]*' "$DATA/run.out" | awk '{print $NF}')"
PORT="${URL##*:}"

# What runs now: the script under make, and its children; NATS and PostgreSQL by their data dir.
RUN_PID="$(pgrep -P "$MAKE_PID" -f scripts/run.sh | head -n 1)"
[ -n "$RUN_PID" ] || fail "no run.sh under make"
PG_PID="$(head -n 1 "$DATA/pg/postmaster.pid")"
NATS_PID="$(pgrep -f -- "-sd $DATA/nats" | head -n 1)"
PATCHBAY_PID="$(pgrep -P "$RUN_PID" -f "patchbay all" | head -n 1)"
[ -n "$NATS_PID" ] && [ -n "$PATCHBAY_PID" ] || fail "NATS or Patchbay not found"
LEFT="$RUN_PID $PATCHBAY_PID $NATS_PID $PG_PID"

# A client holding a connection: the head of an operator request, then none of its body.
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
printf 'POST /admin/v1/bots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{' \
  "$(cat "$DATA/admin.token")" >&3

kill -TERM "$MAKE_PID"
asked=$SECONDS
gone=""
for _ in $(seq 1 600); do
  gone=1
  for p in $LEFT; do kill -0 "$p" 2>/dev/null && gone="" && break; done
  [ -n "$gone" ] && break
  sleep 0.1
done
exec 3>&-
if [ -z "$gone" ]; then
  still=""
  for p in $LEFT; do kill -0 "$p" 2>/dev/null && still="$still $(ps -o pid=,args= -p "$p")"$'\n'; done
  fail "still running 60 s after SIGTERM to make:"$'\n'"$still"
fi
MAKE_PID=""
LEFT=""
echo "check-run-stop: make run stopped everything $((SECONDS - asked)) s after SIGTERM"
