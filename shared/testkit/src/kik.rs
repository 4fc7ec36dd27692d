//! A fake Kik bot API (`api.kik.com`, `reference/platforms.md` §5) speaking its wire format:
//! HTTP Basic auth (the bot's username and API key) on every call, checked per bot;
//! `POST /v1/message` with `{"messages": [...]}` answering `{}`; `GET` and `POST /v1/config`,
//! stored per bot; `GET /v1/user/<username>`, the profiles of users who chatted with the bot.
//!
//! Request shapes are checked strictly: 1 to 25 messages per request and at most 5 to one user,
//! known message types with their required fields and no unknown ones, string ids (distinct),
//! suggested-response keyboards of known response types. A bot may only message users who
//! chatted with it ([`FakeKik::add_user`]; the harness calls it for every webhook it posts on a
//! user's behalf), and each user's message bank holds [`BANK`] messages: every message sent
//! withdraws one, every message from the user deposits one (up to [`BANK`]). The reference
//! documents no error bodies; the fake answers refusals with `{"error": <name>, "message":
//! <why>}`: 401 for bad credentials, 400 for a request Kik would not take, 403 for a user who
//! never chatted with the bot (or blocked it), 404 for an unknown user's profile, and 429
//! naming the message bank when it is empty. Failures can be queued per path. Every call is
//! recorded, refused ones too, with the status answered; a request refused is refused whole.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

/// Sending messages.
pub const MESSAGE_PATH: &str = "/v1/message";
/// The bot's configuration.
pub const CONFIG_PATH: &str = "/v1/config";
/// User profiles: `/v1/user/<username>`.
pub const USER_PATH: &str = "/v1/user/";
/// Messages per request.
pub const MAX_PER_REQUEST: usize = 25;
/// Messages to one user per request.
pub const MAX_PER_USER: usize = 5;
/// A user's message bank: what the bot may send them before they write again.
pub const BANK: u32 = 20;

/// One API call the fake received, refused or not.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GET` or `POST`.
    pub method: String,
    /// The path, e.g. `/v1/message`.
    pub path: String,
    /// The username of the Basic auth credentials, if any were given.
    pub username: Option<String>,
    /// Whether the credentials were a known bot's username and API key.
    pub authorized: bool,
    /// The JSON body (`Null` for `GET` and bodies that are not JSON).
    pub body: Value,
    /// The HTTP status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

/// A failure to answer instead of the normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 for the bot's global rate, with `Retry-After` when given (seconds).
    TooManyRequests {
        /// `Retry-After`.
        retry_after: Option<u64>,
    },
    /// 500.
    ServerError,
    /// Any other status, with a generic error body.
    Status(u16),
}

struct Bot {
    api_key: String,
    config: Value,
    /// User → what is left in their message bank.
    users: HashMap<String, u32>,
    /// Users who blocked the bot.
    blocked: HashSet<String>,
}

#[derive(Default)]
struct Inner {
    bots: HashMap<String, Bot>,
    profiles: HashMap<String, Value>,
    /// (path, failure) queued in order.
    failures: VecDeque<(String, Failure)>,
    /// Per mille of authenticated sends answered 500 at random.
    random_server_errors: crate::flaky::RandomFailures,
    calls: Vec<Call>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake. Stops when dropped.
pub struct FakeKik {
    addr: SocketAddr,
    inner: Shared,
    _server: tokio::task::JoinHandle<()>,
}

/// The configuration of a bot never configured.
fn default_config() -> Value {
    json!({"webhook": null, "features": {"receiveReadReceipts": false,
           "receiveDeliveryReceipts": false, "receiveIsTyping": false,
           "manuallySendReadReceipts": false}, "staticKeyboard": null})
}

impl FakeKik {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: &str) -> Self {
        let inner: Shared = Arc::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake kik");
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

