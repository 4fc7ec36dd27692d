//! A tenant's callback server: records every request, verifies Standard Webhooks signatures
//! with its own implementation of the spec (independent of the dispatcher's signer), and
//! answers what the test tells it to (by default 200 with no body).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// One request the tenant received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The query string (BrandChat callbacks carry `bot=<bot id>`), if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// When it was answered (after [`FakeTenant::set_delay`]'s delay, if any).
    pub at: std::time::Instant,
    /// How long the answer was held back by [`FakeTenant::set_delay`] (zero when it was not).
    pub held: Duration,
    /// The HTTP status the tenant answered.
    pub status: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Whether the tenant answered 2xx at once: a delivery the caller saw succeed (an answer
    /// held back by [`FakeTenant::set_delay`] may have come after the caller gave up).
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status) && self.held.is_zero()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// What to answer: status and optional JSON body.
pub type Responder = Arc<dyn Fn(&Received) -> (StatusCode, Option<Value>) + Send + Sync>;

#[derive(Clone)]
struct Inner {
    received: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Responder>>,
    delay: Arc<Mutex<Duration>>,
    headers: Arc<Mutex<Vec<(String, String)>>>,
    verify_token: Arc<Mutex<Option<String>>>,
    type_subscribe: Arc<std::sync::atomic::AtomicBool>,
}

/// The fake tenant. Stops when dropped.
pub struct FakeTenant {
    addr: SocketAddr,
    inner: Inner,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeTenant {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: &str) -> Self {
        let inner = Inner {
            received: Arc::default(),
            responder: Arc::new(Mutex::new(Arc::new(|_: &Received| (StatusCode::OK, None)))),
            delay: Arc::default(),
            headers: Arc::default(),
            verify_token: Arc::default(),
            type_subscribe: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hook", post(receive).get(challenge))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake tenant");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            inner,
            _server: server,
        }
    }

    /// The callback URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Sets how the tenant answers from now on.
    pub fn respond_with(
        &self,
        f: impl Fn(&Received) -> (StatusCode, Option<Value>) + Send + Sync + 'static,
    ) {
        *self.inner.responder.lock().expect("lock") = Arc::new(f);
    }

    /// Answers a subscription challenge (`GET` with `hub.mode=subscribe`, or UChat's form
    /// `POST` with `hub_mode=subscribe`) only when its verify token is `token`; until this is
    /// called, every such challenge is refused.
    pub fn expect_verify_token(&self, token: &str) {
        *self.inner.verify_token.lock().expect("lock") = Some(token.to_owned());
    }

    /// Answers Web1on1's challenge (`GET` with `type=subscribe&challenge=…`) as the `chipchat`
    /// SDK's router does; until this is called, such a challenge is refused.
    pub fn answer_type_subscribe(&self) {
        self.inner
            .type_subscribe
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits this long before answering each request (a slow endpoint).
    pub fn set_delay(&self, delay: Duration) {
        *self.inner.delay.lock().expect("lock") = delay;
    }

    /// Adds these headers to every answer from now on (`Retry-After`, `Location`, …).
    pub fn set_response_headers(&self, headers: &[(&str, &str)]) {
        *self.inner.headers.lock().expect("lock") = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived, failing after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        crate::eventually(
            timeout,
            &format!("{n} callbacks at the fake tenant"),
            || async {
                let r = self.received();
                (r.len() >= n).then_some(r)
            },
        )
        .await
    }
}

async fn receive(
    State(s): State<Inner>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // UChat's challenge: a form POST, answered with hub_challenge when hub_verify_token is the
    // one expected (403 otherwise).
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        let q: std::collections::HashMap<String, String> =
            serde_urlencoded::from_bytes(&body).unwrap_or_default();
        if q.get("hub_mode").map(String::as_str) == Some("subscribe") {
            let expected = s.verify_token.lock().expect("lock").clone();
            return match (q.get("hub_challenge"), expected) {
                (Some(c), Some(t)) if q.get("hub_verify_token") == Some(&t) => {
                    c.clone().into_response()
                }
                _ => StatusCode::FORBIDDEN.into_response(),
            };
        }
    }
    let delay = *s.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut r = Received {
        query: uri.query().map(str::to_owned),
        headers,
        body,
        at: std::time::Instant::now(),
        held: delay,
        status: 0,
    };
    let responder = s.responder.lock().expect("lock").clone();
    let (status, reply) = responder(&r);
    r.status = status.as_u16();
    s.received.lock().expect("lock").push(r);
    let mut response = match reply {
        Some(v) => (status, axum::Json(v)).into_response(),
        None => status.into_response(),
    };
    for (k, v) in s.headers.lock().expect("lock").iter() {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k.as_str()),
            axum::http::HeaderValue::try_from(v.as_str()),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

/// A subscription challenge: echoes `hub.challenge` when `hub.mode` is `subscribe` and
/// `hub.verify_token` is the one the tenant expects (403 otherwise, as a tenant would).
async fn challenge(
    State(s): State<Inner>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if q.get("type").map(String::as_str) == Some("subscribe") {
        let on = s.type_subscribe.load(std::sync::atomic::Ordering::SeqCst);
        return match q.get("challenge") {
            Some(c) if on => c.clone().into_response(),
            _ => StatusCode::FORBIDDEN.into_response(),
        };
    }
    let expected = s.verify_token.lock().expect("lock").clone();
    if q.get("hub.mode").map(String::as_str) != Some("subscribe") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    if expected.is_none() || q.get("hub.verify_token") != expected.as_ref() {
        return StatusCode::FORBIDDEN.into_response();
    }
    match q.get("hub.challenge") {
        Some(c) => c.clone().into_response(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Verifies a Standard Webhooks request as a tenant would: `webhook-signature` must hold a
/// `v1,` signature of `id.timestamp.body` under `secret` (`whsec_…`), and the timestamp must
/// be within five minutes of now.
pub fn verify_standard_webhook(secret: &str, r: &Received) -> Result<(), String> {
    let id = r.header("webhook-id").ok_or("no webhook-id")?;
    let ts = r
        .header("webhook-timestamp")
        .ok_or("no webhook-timestamp")?;
    let sigs = r
        .header("webhook-signature")
        .ok_or("no webhook-signature")?;
    let ts_num: i64 = ts.parse().map_err(|_| "timestamp is not a number")?;
    if (chrono::Utc::now().timestamp() - ts_num).abs() > 300 {
        return Err("timestamp outside tolerance".into());
    }
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .map_err(|_| "secret is not base64")?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let ok = sigs
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected);
    if ok {
        Ok(())
    } else {
        Err(format!("no matching v1 signature in {sigs:?}"))
    }
}

/// How long tests wait for deliveries by default.
pub const WAIT: Duration = Duration::from_secs(20);
