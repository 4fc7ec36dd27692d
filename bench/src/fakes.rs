//! Lean fakes for the benchmark: a tenant that answers every `message.received` whose text
//! starts with `rt-` or `wx-` (the round trips) with an inline reply `re <text>`, a Telegram
//! Bot API that accepts any token, and a WeChat server API (`GET /cgi-bin/token`, `POST
//! /cgi-bin/message/custom/send`) that accepts only the access token it gave. They record
//! only `(id, arrival time)` per message (and the WeChat fake a count of the calls it refused),
//! so they stay far from being the bottleneck (no body copies, one short lock per request).
//! The testkit's `FakeTenant`, `FakeTelegram` and `FakeWechat` keep every request for
//! assertions; at 100k messages that is what we avoid.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Arrivals by message id (the text without the `re ` prefix), and who waits for which id.
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<RecInner>,
    /// Calls the fake platform refused (the WeChat fake: an access token it did not give).
    refused: AtomicU64,
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

    /// Counts a call the fake refused.
    pub fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many of `ids` arrived at least once.
    pub fn count_arrived<'a>(&self, ids: impl Iterator<Item = &'a String>) -> usize {
        let s = self.inner.lock().expect("lock");
        ids.filter(|id| s.arrivals.contains_key(*id)).count()
    }
}

/// The WeChat Official Account the benchmark's channel is (`wx` and 16 letters or digits).
pub const WECHAT_APP_ID: &str = "wxbench00000000001";
/// Its AppSecret, which the fake checks when a token is fetched.
pub const WECHAT_APP_SECRET: &str = "bench-app-secret";

/// The three fakes, on random loopback ports.
pub struct Fakes {
    /// Tenant callback URL.
    pub tenant_url: String,
    /// Telegram API base URL.
    pub telegram_url: String,
    /// WeChat server API base URL (paths are `/cgi-bin/…`).
    pub wechat_url: String,
    /// Events at the tenant, by message text.
    pub tenant: Arc<Recorder>,
    /// Sends at Telegram, by text without the `re ` prefix.
    pub telegram: Arc<Recorder>,
    /// Customer-service sends at WeChat, by text without the `re ` prefix; refused calls
    /// (a wrong access token) counted.
    pub wechat: Arc<Recorder>,
}

#[derive(Clone)]
struct TgState {
    rec: Arc<Recorder>,
    next_id: Arc<AtomicI64>,
}

/// The WeChat fake: one app, one access token (a fixed random-looking string, valid once
/// `/cgi-bin/token` gave it).
#[derive(Clone)]
struct WxState {
    rec: Arc<Recorder>,
    token: Arc<str>,
    issued: Arc<AtomicBool>,
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
        let wechat = Arc::new(Recorder::default());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let w_app = axum::Router::new()
            .route("/cgi-bin/token", get(wechat_token))
            .route("/cgi-bin/message/custom/send", post(wechat_send))
            .with_state(WxState {
                rec: wechat.clone(),
                token: format!("bench_{nanos:x}_{}", std::process::id()).into(),
                issued: Arc::new(AtomicBool::new(false)),
            });
        let t_addr = serve(t_app).await?;
        let g_addr = serve(g_app).await?;
        let w_addr = serve(w_app).await?;
        Ok(Self {
            tenant_url: format!("http://{t_addr}/hook"),
            telegram_url: format!("http://{g_addr}"),
            wechat_url: format!("http://{w_addr}"),
            tenant,
            telegram,
            wechat,
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
    if text.starts_with("rt-") || text.starts_with("wx-") {
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

/// WeChat's error body.
fn wechat_error(errcode: i64, errmsg: &str) -> Response {
    Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`: the one token, for
/// 7200 s, to the benchmark's app.
async fn wechat_token(
    State(st): State<WxState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let q = |k: &str| q.get(k).map_or("", String::as_str);
    if q("grant_type") != "client_credential" {
        return wechat_error(40002, "invalid grant_type");
    }
    if q("appid") != WECHAT_APP_ID {
        return wechat_error(40013, "invalid appid");
    }
    if q("secret") != WECHAT_APP_SECRET {
        return wechat_error(40001, "invalid credential");
    }
    st.issued.store(true, Ordering::Relaxed);
    Json(json!({"access_token": &*st.token, "expires_in": 7200})).into_response()
}

/// `POST /cgi-bin/message/custom/send?access_token=…`: records the text's message id when the
/// token is the one `/cgi-bin/token` gave; else answers 40001 (41001 without one) and counts
/// the refusal.
async fn wechat_send(
    State(st): State<WxState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    match q.get("access_token").map(String::as_str) {
        None | Some("") => {
            st.rec.refuse();
            return wechat_error(41001, "access_token missing");
        }
        Some(t) if t != &*st.token || !st.issued.load(Ordering::Relaxed) => {
            st.rec.refuse();
            return wechat_error(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        Some(_) => {}
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        st.rec.refuse();
        return wechat_error(47001, "data format error");
    };
    if body["touser"].as_str().is_none_or(str::is_empty) {
        st.rec.refuse();
        return wechat_error(40003, "invalid openid");
    }
    let text = body["text"]["content"].as_str().unwrap_or_default();
    if body["msgtype"] != "text" || text.is_empty() {
        st.rec.refuse();
        return wechat_error(44004, "empty content");
    }
    st.rec.arrive(text.strip_prefix("re ").unwrap_or(text));
    wechat_error(0, "ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wechat_fake_accepts_only_the_token_it_gave() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fakes = Fakes::start().await.expect("fakes");
        let http = reqwest::Client::new();
        let send = |token: &str, text: &str| {
            http.post(format!(
                "{}/cgi-bin/message/custom/send?access_token={token}",
                fakes.wechat_url
            ))
            .json(&json!({"touser": "oBench1", "msgtype": "text", "text": {"content": text}}))
            .send()
        };
        let errcode = |r: reqwest::Response| async move {
            r.json::<Value>().await.expect("json")["errcode"].clone()
        };
        // Before any token was given, and with a made-up one: refused, counted, not recorded.
        let token = "not-given";
        assert_eq!(errcode(send(token, "re wx-1").await.unwrap()).await, 40001);
        assert_eq!(fakes.wechat.refused(), 1);
        let got: Value = http
            .get(format!(
                "{}/cgi-bin/token?grant_type=client_credential&appid={WECHAT_APP_ID}&secret=nope",
                fakes.wechat_url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["errcode"], 40001, "{got}");
        let got: Value = http
            .get(format!(
                "{}/cgi-bin/token?grant_type=client_credential&appid={WECHAT_APP_ID}&secret={WECHAT_APP_SECRET}",
                fakes.wechat_url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["expires_in"], 7200, "{got}");
        let token = got["access_token"].as_str().expect("a token");
        assert_eq!(
            errcode(send("wrong", "re wx-1").await.unwrap()).await,
            40001
        );
        assert_eq!(errcode(send(token, "re wx-1").await.unwrap()).await, 0);
        assert_eq!(fakes.wechat.refused(), 2);
        assert_eq!(fakes.wechat.get("wx-1").map(|(_, n)| n), Some(1));
        assert_eq!(fakes.wechat.count_arrived([String::from("wx-1")].iter()), 1);
    }
}