    /// The base URL to give a channel as `api_base_url` (paths are `/v1/…`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Adds (or replaces the API key of) the bot `username`.
    pub fn add_bot(&self, username: &str, api_key: &str) {
        let mut s = self.lock();
        let bot = s.bots.entry(username.to_owned()).or_insert_with(|| Bot {
            api_key: String::new(),
            config: default_config(),
            users: HashMap::new(),
            blocked: HashSet::new(),
        });
        api_key.clone_into(&mut bot.api_key);
    }

    /// `user` wrote to (or started chatting with) the bot: the bot may message them from now
    /// on, and their bank gets one message back (a new user starts with a full bank).
    pub fn add_user(&self, bot: &str, user: &str) {
        if let Some(b) = self.lock().bots.get_mut(bot) {
            b.blocked.remove(user);
            b.users
                .entry(user.to_owned())
                .and_modify(|n| *n = (*n + 1).min(BANK))
                .or_insert(BANK);
        }
    }

    /// `user` blocked the bot: messages to them answer 403.
    pub fn block_user(&self, bot: &str, user: &str) {
        if let Some(b) = self.lock().bots.get_mut(bot) {
            b.blocked.insert(user.to_owned());
        }
    }

    /// Sets what is left in `user`'s bank with the bot.
    pub fn set_bank(&self, bot: &str, user: &str, left: u32) {
        if let Some(b) = self.lock().bots.get_mut(bot) {
            b.users.insert(user.to_owned(), left);
        }
    }

    /// What is left in `user`'s bank with the bot.
    pub fn bank(&self, bot: &str, user: &str) -> Option<u32> {
        self.lock()
            .bots
            .get(bot)
            .and_then(|b| b.users.get(user).copied())
    }

    /// `user`'s profile as `GET /v1/user/<user>` answers it (`firstName`, `lastName`,
    /// `profilePicUrl`, …).
    pub fn set_profile(&self, user: &str, profile: Value) {
        self.lock().profiles.insert(user.to_owned(), profile);
    }

    /// The bot's configuration as stored.
    pub fn config(&self, bot: &str) -> Option<Value> {
        self.lock().bots.get(bot).map(|b| b.config.clone())
    }

    /// Queues `failures` as the answers of the next authenticated calls to `path`
    /// ([`MESSAGE_PATH`], [`CONFIG_PATH`], or [`USER_PATH`] for profiles), in order.
    pub fn fail_next(&self, path: &str, failures: impl IntoIterator<Item = Failure>) {
        let mut s = self.lock();
        for f in failures {
            s.failures.push_back((path.to_owned(), f));
        }
    }

    /// Answers a share of authenticated sends (`POST` [`MESSAGE_PATH`]) at random with 500, in
    /// per mille (after any failure queued with [`FakeKik::fail_next`]); 0 turns it off.
    /// One message fails at most [`crate::flaky::MAX_IN_A_ROW`] times in a row.
    pub fn fail_randomly(&self, server_error_per_mille: u32) {
        self.lock().random_server_errors.set(server_error_per_mille);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls to paths starting with `path` so far.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path.starts_with(path))
            .collect()
    }

    /// Calls to paths starting with `path` that the fake accepted (2xx).
    pub fn accepted(&self, path: &str) -> Vec<Call> {
        self.calls_to(path)
            .into_iter()
            .filter(|c| (200..300).contains(&c.status))
            .collect()
    }

    /// Every message the fake accepted, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.accepted(MESSAGE_PATH)
            .into_iter()
            .flat_map(|c| c.body["messages"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until at least `n` calls to paths starting with `path` arrived.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Call> {
        crate::eventually(
            timeout,
            &format!("{n} calls to {path} at the fake Kik"),
            || async {
                let c = self.calls_to(path);
                (c.len() >= n).then_some(c)
            },
        )
        .await
    }
}

/// A refusal: status and Kik-style body.
struct Refusal(StatusCode, String, String);

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Refusal(StatusCode::BAD_REQUEST, "BadRequest".into(), message.into())
    }
}

