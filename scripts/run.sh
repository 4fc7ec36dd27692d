#!/usr/bin/env bash
# `make run`: NATS (JetStream) and PostgreSQL under $PATCHBAY_DATA_DIR (default ./.data), the
# demo tenant and Telegram API, and every Patchbay service in one process (`patchbay all`).
# Ctrl-C, SIGTERM to this script, or the end of the process that started it (`make`, which
# does not pass SIGTERM on) stops everything: Patchbay first (it drains within its grace), then
# the fakes and NATS, then PostgreSQL; each is killed if it does not stop in time. Ports: PATCHBAY_HTTP_ADDR (127.0.0.1:8080), PATCHBAY_NATS_PORT
# (4222), PATCHBAY_PG_PORT (54329), PATCHBAY_FAKES_PORT (8090, and the next one); a busy port is
# replaced by a free one, so two stacks can run side by side with different data dirs.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DATA="$(mkdir -p "${PATCHBAY_DATA_DIR:-$ROOT/.data}" && cd "${PATCHBAY_DATA_DIR:-$ROOT/.data}" && pwd)"
NATS_BIN="$ROOT/.tools/bin/nats-server"
PG_BIN="${PATCHBAY_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

HTTP_ADDR="${PATCHBAY_HTTP_ADDR:-127.0.0.1:8080}"
HTTP_HOST="${HTTP_ADDR%:*}"
HTTP_PORT="$(pick_port "${HTTP_ADDR##*:}")"
NATS_PORT="$(pick_port "${PATCHBAY_NATS_PORT:-4222}")"
PG_PORT="$(pick_port "${PATCHBAY_PG_PORT:-54329}")"
FAKE_TENANT_PORT="$(pick_port "${PATCHBAY_FAKES_PORT:-8090}")"
FAKE_TG_PORT="$(pick_port $((FAKE_TENANT_PORT + 1)))"
FAKE_GRAPH_PORT="$(pick_port $((FAKE_TG_PORT + 1)))"
FAKE_WECHAT_PORT="$(pick_port $((FAKE_GRAPH_PORT + 1)))"
FAKE_KIK_PORT="$(pick_port $((FAKE_WECHAT_PORT + 1)))"
FAKE_LINE_PORT="$(pick_port $((FAKE_KIK_PORT + 1)))"
FAKE_VIBER_PORT="$(pick_port $((FAKE_LINE_PORT + 1)))"

# Background processes in start order; stopped in reverse.
pids=()
stopping=0
# Sends SIGTERM to $1 and waits up to $2 seconds for it to go, then kills it.
stop_pid() {
  local pid=$1 seconds=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((seconds * 10))); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "process $pid did not stop within ${seconds}s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  echo
  echo "stopping…"
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}" 20; done
  if [ -f "$DATA/pg/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$DATA/pg" -m fast -t 20 stop >/dev/null 2>&1 ||
      as_pg "$PG_BIN/pg_ctl" -D "$DATA/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Whoever started us going away stops us too: `make` dies on SIGTERM without passing it on.
PARENT=$PPID
(
  while kill -0 "$PARENT" 2>/dev/null; do sleep 1; done
  kill -TERM $$ 2>/dev/null
) &
pids+=($!)

echo "building patchbay…"
# In the background, so a stop signal is handled at once rather than after the build.
cargo build --quiet -p patchbay -p patchbay-testkit --bins &
pids+=($!)
wait "${pids[-1]}"
unset 'pids[-1]'
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

# NATS with JetStream, file storage under the data dir, and authorisation on: one user per
# service with its role's permissions (`patchbay nats-auth`; passwords kept in the data dir).
"$BIN/patchbay" nats-auth --dir "$DATA/nats-auth" >/dev/null
echo 'include "nats-auth/auth.conf"' > "$DATA/nats.conf"
"$NATS_BIN" -c "$DATA/nats.conf" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$DATA/nats" -l "$DATA/nats.log" &
pids+=($!)

# PostgreSQL: a cluster of our own under the data dir (initdb refuses root: run as postgres).
if [ ! -f "$DATA/pg/PG_VERSION" ]; then
  mkdir -p "$DATA/pg"
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$DATA/pg"
  as_pg "$PG_BIN/initdb" -D "$DATA/pg" -U postgres -A trust -E UTF8 >/dev/null
fi
mkdir -p "$DATA/pgsock"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DATA/pgsock" && touch "$DATA/pg.log" && chown postgres: "$DATA/pg.log"
as_pg "$PG_BIN/pg_ctl" -D "$DATA/pg" -l "$DATA/pg.log" -w \
  -o "-p $PG_PORT -k $DATA/pgsock -c listen_addresses=127.0.0.1" start >/dev/null

# Secrets that survive restarts of the demo.
[ -f "$DATA/master.key" ] || "$BIN/patchbay" gen-master-key > "$DATA/master.key"
if [ -n "${PATCHBAY_ADMIN_TOKEN:-}" ]; then
  ADMIN_TOKEN="$PATCHBAY_ADMIN_TOKEN"
else
  [ -f "$DATA/admin.token" ] || echo "op_$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" > "$DATA/admin.token"
  ADMIN_TOKEN="$(cat "$DATA/admin.token")"
fi

"$BIN/patchbay-fakes" "127.0.0.1:$FAKE_TENANT_PORT" "127.0.0.1:$FAKE_TG_PORT" "127.0.0.1:$FAKE_GRAPH_PORT" \
  "127.0.0.1:$FAKE_WECHAT_PORT" "127.0.0.1:$FAKE_KIK_PORT" "127.0.0.1:$FAKE_LINE_PORT" \
  "127.0.0.1:$FAKE_VIBER_PORT" > "$DATA/fakes.log" 2>&1 &
pids+=($!)

export PATCHBAY_HTTP_ADDR="$HTTP_HOST:$HTTP_PORT"
export PATCHBAY_NATS_URL="nats://127.0.0.1:$NATS_PORT"
export PATCHBAY_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export PATCHBAY_NATS_PASSWORD="$(cat "$DATA/nats-auth/passwords/patchbay")"
export PATCHBAY_MASTER_KEY="$(cat "$DATA/master.key")"
export PATCHBAY_ADMIN_TOKEN="$ADMIN_TOKEN"
export PATCHBAY_ALLOW_PRIVATE_CALLBACKS=true
# Where platforms reach the webhooks (the demo Viber API posts its check callback there).
export PATCHBAY_PUBLIC_URL="${PATCHBAY_PUBLIC_URL:-http://$HTTP_HOST:$HTTP_PORT}"
export PATCHBAY_LOG_FORMAT="${PATCHBAY_LOG_FORMAT:-text}"
"$BIN/patchbay" all > >(tee -a "$DATA/patchbay.log") 2>&1 &
pids+=($!)

URL="http://$HTTP_HOST:$HTTP_PORT"
for _ in $(seq 1 300); do
  curl -sf "$URL/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$URL/readyz" >/dev/null || { echo "patchbay did not become ready; see $DATA/patchbay.log"; exit 1; }

cat <<EOT

Patchbay is running on $URL   (data: $DATA)
  console:         $URL/console   (sign in with the operator token below; "Create a bot" with the
                   demo tenant's URL as callback, add a Telegram channel, open its developer view, "Try it")
  operator token:  $ADMIN_TOKEN
  NATS:            nats://127.0.0.1:$NATS_PORT      PostgreSQL: 127.0.0.1:$PG_PORT
  NATS users:      one per service, passwords in $DATA/nats-auth/passwords (user pb-<service>)
  demo tenant:     http://127.0.0.1:$FAKE_TENANT_PORT/hook   demo Telegram API: http://127.0.0.1:$FAKE_TG_PORT
  demo Meta Graph API (Messenger, WhatsApp; give it as a channel's api_base_url): http://127.0.0.1:$FAKE_GRAPH_PORT/v25.0
  demo WeChat API (AppID wx2c2769f8efd9abc2, AppSecret demo-secret, follower oUser123): http://127.0.0.1:$FAKE_WECHAT_PORT
  demo Kik API (bot demobot, API key demo-key, user ada): http://127.0.0.1:$FAKE_KIK_PORT
  demo LINE API (channel access token demo-line-token, friend Uada): http://127.0.0.1:$FAKE_LINE_PORT
  demo Viber API (auth token demo-viber-token, subscriber 01234567890A=): http://127.0.0.1:$FAKE_VIBER_PORT
  what the demo tenant and Telegram API receive:  tail -f $DATA/fakes.log

Quickstart (in another shell):

  export PATCHBAY_URL=$URL PATCHBAY_ADMIN_TOKEN=$ADMIN_TOKEN

  # 1. a bot that calls the demo tenant (it answers every message with "echo: <text>")
  curl -s -X POST \$PATCHBAY_URL/admin/v1/bots -H "Authorization: Bearer \$PATCHBAY_ADMIN_TOKEN" \\
    -H 'content-type: application/json' \\
    -d '{"name": "demo", "webhook": {"url": "http://127.0.0.1:$FAKE_TENANT_PORT/hook", "flavour": "native"}}'
  #    → {"id": "bot_…", "api_key": "pbk_…", "webhook_secret": "whsec_…", …}   export BOT=bot_…

  # 2. a Telegram channel for it, pointed at the demo Telegram API
  curl -s -X POST \$PATCHBAY_URL/admin/v1/bots/\$BOT/channels -H "Authorization: Bearer \$PATCHBAY_ADMIN_TOKEN" \\
    -H 'content-type: application/json' \\
    -d '{"platform": "telegram", "credentials": {"bot_token": "123:demo", "secret_token": "s3cret"},
         "api_base_url": "http://127.0.0.1:$FAKE_TG_PORT"}'
  #    → {"id": "ch_…", "webhook_path": "/webhooks/telegram/ch_…"}   export CH=ch_…

  # 3. a Telegram update, as Telegram would send it
  curl -s -X POST \$PATCHBAY_URL/webhooks/telegram/\$CH -H 'X-Telegram-Bot-Api-Secret-Token: s3cret' \\
    -H 'content-type: application/json' \\
    -d '{"update_id": 1, "message": {"message_id": 1, "date": 1767225600, "chat": {"id": 4242, "type": "private"},
         "from": {"id": 4242, "is_bot": false, "first_name": "Ada"}, "text": "hello"}}'

  # 4. see the signed event at the tenant and the reply at Telegram
  tail $DATA/fakes.log

  # 5. WeChat: a channel on the demo WeChat API, then a message signed as WeChat signs it
  curl -s -X POST \$PATCHBAY_URL/admin/v1/bots/\$BOT/channels -H "Authorization: Bearer \$PATCHBAY_ADMIN_TOKEN" \\
    -H 'content-type: application/json' \\
    -d '{"platform": "wechat", "credentials": {"app_id": "wx2c2769f8efd9abc2", "app_secret": "demo-secret",
         "token": "spamtest"}, "api_base_url": "http://127.0.0.1:$FAKE_WECHAT_PORT"}'
  #    → {"id": "ch_…", "webhook_path": "/webhooks/wechat/ch_…"}   export WX=ch_…
  TS=\$(date +%s); SIG=\$(printf '%s\n' spamtest \$TS 42 | LC_ALL=C sort | tr -d '\n' | sha1sum | cut -d' ' -f1)
  curl -s -X POST "\$PATCHBAY_URL/webhooks/wechat/\$WX?signature=\$SIG&timestamp=\$TS&nonce=42&openid=oUser123" \\
    -d "<xml><ToUserName>gh_demo</ToUserName><FromUserName>oUser123</FromUserName><CreateTime>\$TS</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1</MsgId></xml>"
  #    → success; the reply goes out through the customer-service API: tail $DATA/fakes.log

  # 6. Kik: a channel on the demo Kik API, then a message signed as Kik signs it
  curl -s -X POST \$PATCHBAY_URL/admin/v1/bots/\$BOT/channels -H "Authorization: Bearer \$PATCHBAY_ADMIN_TOKEN" \\
    -H 'content-type: application/json' \\
    -d '{"platform": "kik", "credentials": {"username": "demobot", "api_key": "demo-key"},
         "api_base_url": "http://127.0.0.1:$FAKE_KIK_PORT"}'
  #    → {"id": "ch_…", "webhook_path": "/webhooks/kik/ch_…"}   export KIK=ch_…
  BODY='{"messages": [{"type": "text", "id": "6d8d060c-3ae4-46fc-bb18-6e7ba3182c0f", "chatId": "b3be3bc1", "from": "ada", "participants": ["ada"], "timestamp": 1767225600000, "body": "hello"}]}'
  curl -s -X POST \$PATCHBAY_URL/webhooks/kik/\$KIK -H 'content-type: application/json' -H 'X-Kik-Username: demobot' \\
    -H "X-Kik-Signature: \$(printf '%s' "\$BODY" | python3 -c 'import hmac,hashlib,sys; print(hmac.new(b"demo-key", sys.stdin.buffer.read(), hashlib.sha1).hexdigest())')" -d "\$BODY"
  #    → the reply goes out through Kik's /v1/message: tail $DATA/fakes.log

  # 7. LINE: a channel on the demo LINE API, then a message signed as LINE signs it
  curl -s -X POST \$PATCHBAY_URL/admin/v1/bots/\$BOT/channels -H "Authorization: Bearer \$PATCHBAY_ADMIN_TOKEN" \\
    -H 'content-type: application/json' \\
    -d '{"platform": "line", "credentials": {"channel_secret": "demo-secret", "channel_access_token": "demo-line-token"},
         "api_base_url": "http://127.0.0.1:$FAKE_LINE_PORT"}'
  #    → {"id": "ch_…", "webhook_path": "/webhooks/line/ch_…"}   export LN=ch_…
  NOW=\$(date +%s)
  BODY='{"destination": "Ub0t", "events": [{"type": "message", "mode": "active", "timestamp": '\$NOW'000, "source": {"type": "user", "userId": "Uada"}, "webhookEventId": "01JDEMO'\$NOW'", "deliveryContext": {"isRedelivery": false}, "replyToken": "rt-'\$NOW'", "message": {"id": "1", "type": "text", "text": "hello"}}]}'
  curl -s -X POST \$PATCHBAY_URL/webhooks/line/\$LN -H 'content-type: application/json' \\
    -H "x-line-signature: \$(printf '%s' "\$BODY" | python3 -c 'import base64,hmac,hashlib,sys; print(base64.b64encode(hmac.new(b"demo-secret", sys.stdin.buffer.read(), hashlib.sha256).digest()).decode())')" -d "\$BODY"
  #    → the reply goes out with the event's reply token (/v2/bot/message/reply): tail $DATA/fakes.log
  # 8. Viber: a channel on the demo Viber API (outbound-viber sets its webhook there, and the
  #    demo API checks it with a signed callback), then a message signed as Viber signs it
  curl -s -X POST \$PATCHBAY_URL/admin/v1/bots/\$BOT/channels -H "Authorization: Bearer \$PATCHBAY_ADMIN_TOKEN" \\
    -H 'content-type: application/json' \\
    -d '{"platform": "viber", "credentials": {"auth_token": "demo-viber-token", "sender_name": "Demo Shop"},
         "api_base_url": "http://127.0.0.1:$FAKE_VIBER_PORT"}'
  #    → {"id": "ch_…", "webhook_path": "/webhooks/viber/ch_…"}   export VB=ch_…
  BODY="{\"event\": \"message\", \"timestamp\": \$(date +%s)000, \"message_token\": 4912661846655238145, \"sender\": {\"id\": \"01234567890A=\", \"name\": \"Ana\"}, \"message\": {\"type\": \"text\", \"text\": \"hello\"}}"
  curl -s -X POST \$PATCHBAY_URL/webhooks/viber/\$VB -H 'content-type: application/json' \\
    -H "X-Viber-Content-Signature: \$(printf '%s' "\$BODY" | python3 -c 'import hmac,hashlib,sys; print(hmac.new(b"demo-viber-token", sys.stdin.buffer.read(), hashlib.sha256).hexdigest())')" -d "\$BODY"
  #    → the reply goes out through Viber's send_message: tail $DATA/fakes.log

The same with the CLI: target/debug/patchbay bots create --name demo --webhook-url http://127.0.0.1:$FAKE_TENANT_PORT/hook
Ctrl-C stops everything; data stays in $DATA (make clean removes it).
EOT
wait "${pids[-1]}"
