//! Lean fakes for the benchmark: a tenant that answers every `message.received` whose text
//! starts with `rt-` with an inline reply `re <text>`, and a Telegram Bot API that accepts any
//! token. Both record only `(id, arrival time)` per message, so they stay far from being the
//! bottleneck (no body copies, one short lock per request). The testkit's `FakeTenant` and
//! `FakeTelegram` keep every request for assertions; at 100k messages that is what we avoid.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Arrivals by message id (the text without the `re ` prefix), and who waits for which id.
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<RecInner>,
}

#[derive(Default)]
struct RecInner {
    /// First arrival time and number of arrivals.
    arrivals: HashMap<String, (Instant, u32)>,
    waiters: HashMap<String, oneshot::Sender<Instant>>,
}

impl Recorder {
    /// Records an arrival of `id` now and wakes its waiter.
    pub fn arrive(&self, id: &str) {
        let now = Instant::now();
        let mut s = self.inner.lock().expect("lock");
        let e = s.arrivals.entry(id.to_owned()).or_insert((now, 0));
        e.1 += 1;
        if let Some(w) = s.waiters.remove(id) {
            let _ = w.send(now);
        }
    }

    /// A receiver that gets `id`'s arrival time (at once if it already arrived).
    pub fn wait(&self, id: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.inner.lock().expect("lock");
        match s.arrivals.get(id) {
            Some((at, _)) => {
                let _ = tx.send(*at);
            }
            None => {
                s.waiters.insert(id.to_owned(), tx);
            }
        }
        rx
    }

    /// Forgets a waiter (after a timeout).
    pub fn unwait(&self, id: &str) {
        self.inner.lock().expect("lock").waiters.remove(id);
    }

    /// First arrival and count of `id`.
    pub fn get(&self, id: &str) -> Option<(Instant, u32)> {
        self.inner.lock().expect("lock").arrivals.get(id).copied()
    }

    /// How many of `ids` arrived at least once.
    pub fn count_arrived<'a>(&self, ids: impl Iterator<Item = &'a String>) -> usize {
        let s = self.inner.lock().expect("lock");
        ids.filter(|id| s.arrivals.contains_key(*id)).count()
    }
}

/// The two fakes, on random loopback ports.
pub struct Fakes {
    /// Tenant callback URL.
    pub tenant_url: String,
    /// Telegram API base URL.
    pub telegram_url: String,
    /// Events at the tenant, by message text.
    pub tenant: Arc<Recorder>,
    /// Sends at Telegram, by text without the `re ` prefix.
    pub telegram: Arc<Recorder>,
}

#[derive(Clone)]
struct TgState {
    rec: Arc<Recorder>,
    next_id: Arc<AtomicI64>,
}

async fn serve(app: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

impl Fakes {
    /// Starts both.
    pub async fn start() -> anyhow::Result<Self> {
        let tenant = Arc::new(Recorder::default());
        let telegram = Arc::new(Recorder::default());
        let t_app = axum::Router::new()
            .route("/hook", post(tenant_hook))
            .with_state(tenant.clone());
        let g_app = axum::Router::new()
            .route("/{bot}/{method}", post(telegram_call))
            .with_state(TgState {
                rec: telegram.clone(),
                next_id: Arc::new(AtomicI64::new(1)),
            });
        let t_addr = serve(t_app).await?;
        let g_addr = serve(g_app).await?;
        Ok(Self {
            tenant_url: format!("http://{t_addr}/hook"),
            telegram_url: format!("http://{g_addr}"),
            tenant,
            telegram,
        })
    }
}

async fn tenant_hook(State(rec): State<Arc<Recorder>>, body: Bytes) -> Response {
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if event["type"] != "message.received" {
        return StatusCode::OK.into_response();
    }
    let Some(text) = event["message"]["content"]["text"].as_str() else {
        return StatusCode::OK.into_response();
    };
    rec.arrive(text);
    if text.starts_with("rt-") {
        (
            StatusCode::OK,
            Json(json!({"messages": [{"type": "text", "text": format!("re {text}")}]})),
        )
            .into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

async fn telegram_call(
    State(st): State<TgState>,
    Path((_bot, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"ok": false, "error_code": 400, "description": "Bad Request"})),
        )
            .into_response();
    };
    if method == "getMe" {
        return Json(json!({"ok": true, "result": {"id": 777, "is_bot": true, "first_name": "Bench", "username": "bench_bot"}})).into_response();
    }
    let text = body["text"].as_str().unwrap_or_default();
    st.rec.arrive(text.strip_prefix("re ").unwrap_or(text));
    let chat = match &body["chat_id"] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    };
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    Json(json!({"ok": true, "result": {
        "message_id": id,
        "date": chrono::Utc::now().timestamp(),
        "chat": {"id": chat, "type": "private"},
        "text": text,
    }}))
    .into_response()
}