/// The username and password of a Basic `Authorization` header.
fn basic(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, key) = text.split_once(':')?;
    Some((user.to_owned(), key.to_owned()))
}

fn is_url(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"))
}

fn non_empty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// Checks that `o` has only `allowed` keys.
fn only(o: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), Refusal> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Refusal::bad(format!("unknown field {k:?} in {what}"))),
        None => Ok(()),
    }
}

fn check_response(r: &Value) -> Result<(), Refusal> {
    let o = r
        .as_object()
        .ok_or_else(|| Refusal::bad("a response must be an object"))?;
    match o.get("type").and_then(Value::as_str) {
        Some("text") => {
            only(o, &["type", "body", "metadata"], "a text response")?;
            if !non_empty_str(o.get("body")) {
                return Err(Refusal::bad("a text response needs a body"));
            }
        }
        Some("friend-picker") => {
            only(
                o,
                &["type", "body", "min", "max", "preselected", "metadata"],
                "a friend-picker response",
            )?;
        }
        Some("picture") => {
            only(o, &["type", "picUrl", "metadata"], "a picture response")?;
            if !o.get("picUrl").is_some_and(is_url) {
                return Err(Refusal::bad("a picture response needs a picUrl"));
            }
        }
        other => return Err(Refusal::bad(format!("unknown response type {other:?}"))),
    }
    Ok(())
}

fn check_keyboard(k: &Value) -> Result<(), Refusal> {
    let o = k
        .as_object()
        .ok_or_else(|| Refusal::bad("a keyboard must be an object"))?;
    only(o, &["type", "to", "hidden", "responses"], "a keyboard")?;
    if o.get("type").and_then(Value::as_str) != Some("suggested") {
        return Err(Refusal::bad("keyboards are of type \"suggested\""));
    }
    if o.get("to").is_some_and(|t| !t.is_string())
        || o.get("hidden").is_some_and(|h| !h.is_boolean())
    {
        return Err(Refusal::bad(
            "a keyboard's to is a username, hidden a boolean",
        ));
    }
    let responses = o
        .get("responses")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Refusal::bad("a suggested keyboard needs responses"))?;
    responses.iter().try_for_each(check_response)
}

/// Checks one message of a send; returns its recipient.
fn check_message(m: &Value) -> Result<String, Refusal> {
    let o = m
        .as_object()
        .ok_or_else(|| Refusal::bad("a message must be an object"))?;
    const COMMON: &[&str] = &[
        "type",
        "to",
        "id",
        "chatId",
        "delay",
        "keyboards",
        "attribution",
    ];
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let (fields, required): (&[&str], &str) = match kind {
        "text" => (&["body", "typeTime"], "body"),
        "picture" => (&["picUrl"], "picUrl"),
        "video" => (
            &["videoUrl", "muted", "autoplay", "loop", "noSave"],
            "videoUrl",
        ),
        "link" => (
            &["url", "title", "text", "picUrl", "noForward", "kikJsData"],
            "url",
        ),
        "is-typing" => (&["isTyping"], "isTyping"),
        "read-receipt" => (&["messageIds"], "messageIds"),
        other => return Err(Refusal::bad(format!("unknown message type {other:?}"))),
    };
    let allowed: Vec<&str> = COMMON.iter().chain(fields).copied().collect();
    only(o, &allowed, &format!("a {kind} message"))?;
    let ok = match required {
        "body" => non_empty_str(o.get("body")),
        "picUrl" | "videoUrl" | "url" => o.get(required).is_some_and(is_url),
        "isTyping" => o.get("isTyping").is_some_and(Value::is_boolean),
        _ => o
            .get("messageIds")
            .and_then(Value::as_array)
            .is_some_and(|ids| !ids.is_empty() && ids.iter().all(Value::is_string)),
    };
    if !ok {
        return Err(Refusal::bad(format!("a {kind} message needs {required}")));
    }
    if o.get("id").is_some_and(|id| !non_empty_str(Some(id))) {
        return Err(Refusal::bad("a message id is a non-empty string"));
    }
    if o.get("chatId").is_some_and(|c| !c.is_string()) {
        return Err(Refusal::bad("chatId is a string"));
    }
    if let Some(k) = o.get("keyboards") {
        k.as_array()
            .ok_or_else(|| Refusal::bad("keyboards is a list"))?
            .iter()
            .try_for_each(check_keyboard)?;
    }
    o.get("to")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Refusal::bad("a message needs to (a username)"))
}

