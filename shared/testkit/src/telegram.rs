//! A fake Telegram Bot API server speaking the real wire format: `POST /bot<token>/<method>`
//! with a JSON body, answering `{"ok": true, "result": …}` or
//! `{"ok": false, "error_code", "description", "parameters"?}`. Known tokens only, and each
//! token may only write to the chats whose users started that bot (as on Telegram: a bot cannot
//! initiate a conversation); per-chat message ids; blocked chats answer 403; failures can be
//! queued to test retries. Every call is recorded, refused ones too, with the status answered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One API call the fake received, refused or not.
#[derive(Debug, Clone)]
pub struct Call {
    /// The bot token from the path (empty when the path had no `bot` prefix).
    pub token: String,
    /// The method, e.g. `sendMessage`.
    pub method: String,
    /// The JSON body (`Value::Null` when it was not a JSON object).
    pub body: Value,
    /// The W3C `traceparent` header, if the caller sent one.
    pub traceparent: Option<String>,
    /// The HTTP status the fake answered.
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A failure to answer instead of success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 with `parameters.retry_after`.
    TooManyRequests {
        /// Seconds.
        retry_after: u64,
    },
    /// 500 Internal Server Error.
    ServerError,
}

#[derive(Default)]
struct Inner {
    any_token: bool,
    /// Per mille of send calls answered 429 (retry_after 1) and 500, at random.
    /// 429s per mille, and the sends failed at random (429 or 500).
    random_failures: (u32, crate::flaky::RandomFailures),
    tokens: HashSet<String>,
    /// (token, chat): the chats whose users started each bot.
    chats: HashSet<(String, i64)>,
    blocked: HashSet<i64>,
    calls: Vec<Call>,
    /// (token, `name` | `description` | `short_description`) → its text.
    profiles: HashMap<(String, &'static str), String>,
    next_id: HashMap<i64, i64>,
    failures: VecDeque<Failure>,
    /// (token, file_id) → (file_path, bytes): files users sent, for `getFile` and downloads.
    files: HashMap<(String, String), (String, Vec<u8>)>,
}

/// The fake. Stops when dropped.
pub struct FakeTelegram {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeTelegram {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/{bot}/{method}", post(call))
            .route("/file/{bot}/{*path}", axum::routing::get(download))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake telegram");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            inner,
            _server: server,
        }
    }

    /// The base URL to give a channel as `api_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A file users sent to the bot with `token`: `getFile` answers its `file_path`
    /// (`photos/<file_id>.jpg`) and `/file/bot<token>/<file_path>` serves `bytes`.
    pub fn add_file(&self, token: &str, file_id: &str, bytes: &[u8]) {
        self.inner.lock().expect("lock").files.insert(
            (token.to_owned(), file_id.to_owned()),
            (format!("photos/{file_id}.jpg"), bytes.to_vec()),
        );
    }

    /// Accepts `token` from now on.
    pub fn add_bot(&self, token: &str) {
        self.inner
            .lock()
            .expect("lock")
            .tokens
            .insert(token.to_owned());
    }

    /// Lets the bot with `token` write to `chat_id`: its user started the bot (the harness
    /// calls this for every update it posts on the bot's behalf). Without it, sends to the chat
    /// are refused with 403 "bot can't initiate conversation with a user".
    pub fn open_chat(&self, token: &str, chat_id: i64) {
        self.inner
            .lock()
            .expect("lock")
            .chats
            .insert((token.to_owned(), chat_id));
    }

    /// Accepts every token for every chat (for the demo only: tests tie tokens to chats).
    pub fn accept_any_token(&self) {
        self.inner.lock().expect("lock").any_token = true;
    }

    /// Answers a share of send calls at random with 429 (`retry_after` 1 s) and 500, in per
    /// mille of calls.
    /// One message fails at most [`crate::flaky::MAX_IN_A_ROW`] times in a row.
    pub fn fail_randomly(&self, too_many_per_mille: u32, server_error_per_mille: u32) {
        let mut s = self.inner.lock().expect("lock");
        s.random_failures.0 = too_many_per_mille;
        s.random_failures
            .1
            .set(too_many_per_mille.saturating_add(server_error_per_mille));
    }