/// Answers a send for `bot`: all of it, or nothing.
fn send(s: &mut Inner, bot: &str, body: &Value) -> Result<Value, Refusal> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::bad("the body must be {\"messages\": [...]}"))?;
    if messages.is_empty() || messages.len() > MAX_PER_REQUEST {
        return Err(Refusal::bad(format!(
            "a request holds 1 to {MAX_PER_REQUEST} messages, not {}",
            messages.len()
        )));
    }
    let mut per_user: Vec<(String, u32)> = Vec::new();
    let mut ids = HashSet::new();
    for m in messages {
        let to = check_message(m)?;
        if let Some(id) = m.get("id").and_then(Value::as_str)
            && !ids.insert(id.to_owned())
        {
            return Err(Refusal::bad(format!("the id {id} is used twice")));
        }
        match per_user.iter_mut().find(|(u, _)| *u == to) {
            Some((_, n)) => *n += 1,
            None => per_user.push((to, 1)),
        }
    }
    if let Some((u, n)) = per_user.iter().find(|(_, n)| *n as usize > MAX_PER_USER) {
        return Err(Refusal::bad(format!(
            "at most {MAX_PER_USER} messages to one user per request, not {n} to {u}"
        )));
    }
    let b = s
        .bots
        .get_mut(bot)
        .ok_or_else(|| Refusal::bad("unknown bot"))?;
    for (user, n) in &per_user {
        let Some(left) = b.users.get(user).filter(|_| !b.blocked.contains(user)) else {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "Forbidden".into(),
                format!("{user} has not chatted with {bot}"),
            ));
        };
        if left < n {
            return Err(Refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimitExceeded".into(),
                format!("the message bank of {user} is empty ({left} left, {n} sent)"),
            ));
        }
    }
    for (user, n) in per_user {
        if let Some(left) = b.users.get_mut(&user) {
            *left -= n;
        }
    }
    Ok(json!({}))
}

/// Answers a configuration write for `bot`.
fn set_config(s: &mut Inner, bot: &str, body: &Value) -> Result<Value, Refusal> {
    let o = body
        .as_object()
        .ok_or_else(|| Refusal::bad("the configuration must be an object"))?;
    only(
        o,
        &["webhook", "features", "staticKeyboard"],
        "the configuration",
    )?;
    if !o.get("webhook").is_some_and(is_url) {
        return Err(Refusal::bad("webhook must be an http(s) URL"));
    }
    let mut config = default_config();
    if let Some(f) = o.get("features") {
        let f = f
            .as_object()
            .ok_or_else(|| Refusal::bad("features must be an object"))?;
        for (k, v) in f {
            if config["features"].get(k).is_none() || !v.is_boolean() {
                return Err(Refusal::bad(format!(
                    "unknown or non-boolean feature {k:?}"
                )));
            }
            config["features"][k] = v.clone();
        }
    }
    if let Some(k) = o.get("staticKeyboard").filter(|k| !k.is_null()) {
        check_keyboard(k)?;
        config["staticKeyboard"] = k.clone();
    }
    config["webhook"] = o["webhook"].clone();
    let b = s
        .bots
        .get_mut(bot)
        .ok_or_else(|| Refusal::bad("unknown bot"))?;
    b.config = config.clone();
    Ok(config)
}

/// Answers a profile lookup by `bot`.
fn profile(s: &Inner, bot: &str, user: &str) -> Result<Value, Refusal> {
    let known = s.bots.get(bot).is_some_and(|b| b.users.contains_key(user));
    if !known {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            "NotFound".into(),
            format!("{user} is not a subscriber of {bot}"),
        ));
    }
    Ok(s.profiles.get(user).cloned().unwrap_or_else(|| {
        json!({"firstName": "", "lastName": "", "profilePicUrl": null,
               "profilePicLastModified": null, "timezone": null})
    }))
}

/// A 500 drawn at random for a send, as [`FakeKik::fail_randomly`] set it.
fn random_failure(s: &mut Inner, method: &str, route_path: &str, body: &Value) -> Option<Failure> {
    if method != "POST" || route_path != MESSAGE_PATH {
        return None;
    }
    s.random_server_errors
        .roll(body.to_string().as_bytes())
        .map(|_| Failure::ServerError)
}

fn refusal_response(r: Refusal, retry_after: Option<u64>) -> Response {
    let mut response = (r.0, Json(json!({"error": r.1, "message": r.2}))).into_response();
    if let Some(after) = retry_after
        && let Ok(v) = after.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

async fn handle(State(inner): State<Shared>, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let credentials = basic(req.headers());
    let body: Value = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let mut s = lock(&inner);
    let bot = credentials.as_ref().and_then(|(user, key)| {
        s.bots
            .get(user)
            .is_some_and(|b| &b.api_key == key)
            .then(|| user.clone())
    });
    let route_path = if path.starts_with(USER_PATH) {
        USER_PATH
    } else {
        path.as_str()
    };
    let known = matches!(
        (method.as_str(), route_path),
        ("POST", MESSAGE_PATH) | ("GET" | "POST", CONFIG_PATH) | ("GET", USER_PATH)
    );
    let (result, retry_after) = if !known {
        (
            Err(Refusal(
                StatusCode::NOT_FOUND,
                "NotFound".into(),
                "no such route".into(),
            )),
            None,
        )
    } else if let Some(bot) = &bot {
        let queued = s
            .failures
            .iter()
            .position(|(p, _)| p == route_path)
            .and_then(|i| s.failures.remove(i))
            .map(|(_, f)| f)
            .or_else(|| random_failure(&mut s, &method, route_path, &body));
        match queued {
            Some(Failure::TooManyRequests { retry_after }) => (
                Err(Refusal(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RateLimitExceeded".into(),
                    "too many requests for the bot".into(),
                )),
                retry_after,
            ),
            Some(Failure::ServerError) => (
                Err(Refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError".into(),
                    "internal error".into(),
                )),
                None,
            ),
            Some(Failure::Status(code)) => (
                Err(Refusal(
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    "Error".into(),
                    format!("injected status {code}"),
                )),
                None,
            ),
            None => {
                let r = match (method.as_str(), route_path) {
                    ("POST", MESSAGE_PATH) => send(&mut s, bot, &body),
                    ("POST", CONFIG_PATH) => set_config(&mut s, bot, &body),
                    ("GET", CONFIG_PATH) => Ok(s
                        .bots
                        .get(bot)
                        .map_or_else(default_config, |b| b.config.clone())),
                    _ => profile(&s, bot, &path[USER_PATH.len()..]),
                };
                (r, None)
            }
        }
    } else {
        (
            Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "Unauthorized".into(),
                "unknown bot username or API key".into(),
            )),
            None,
        )
    };
    let response = match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => refusal_response(r, retry_after),
    };
    s.calls.push(Call {
        method,
        path,
        username: credentials.map(|(u, _)| u),
        authorized: bot.is_some(),
        body,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "fake.bot";
    const KEY: &str = "k-1";

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::http_client()
    }

    async fn post(kik: &FakeKik, path: &str, key: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(format!("{}{path}", kik.base_url()))
            .basic_auth(BOT, Some(key))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(kik: &FakeKik, path: &str) -> (u16, Value) {
        let r = client()
            .get(format!("{}{path}", kik.base_url()))
            .basic_auth(BOT, Some(KEY))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    fn text(to: &str, body: &str) -> Value {
        json!({"type": "text", "to": to, "body": body})
    }

    async fn started() -> FakeKik {
        let kik = FakeKik::start().await;
        kik.add_bot(BOT, KEY);
        kik.add_user(BOT, "ana");
        kik
    }

    #[tokio::test]
    async fn sends_need_the_bots_key_and_a_user_who_chatted() {
        let kik = started().await;
        let one = json!({"messages": [text("ana", "hi")]});
        assert_eq!(post(&kik, MESSAGE_PATH, "wrong", one.clone()).await.0, 401);
        assert_eq!(post(&kik, MESSAGE_PATH, KEY, one).await, (200, json!({})));
        let stranger = json!({"messages": [text("bob", "hi")]});
        assert_eq!(post(&kik, MESSAGE_PATH, KEY, stranger).await.0, 403);
        kik.block_user(BOT, "ana");
        let blocked = json!({"messages": [text("ana", "hi")]});
        assert_eq!(post(&kik, MESSAGE_PATH, KEY, blocked).await.0, 403);
        let calls = kik.calls_to(MESSAGE_PATH);
        assert_eq!(
            calls
                .iter()
                .map(|c| (c.status, c.authorized))
                .collect::<Vec<_>>(),
            [(401, false), (200, true), (403, true), (403, true)]
        );
        assert_eq!(kik.messages(), [text("ana", "hi")]);
    }

    #[tokio::test]
    async fn request_shapes_are_checked() {
        let kik = started().await;
        kik.add_user(BOT, "bob");
        let six: Vec<Value> = (0..6).map(|i| text("ana", &i.to_string())).collect();
        let too_many: Vec<Value> = (0..26)
            .map(|i| text(if i % 2 == 0 { "ana" } else { "bob" }, "x"))
            .collect();
        let bad = [
            json!({"messages": []}),
            json!({"messages": six}),
            json!({"messages": too_many}),
            json!({"messages": [{"type": "sticker", "to": "ana", "stickerUrl": "https://s"}]}),
            json!({"messages": [{"type": "text", "to": "ana"}]}),
            json!({"messages": [{"type": "text", "to": "ana", "body": "x", "colour": "red"}]}),
            json!({"messages": [{"type": "picture", "to": "ana", "picUrl": "nope"}]}),
            json!({"messages": [text("ana", "a"), {"type": "text", "to": "ana", "body": "b", "id": 5}]}),
            json!({"messages": [{"type": "text", "to": "ana", "body": "x", "id": "1"},
                                {"type": "text", "to": "ana", "body": "y", "id": "1"}]}),
            json!({"messages": [{"type": "text", "to": "ana", "body": "x",
                                 "keyboards": [{"type": "static", "responses": [{"type": "text", "body": "a"}]}]}]}),
            json!({"messages": [{"type": "text", "to": "ana", "body": "x",
                                 "keyboards": [{"type": "suggested", "responses": [{"type": "text"}]}]}]}),
            json!({"messages": [{"type": "text", "body": "x"}]}),
        ];
        for body in bad {
            assert_eq!(
                post(&kik, MESSAGE_PATH, KEY, body.clone()).await.0,
                400,
                "{body}"
            );
        }
        let five_each: Vec<Value> = (0..10)
            .map(|i| text(if i < 5 { "ana" } else { "bob" }, "x"))
            .collect();
        let keyboard = json!({"type": "text", "to": "ana", "body": "Pick", "id": "m-1",
            "keyboards": [{"type": "suggested", "responses": [
                {"type": "text", "body": "Yes", "metadata": "YES"}, {"type": "text", "body": "No"}]}]});
        assert_eq!(
            post(&kik, MESSAGE_PATH, KEY, json!({"messages": five_each}))
                .await
                .0,
            200
        );
        assert_eq!(
            post(&kik, MESSAGE_PATH, KEY, json!({"messages": [keyboard]}))
                .await
                .0,
            200
        );
        assert_eq!(kik.messages().len(), 11);
    }

    #[tokio::test]
    async fn the_bank_empties_and_the_users_messages_refill_it() {
        let kik = started().await;
        kik.set_bank(BOT, "ana", 2);
        let three = json!({"messages": [text("ana", "1"), text("ana", "2"), text("ana", "3")]});
        let (status, body) = post(&kik, MESSAGE_PATH, KEY, three).await;
        assert_eq!(status, 429);
        assert!(body["message"].as_str().unwrap().contains("bank"), "{body}");
        assert_eq!(
            kik.bank(BOT, "ana"),
            Some(2),
            "a refused request withdraws nothing"
        );
        let two = json!({"messages": [text("ana", "1"), text("ana", "2")]});
        assert_eq!(post(&kik, MESSAGE_PATH, KEY, two).await.0, 200);
        assert_eq!(kik.bank(BOT, "ana"), Some(0));
        kik.add_user(BOT, "ana");
        assert_eq!(kik.bank(BOT, "ana"), Some(1));
    }

    #[tokio::test]
    async fn config_is_stored_per_bot_and_profiles_need_a_subscriber() {
        let kik = started().await;
        assert_eq!(get(&kik, CONFIG_PATH).await, (200, default_config()));
        let config = json!({"webhook": "https://pb.example/webhooks/kik/ch_1",
            "features": {"receiveReadReceipts": true, "receiveDeliveryReceipts": true,
                         "receiveIsTyping": false, "manuallySendReadReceipts": false}});
        let (status, set) = post(&kik, CONFIG_PATH, KEY, config.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(set["webhook"], config["webhook"]);
        assert_eq!(get(&kik, CONFIG_PATH).await.1, set);
        assert_eq!(kik.config(BOT), Some(set));
        let unknown = json!({"webhook": "https://x", "features": {"teleport": true}});
        assert_eq!(post(&kik, CONFIG_PATH, KEY, unknown).await.0, 400);

        kik.set_profile("ana", json!({"firstName": "Ana", "lastName": "Lima"}));
        assert_eq!(get(&kik, "/v1/user/ana").await.1["firstName"], "Ana");
        assert_eq!(get(&kik, "/v1/user/bob").await.0, 404);

        kik.fail_next(CONFIG_PATH, [Failure::ServerError]);
        assert_eq!(
            get(&kik, "/v1/user/ana").await.0,
            200,
            "queued for another path"
        );
        assert_eq!(get(&kik, CONFIG_PATH).await.0, 500);
        assert_eq!(get(&kik, CONFIG_PATH).await.0, 200);
    }

    #[tokio::test]
    async fn sends_fail_at_random_as_set() {
        let kik = started().await;
        kik.set_bank(BOT, "ana", 1000);
        let one = json!({"messages": [text("ana", "hi")]});
        kik.fail_randomly(1000);
        assert_eq!(post(&kik, MESSAGE_PATH, KEY, one.clone()).await.0, 500);
        assert_eq!(get(&kik, CONFIG_PATH).await.0, 200, "only sends fail");
        assert_eq!(
            post(&kik, MESSAGE_PATH, "wrong", one.clone()).await.0,
            401,
            "credentials are checked first"
        );
        kik.fail_randomly(500);
        let mut statuses = HashSet::new();
        for _ in 0..200 {
            statuses.insert(post(&kik, MESSAGE_PATH, KEY, one.clone()).await.0);
        }
        assert_eq!(statuses, HashSet::from([200, 500]));
        kik.fail_randomly(0);
        assert_eq!(post(&kik, MESSAGE_PATH, KEY, one).await.0, 200);
        let accepted = u32::try_from(kik.accepted(MESSAGE_PATH).len()).unwrap();
        assert_eq!(
            kik.bank(BOT, "ana"),
            Some(1000 - accepted),
            "a 500 withdraws nothing"
        );
    }
}