    /// Makes `chat_id` answer 403 "bot was blocked by the user".
    pub fn block_chat(&self, chat_id: i64) {
        self.inner.lock().expect("lock").blocked.insert(chat_id);
    }

    /// Queues failures for the next calls.
    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.inner.lock().expect("lock").failures.extend(failures);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().expect("lock").calls.clone()
    }

    /// Calls of `method` so far.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Calls of `method` that the fake accepted (answered 200).
    pub fn accepted(&self, method: &str) -> Vec<Call> {
        self.calls_of(method)
            .into_iter()
            .filter(|c| c.status == 200)
            .collect()
    }

    /// Waits until at least `n` calls of `method` arrived.
    pub async fn wait_for(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        crate::eventually(
            timeout,
            &format!("{n} {method} calls at the fake Telegram"),
            || async {
                let c = self.calls_of(method);
                (c.len() >= n).then_some(c)
            },
        )
        .await
    }
}

/// `GET /file/bot<token>/<file_path>`: the file's bytes (404 for another bot's token or an
/// unknown path, as Telegram answers).
async fn download(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    let mut s = inner.lock().expect("lock");
    let token = bot.strip_prefix("bot").unwrap_or_default().to_owned();
    s.calls.push(Call {
        token: token.clone(),
        method: "file".into(),
        body: json!({"file_path": path}),
        traceparent: None,
        status: 0,
        at: std::time::Instant::now(),
    });
    let found = s
        .files
        .iter()
        .find(|((t, _), (p, _))| *t == token && *p == path)
        .map(|(_, (_, bytes))| bytes.clone());
    let response = match found {
        Some(bytes) => ([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found", None),
    };
    if let Some(last) = s.calls.last_mut() {
        last.status = response.status().as_u16();
    }
    response
}

fn error(status: StatusCode, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    (status, Json(body)).into_response()
}

fn chat_id(body: &Value) -> Option<i64> {
    match &body["chat_id"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

const SEND_METHODS: &[(&str, &str)] = &[
    ("sendMessage", "text"),
    ("sendPhoto", "photo"),
    ("sendAudio", "audio"),
    ("sendVoice", "voice"),
    ("sendVideo", "video"),
    ("sendDocument", "document"),
    ("sendSticker", "sticker"),
    ("sendLocation", "latitude"),
];

async fn call(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((bot, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = inner.lock().expect("lock");
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) if is_json => v,
        _ => Value::Null,
    };
    let token = bot.strip_prefix("bot").map(str::to_owned);
    s.calls.push(Call {
        token: token.clone().unwrap_or_default(),
        method: method.clone(),
        body: body.clone(),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: 0,
        at: std::time::Instant::now(),
    });
    let response = answer(&mut s, token, &method, body);
    if let Some(last) = s.calls.last_mut() {
        last.status = response.status().as_u16();
    }
    response
}

fn answer(s: &mut Inner, token: Option<String>, method: &str, body: Value) -> Response {
    let Some(token) = token else {
        return error(StatusCode::NOT_FOUND, "Not Found", None);
    };
    if !s.any_token && !s.tokens.contains(&token) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized", None);
    }
    if body.is_null() {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request: invalid JSON body",
            None,
        );
    }
    let random_failure = if method.starts_with("send") {
        let too_many = s.random_failures.0;
        s.random_failures
            .1
            .roll(body.to_string().as_bytes())
            .map(|roll| {
                if roll < too_many {
                    Failure::TooManyRequests { retry_after: 1 }
                } else {
                    Failure::ServerError
                }
            })
    } else {
        None
    };
    if let Some(f) = s.failures.pop_front().or(random_failure) {
        return match f {
            Failure::TooManyRequests { retry_after } => error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too Many Requests: retry after {retry_after}"),
                Some(json!({"retry_after": retry_after})),
            ),
            Failure::ServerError => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                None,
            ),
        };
    }
    match method {
        "getFile" => {
            let file_id = body["file_id"].as_str().unwrap_or_default();
            match s.files.get(&(token.clone(), file_id.to_owned())) {
                Some((path, bytes)) => Json(json!({"ok": true, "result": {
                    "file_id": file_id, "file_unique_id": format!("u{file_id}"),
                    "file_size": bytes.len(), "file_path": path}}))
                .into_response(),
                None => error(StatusCode::BAD_REQUEST, "Bad Request: invalid file_id", None),
            }
        }
        "getMe" => Json(json!({"ok": true, "result": {"id": 777, "is_bot": true, "first_name": "PatchbayTest", "username": "patchbay_test_bot"}})).into_response(),
        // The bot's profile, per token (every language: the fake keeps one of each).
        "getMyName" | "getMyDescription" | "getMyShortDescription" => {
            let key = profile_key(method);
            let text = s
                .profiles
                .get(&(token.clone(), key))
                .cloned()
                .unwrap_or_default();
            Json(json!({"ok": true, "result": {key: text}})).into_response()
        }
        "setMyName" | "setMyDescription" | "setMyShortDescription" => {
            let key = profile_key(method);
            let max = match key {
                "name" => 64,
                "description" => 512,
                _ => 120,
            };
            let text = match &body[key] {
                Value::Null => String::new(),
                Value::String(t) => t.clone(),
                _ => return error(StatusCode::BAD_REQUEST, &format!("Bad Request: {key} must be a string"), None),
            };
            if text.chars().count() > max {
                return error(StatusCode::BAD_REQUEST, &format!("Bad Request: {key} is too long"), None);
            }
            s.profiles.insert((token.clone(), key), text);
            Json(json!({"ok": true, "result": true})).into_response()
        }
        "answerCallbackQuery" => {
            if body["callback_query_id"].as_str().is_none() {
                return error(StatusCode::BAD_REQUEST, "Bad Request: query id is required", None);
            }
            Json(json!({"ok": true, "result": true})).into_response()
        }
        m => {
            let Some((_, field)) = SEND_METHODS.iter().find(|(name, _)| *name == m) else {
                return error(StatusCode::NOT_FOUND, "Not Found: method not found", None);
            };
            let Some(chat) = chat_id(&body) else {
                return error(StatusCode::BAD_REQUEST, "Bad Request: chat_id is empty", None);
            };
            if body[*field].is_null() {
                return error(StatusCode::BAD_REQUEST, &format!("Bad Request: {field} is empty"), None);
            }
            if m == "sendMessage" {
                let len = body["text"].as_str().map_or(0, |t| t.chars().count());
                if !(1..=4096).contains(&len) {
                    return error(StatusCode::BAD_REQUEST, "Bad Request: message is too long", None);
                }
            }
            if !s.any_token && !s.chats.contains(&(token.clone(), chat)) {
                return error(StatusCode::FORBIDDEN, "Forbidden: bot can't initiate conversation with a user", None);
            }
            if s.blocked.contains(&chat) {
                return error(StatusCode::FORBIDDEN, "Forbidden: bot was blocked by the user", None);
            }
            let id = s.next_id.entry(chat).or_insert(0);
            *id += 1;
            let mut result = json!({
                "message_id": *id,
                "date": chrono::Utc::now().timestamp(),
                "chat": {"id": chat, "type": "private"},
            });
            if let Some(t) = body.get("text") {
                result["text"] = t.clone();
            }
            // Media: the file as Telegram stored it (a new file_id when it fetched a URL).
            if *field != "text" && *field != "latitude" {
                let given = body[*field].as_str().unwrap_or_default();
                let file_id = if given.starts_with("http://") || given.starts_with("https://") {
                    format!("AgACsent{}x{}", chat.unsigned_abs(), *id)
                } else {
                    given.to_owned()
                };
                let file = json!({"file_id": file_id, "file_unique_id": format!("u{file_id}")});
                result[*field] = if *field == "photo" { json!([file]) } else { file };
            }
            Json(json!({"ok": true, "result": result})).into_response()
        }
    }
}

/// The profile key a `getMy…`/`setMy…` method reads or writes.
fn profile_key(method: &str) -> &'static str {
    if method.ends_with("ShortDescription") {
        "short_description"
    } else if method.ends_with("Description") {
        "description"
    } else {
        "name"
    }
}
