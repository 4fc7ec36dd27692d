//! A fake Viber REST bot API (`chatapi.viber.com`, `reference/platforms.md` §7) speaking its
//! wire format: `POST /pa/<method>` with `X-Viber-Auth-Token`, checked per bot, answering HTTP
//! 200 with `{"status": 0, "status_message": "ok", …}` or a refusal's `status` (§7.5):
//! `send_message` (answering a `message_token`), `set_webhook` (which posts Viber's signed
//! `webhook` check callback to the URL and fails with status 1 unless it gets 200),
//! `get_account_info` (with the webhook) and `get_user_details` (at most twice per user in 12
//! hours, then status 12).
//!
//! Request shapes are checked strictly: known message types with their required fields and no
//! unknown ones, a `sender` with a name of at most 28 characters, keyboards and rich media of
//! known button types within Viber's columns and rows, `tracking_data` of at most 4,000
//! characters, requests of at most 30 KB (refusals: status 3 `badData`, 4 `missingData`). A bot
//! may message only its subscribers ([`FakeViber::add_subscriber`]; the harness adds every
//! user it posts a callback for), else status 6. Failures (a Viber status or an HTTP status)
//! can be queued per path. Every call is recorded, refused ones too, with the status answered.
//!
//! The check callback goes to the webhook URL, or, after [`FakeViber::deliver_via`], to the
//! same path on another base URL (tests: the ingress, standing in for the public host).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};

/// Sending messages.
pub const SEND_PATH: &str = "/pa/send_message";
/// `broadcast_message`: one message to up to [`BROADCAST_MAX`] subscribers.
pub const BROADCAST_PATH: &str = "/pa/broadcast_message";
/// Users per broadcast at most.
pub const BROADCAST_MAX: usize = 300;
/// Setting the webhook.
pub const SET_WEBHOOK_PATH: &str = "/pa/set_webhook";
/// The account's details.
pub const ACCOUNT_INFO_PATH: &str = "/pa/get_account_info";
/// A user's details.
pub const USER_DETAILS_PATH: &str = "/pa/get_user_details";
/// The auth header.
pub const AUTH_HEADER: &str = "x-viber-auth-token";
/// The largest request taken.
pub const MAX_REQUEST_BYTES: usize = 30 * 1024;
/// `get_user_details` lookups per user in 12 hours.
pub const USER_DETAILS_PER_12H: usize = 2;

/// One API call the fake received, refused or not.
#[derive(Debug, Clone)]
pub struct Call {
    /// The path, e.g. `/pa/send_message`.
    pub path: String,
    /// The auth token given, if any.
    pub token: Option<String>,
    /// Whether the token was a known bot's.
    pub authorized: bool,
    /// The JSON body (`Null` when not JSON).
    pub body: Value,
    /// The HTTP status answered.
    pub http_status: u16,
    /// Viber's `status` answered (`None` for HTTP failures).
    pub status: Option<i64>,
    /// The `message_token` answered to a send or a broadcast.
    pub message_token: Option<u64>,
    /// The subscribers a broadcast reached (empty for other calls).
    pub delivered_to: Vec<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A failure to answer instead of the normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 200 with this Viber `status` (e.g. 12 tooManyRequests, 6 receiverNotSubscribed).
    Status(i64),
    /// This HTTP status (500, 429, …) with a plain body.
    Http(u16),
}

struct Bot {
    name: String,
    webhook: String,
    event_types: Vec<String>,
    subscribers: HashSet<String>,
}

#[derive(Default)]
struct Inner {
    bots: HashMap<String, Bot>,
    profiles: HashMap<String, Value>,
    lookups: HashMap<String, Vec<Instant>>,
    failures: VecDeque<(String, Failure)>,
    random_server_errors: crate::flaky::RandomFailures,
    deliver_via: Option<String>,
    next_token: u64,
    calls: Vec<Call>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake. Stops when dropped.
pub struct FakeViber {
    addr: SocketAddr,
    inner: Shared,
    _server: tokio::task::JoinHandle<()>,
}

/// The names of Viber's statuses (§7.5).
pub fn status_name(status: i64) -> &'static str {
    match status {
        0 => "ok",
        1 => "invalidUrl",
        2 => "invalidAuthToken",
        3 => "badData",
        4 => "missingData",
        5 => "receiverNotRegistered",
        6 => "receiverNotSubscribed",
        7 => "publicAccountBlocked",
        8 => "publicAccountNotFound",
        9 => "publicAccountSuspended",
        10 => "webhookNotSet",
        11 => "receiverNoSuitableDevice",
        12 => "tooManyRequests",
        13 => "apiVersionNotSupported",
        14 => "incompatibleWithVersion",
        15 => "publicAccountNotAuthorized",
        16 => "inboxMessageStateMismatch",
        17 => "unsupportedMessageType",
        18 => "messageRateExceeded",
        19 => "editMessageFailed",
        20 => "unsupportedMedia",
        _ => "generalError",
    }
}

/// `X-Viber-Content-Signature` of `body` under `token`: lowercase hex HMAC-SHA256.
pub fn signature(token: &str, body: &[u8]) -> String {
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FakeViber {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: &str) -> Self {
        let inner: Shared = Arc::new(Mutex::new(Inner {
            next_token: 5_741_311_803_571_721_000,
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake viber");
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

    /// The base URL to give a channel as `api_base_url` (paths are `/pa/…`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Adds the bot with auth token `token`, named `name`.
    pub fn add_bot(&self, token: &str, name: &str) {
        self.lock().bots.insert(
            token.to_owned(),
            Bot {
                name: name.to_owned(),
                webhook: String::new(),
                event_types: Vec::new(),
                subscribers: HashSet::new(),
            },
        );
    }

    /// `user` subscribed to (or wrote to) the bot: the bot may message them.
    pub fn add_subscriber(&self, token: &str, user: &str) {
        if let Some(b) = self.lock().bots.get_mut(token) {
            b.subscribers.insert(user.to_owned());
        }
    }

    /// `user` unsubscribed: messages to them answer status 6.
    pub fn remove_subscriber(&self, token: &str, user: &str) {
        if let Some(b) = self.lock().bots.get_mut(token) {
            b.subscribers.remove(user);
        }
    }

    /// `user`'s details as `get_user_details` answers them (`name`, `avatar`, `language`, …).
    pub fn set_profile(&self, user: &str, profile: Value) {
        self.lock().profiles.insert(user.to_owned(), profile);
    }

    /// The bot's webhook (`""` when none).
    pub fn webhook(&self, token: &str) -> Option<String> {
        self.lock().bots.get(token).map(|b| b.webhook.clone())
    }

    /// Posts check callbacks to `base` (with the webhook URL's path) instead of the URL's own
    /// host, as a public load balancer would route them.
    pub fn deliver_via(&self, base: &str) {
        self.lock().deliver_via = Some(base.trim_end_matches('/').to_owned());
    }

    /// Answers the next calls to `path` with `failures`, in order.
    pub fn fail_next(&self, path: &str, failures: impl IntoIterator<Item = Failure>) {
        let mut s = self.lock();
        for f in failures {
            s.failures.push_back((path.to_owned(), f));
        }
    }

    /// Answers this many sends per thousand with HTTP 500, at random (chaos tests).
    /// One message fails at most [`crate::flaky::MAX_IN_A_ROW`] times in a row.
    pub fn fail_randomly(&self, server_error_per_mille: u32) {
        self.lock().random_server_errors.set(server_error_per_mille);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls to `path`.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    /// The messages Viber accepted (status 0), in order: each send's body, and a broadcast's
    /// body once per subscriber it reached, with that `receiver` in place of its
    /// `broadcast_list`.
    pub fn messages(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c.status == Some(0))
            .flat_map(|c| match c.path.as_str() {
                SEND_PATH => vec![c.body],
                BROADCAST_PATH => c
                    .delivered_to
                    .iter()
                    .map(|to| {
                        let mut m = c.body.clone();
                        if let Some(o) = m.as_object_mut() {
                            o.remove("broadcast_list");
                            o.insert("receiver".into(), json!(to));
                        }
                        m
                    })
                    .collect(),
                _ => vec![],
            })
            .collect()
    }

    /// Waits until `path` got `n` calls; returns them.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Call> {
        crate::eventually(
            timeout,
            &format!("{n} calls to {path} at the fake Viber"),
            || async {
                let c = self.calls_to(path);
                (c.len() >= n).then_some(c)
            },
        )
        .await
    }
}

/// A refusal: Viber's status and why.
struct Refusal(i64, String);

fn bad(why: impl Into<String>) -> Refusal {
    Refusal(3, why.into())
}

fn missing(why: impl Into<String>) -> Refusal {
    Refusal(4, why.into())
}

fn only(o: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), Refusal> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("unknown field {k:?} in {what}"))),
        None => Ok(()),
    }
}

fn is_url(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"))
}

fn is_str(v: Option<&Value>) -> bool {
    v.is_some_and(Value::is_string)
}

fn check_button(b: &Value, max_rows: u64) -> Result<(), Refusal> {
    let o = b
        .as_object()
        .ok_or_else(|| bad("a button must be an object"))?;
    only(
        o,
        &[
            "Columns",
            "Rows",
            "ActionType",
            "ActionBody",
            "Text",
            "Silent",
            "Image",
            "TextHAlign",
            "TextVAlign",
            "BgColor",
            "TextSize",
        ],
        "a button",
    )?;
    let action = o
        .get("ActionType")
        .and_then(Value::as_str)
        .unwrap_or("reply");
    if ![
        "reply",
        "open-url",
        "none",
        "location-picker",
        "share-phone",
    ]
    .contains(&action)
    {
        return Err(bad(format!("unknown ActionType {action:?}")));
    }
    if action != "none"
        && o.get("ActionBody")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(missing("a button needs an ActionBody"));
    }
    if action == "open-url" && !is_url(o.get("ActionBody")) {
        return Err(bad("an open-url button's ActionBody is a URL"));
    }
    let within = |k: &str, max: u64| {
        o.get(k)
            .is_none_or(|v| v.as_u64().is_some_and(|n| (1..=max).contains(&n)))
    };
    if !within("Columns", 6) || !within("Rows", max_rows) {
        return Err(bad(format!("Columns are 1 to 6, Rows 1 to {max_rows}")));
    }
    if o.get("Silent").is_some_and(|s| !s.is_boolean())
        || (o.get("Image").is_some() && !is_url(o.get("Image")))
    {
        return Err(bad("Silent is a boolean, Image a URL"));
    }
    if o.get("Text").is_some_and(|t| !t.is_string()) {
        return Err(bad("Text is a string"));
    }
    Ok(())
}

fn check_keyboard(k: &Value) -> Result<(), Refusal> {
    let o = k
        .as_object()
        .ok_or_else(|| bad("a keyboard must be an object"))?;
    only(
        o,
        &[
            "Type",
            "DefaultHeight",
            "BgColor",
            "Buttons",
            "InputFieldState",
        ],
        "a keyboard",
    )?;
    if o.get("Type").and_then(Value::as_str) != Some("keyboard") {
        return Err(bad("a keyboard's Type is \"keyboard\""));
    }
    let buttons = o
        .get("Buttons")
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| missing("a keyboard needs Buttons"))?;
    buttons.iter().try_for_each(|b| check_button(b, 2))
}

fn check_rich_media(r: &Value) -> Result<(), Refusal> {
    let o = r
        .as_object()
        .ok_or_else(|| bad("rich_media must be an object"))?;
    only(
        o,
        &[
            "Type",
            "ButtonsGroupColumns",
            "ButtonsGroupRows",
            "BgColor",
            "Buttons",
        ],
        "rich_media",
    )?;
    if o.get("Type").and_then(Value::as_str) != Some("rich_media") {
        return Err(bad("rich_media's Type is \"rich_media\""));
    }
    let rows = o
        .get("ButtonsGroupRows")
        .and_then(Value::as_u64)
        .filter(|r| (1..=7).contains(r))
        .ok_or_else(|| bad("ButtonsGroupRows is 1 to 7"))?;
    if !o
        .get("ButtonsGroupColumns")
        .and_then(Value::as_u64)
        .is_some_and(|c| (1..=6).contains(&c))
    {
        return Err(bad("ButtonsGroupColumns is 1 to 6"));
    }
    let buttons = o
        .get("Buttons")
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| missing("rich_media needs Buttons"))?;
    buttons.iter().try_for_each(|b| check_button(b, rows))?;
    // Each card (a column group of full-width buttons) fills the group's rows exactly.
    let total: u64 = buttons
        .iter()
        .map(|b| b.get("Rows").and_then(Value::as_u64).unwrap_or(1))
        .sum();
    if !total.is_multiple_of(rows) || total / rows > 6 {
        return Err(bad(format!(
            "the buttons' rows ({total}) do not fill whole cards of {rows} rows (at most 6)"
        )));
    }
    Ok(())
}

/// Checks one `send_message` body; returns the receiver.
fn check_message(m: &Value) -> Result<String, Refusal> {
    let o = m
        .as_object()
        .ok_or_else(|| bad("the body must be an object"))?;
    const COMMON: &[&str] = &[
        "receiver",
        "type",
        "sender",
        "tracking_data",
        "min_api_version",
        "keyboard",
        "chat_id",
    ];
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let fields: &[&str] = match kind {
        "text" => &["text"],
        "picture" => &["media", "text", "thumbnail"],
        "video" => &["media", "size", "duration", "thumbnail"],
        "file" => &["media", "size", "file_name"],
        "contact" => &["contact"],
        "location" => &["location"],
        "url" => &["media"],
        "sticker" => &["sticker_id"],
        "rich_media" => &["rich_media", "alt_text"],
        other => return Err(bad(format!("unknown message type {other:?}"))),
    };
    let allowed: Vec<&str> = COMMON.iter().chain(fields).copied().collect();
    only(o, &allowed, &format!("a {kind} message"))?;
    let ok = match kind {
        "text" => o
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty() && t.chars().count() <= 7000),
        "picture" => is_url(o.get("media")) && is_str(o.get("text")),
        "video" => is_url(o.get("media")) && o.get("size").is_some_and(Value::is_u64),
        "file" => {
            is_url(o.get("media"))
                && o.get("size").is_some_and(Value::is_u64)
                && is_str(o.get("file_name"))
        }
        "url" => is_url(o.get("media")),
        "sticker" => o.get("sticker_id").is_some_and(Value::is_u64),
        "location" => {
            m.pointer("/location/lat").is_some_and(Value::is_number)
                && m.pointer("/location/lon").is_some_and(Value::is_number)
        }
        "contact" => {
            is_str(m.pointer("/contact/name")) && is_str(m.pointer("/contact/phone_number"))
        }
        _ => true,
    };
    if !ok {
        return Err(missing(format!(
            "a {kind} message lacks or mistypes its fields"
        )));
    }
    if kind == "rich_media" {
        check_rich_media(o.get("rich_media").unwrap_or(&Value::Null))?;
    }
    let sender = o
        .get("sender")
        .and_then(Value::as_object)
        .ok_or_else(|| missing("a message needs a sender"))?;
    only(sender, &["name", "avatar"], "the sender")?;
    if !sender
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty() && n.chars().count() <= 28)
    {
        return Err(bad("sender.name is 1 to 28 characters"));
    }
    if sender.get("avatar").is_some() && !is_url(sender.get("avatar")) {
        return Err(bad("sender.avatar is a URL"));
    }
    if o.get("tracking_data")
        .is_some_and(|t| t.as_str().is_none_or(|t| t.chars().count() > 4000))
    {
        return Err(bad("tracking_data is a string of at most 4000 characters"));
    }
    if o.get("min_api_version").is_some_and(|v| !v.is_u64()) {
        return Err(bad("min_api_version is a number"));
    }
    if let Some(k) = o.get("keyboard") {
        check_keyboard(k)?;
    }
    o.get("receiver")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| missing("a message needs a receiver"))
}

fn ok(fields: Value) -> Value {
    let mut v = json!({"status": 0, "status_message": "ok"});
    if let (Some(o), Value::Object(f)) = (v.as_object_mut(), fields) {
        o.extend(f);
    }
    v
}

/// Posts `body` to `url` over plain HTTP/1.1 with the signature header; the status answered.
async fn post_callback(url: &str, token: &str, body: &[u8]) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("the fake posts check callbacks over http only, not to {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("cannot reach {host}: {e}"))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Viber-Content-Signature: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        signature(token, body)
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_owned())
}

async fn set_webhook(inner: &Shared, token: &str, body: &Value) -> Result<Value, Refusal> {
    let o = body
        .as_object()
        .ok_or_else(|| bad("the body must be an object"))?;
    only(
        o,
        &["url", "event_types", "send_name", "send_photo"],
        "set_webhook",
    )?;
    let url = o
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("set_webhook needs a url"))?
        .to_owned();
    let known = [
        "delivered",
        "seen",
        "failed",
        "subscribed",
        "unsubscribed",
        "conversation_started",
        "message",
    ];
    let event_types: Vec<String> = match o.get("event_types") {
        None => known.iter().map(|s| (*s).to_owned()).collect(),
        Some(v) => v
            .as_array()
            .ok_or_else(|| bad("event_types is a list"))?
            .iter()
            .map(|e| {
                e.as_str()
                    .filter(|e| known.contains(e))
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("unknown event type {e}")))
            })
            .collect::<Result<_, _>>()?,
    };
    for k in ["send_name", "send_photo"] {
        if o.get(k).is_some_and(|v| !v.is_boolean()) {
            return Err(bad(format!("{k} is a boolean")));
        }
    }
    if !url.is_empty() {
        if !is_url(o.get("url")) {
            return Err(Refusal(1, format!("invalid url {url:?}")));
        }
        let (target, check) = {
            let mut s = lock(inner);
            s.next_token += 1;
            let check = json!({"event": "webhook", "timestamp": chrono::Utc::now().timestamp_millis(),
                               "chat_hostname": "SN-CALLBACK-01_", "message_token": s.next_token});
            let target = match &s.deliver_via {
                Some(base) => {
                    let path = url
                        .split_once("://")
                        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                        .unwrap_or("/");
                    format!("{base}{path}")
                }
                None => url.clone(),
            };
            (target, check)
        };
        let raw = serde_json::to_vec(&check).unwrap_or_default();
        match post_callback(&target, token, &raw).await {
            Ok(200) => {}
            Ok(status) => {
                return Err(Refusal(
                    1,
                    format!("Result[HttpResponse[{status}]] from the webhook check of {url}"),
                ));
            }
            Err(e) => {
                return Err(Refusal(
                    1,
                    format!("the webhook check of {url} failed: {e}"),
                ));
            }
        }
    }
    let mut s = lock(inner);
    let b = s
        .bots
        .get_mut(token)
        .ok_or_else(|| Refusal(2, "invalid auth token".into()))?;
    b.webhook = url.clone();
    b.event_types = if url.is_empty() {
        Vec::new()
    } else {
        event_types.clone()
    };
    Ok(ok(json!({ "event_types": event_types })))
}

fn user_details(s: &mut Inner, token: &str, body: &Value) -> Result<Value, Refusal> {
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| missing("get_user_details needs an id"))?
        .to_owned();
    let subscribed = s
        .bots
        .get(token)
        .is_some_and(|b| b.subscribers.contains(&id));
    if !subscribed {
        return Err(Refusal(5, format!("{id} is not a user of this bot")));
    }
    let now = Instant::now();
    let times = s.lookups.entry(id.clone()).or_default();
    times.retain(|t| now.duration_since(*t) < Duration::from_secs(12 * 3600));
    if times.len() >= USER_DETAILS_PER_12H {
        return Err(Refusal(
            12,
            "get_user_details: at most 2 requests per user in 12 hours".into(),
        ));
    }
    times.push(now);
    s.next_token += 1;
    let mut user = json!({"id": id, "name": "Subscriber", "country": "PT", "language": "pt",
                          "primary_device_os": "Android 14", "api_version": 10,
                          "viber_version": "24.1.0.0", "mcc": 268, "mnc": 6, "device_type": "phone"});
    if let (Some(u), Some(Value::Object(p))) = (user.as_object_mut(), s.profiles.get(&id)) {
        u.extend(p.clone());
    }
    Ok(ok(json!({"message_token": s.next_token, "user": user})))
}

/// `broadcast_message`: a message as `send_message` takes it, with `broadcast_list` (1 to
/// [`BROADCAST_MAX`] ids) instead of `receiver`. Subscribers get it (`delivered_to`); the
/// others are answered in `failed_list` with status 6, as Viber does.
fn broadcast(
    s: &mut Inner,
    token: &str,
    body: &Value,
    delivered_to: &mut Vec<String>,
) -> Result<Value, Refusal> {
    let list: Vec<String> = body
        .get("broadcast_list")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("a broadcast needs a broadcast_list"))?
        .iter()
        .map(|v| v.as_str().filter(|id| !id.is_empty()).map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("broadcast_list holds user ids"))?;
    if list.is_empty() || list.len() > BROADCAST_MAX {
        return Err(bad(format!(
            "broadcast_list holds 1 to {BROADCAST_MAX} ids, not {}",
            list.len()
        )));
    }
    if body.get("receiver").is_some() {
        return Err(bad("a broadcast has a broadcast_list, not a receiver"));
    }
    let mut message = body.clone();
    if let Some(o) = message.as_object_mut() {
        o.remove("broadcast_list");
        o.insert("receiver".into(), json!(list[0]));
    }
    check_message(&message)?;
    let b = s
        .bots
        .get(token)
        .ok_or_else(|| Refusal(2, "invalid auth token".into()))?;
    if b.webhook.is_empty() {
        return Err(Refusal(10, "webhook not set".into()));
    }
    let mut failed = Vec::new();
    for id in list {
        if b.subscribers.contains(&id) {
            delivered_to.push(id);
        } else {
            failed.push(json!({"receiver": id, "status": 6,
                               "status_message": status_name(6)}));
        }
    }
    s.next_token += 1;
    Ok(ok(json!({"message_token": s.next_token,
                 "chat_hostname": "SN-CHAT-05_",
                 "failed_list": failed})))
}

fn random_failure(s: &mut Inner, path: &str, body: &[u8]) -> Option<Failure> {
    if path != SEND_PATH && path != BROADCAST_PATH {
        return None;
    }
    s.random_server_errors
        .roll(body)
        .map(|_| Failure::Http(500))
}

async fn handle(State(inner): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let is_post = req.method() == axum::http::Method::POST;
    let token = req
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let raw = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let (authorized, queued) = {
        let mut s = lock(&inner);
        let authorized = token.as_ref().is_some_and(|t| s.bots.contains_key(t));
        let queued = if authorized {
            s.failures
                .iter()
                .position(|(p, _)| *p == path)
                .and_then(|i| s.failures.remove(i))
                .map(|(_, f)| f)
                .or_else(|| random_failure(&mut s, &path, &raw))
        } else {
            None
        };
        (authorized, queued)
    };
    let known = is_post
        && [
            SEND_PATH,
            BROADCAST_PATH,
            SET_WEBHOOK_PATH,
            ACCOUNT_INFO_PATH,
            USER_DETAILS_PATH,
        ]
        .contains(&path.as_str());
    let mut delivered_to = Vec::new();
    let result: Result<Value, Refusal> = if !known {
        let response = (axum::http::StatusCode::NOT_FOUND, "no such method").into_response();
        record(&inner, &path, token, authorized, body, 404, None, None);
        return response;
    } else if let Some(Failure::Http(code)) = queued {
        record(&inner, &path, token, authorized, body, code, None, None);
        let status = axum::http::StatusCode::from_u16(code)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "injected failure").into_response();
    } else if let Some(Failure::Status(n)) = queued {
        Err(Refusal(n, format!("injected {}", status_name(n))))
    } else if token.is_none() {
        Err(Refusal(2, "missing_auth_token".into()))
    } else if !authorized {
        Err(Refusal(2, "invalid auth token".into()))
    } else if raw.len() > MAX_REQUEST_BYTES {
        Err(bad(format!(
            "the request is {} bytes, over 30 KB",
            raw.len()
        )))
    } else {
        let t = token.clone().unwrap_or_default();
        match path.as_str() {
            SET_WEBHOOK_PATH => set_webhook(&inner, &t, &body).await,
            _ => {
                let mut s = lock(&inner);
                match path.as_str() {
                    SEND_PATH => check_message(&body).and_then(|receiver| {
                        let b = s
                            .bots
                            .get(&t)
                            .ok_or_else(|| Refusal(2, "invalid auth token".into()))?;
                        if b.webhook.is_empty() {
                            return Err(Refusal(10, "webhook not set".into()));
                        }
                        if !b.subscribers.contains(&receiver) {
                            return Err(Refusal(6, format!("{receiver} is not subscribed")));
                        }
                        s.next_token += 1;
                        Ok(ok(
                            json!({"message_token": s.next_token, "chat_hostname": "SN-CHAT-05_"}),
                        ))
                    }),
                    BROADCAST_PATH => broadcast(&mut s, &t, &body, &mut delivered_to),
                    ACCOUNT_INFO_PATH => {
                        let b = s.bots.get(&t);
                        Ok(ok(json!({
                            "id": format!("pa:{}", t.len()),
                            "name": b.map(|b| b.name.clone()),
                            "uri": b.map(|b| b.name.to_lowercase()),
                            "icon": "https://media-direct.cdn.viber.com/pg_download?id=1",
                            "category": "Entertainment",
                            "country": "PT",
                            "webhook": b.map(|b| b.webhook.clone()).unwrap_or_default(),
                            "event_types": b.map(|b| b.event_types.clone()).unwrap_or_default(),
                            "subscribers_count": b.map_or(0, |b| b.subscribers.len()),
                        })))
                    }
                    _ => user_details(&mut s, &t, &body),
                }
            }
        }
    };
    let (answer, status, token_answered) = match result {
        Ok(a) => {
            let tok = a.get("message_token").and_then(Value::as_u64);
            let sends = path == SEND_PATH || path == BROADCAST_PATH;
            (a, 0, if sends { tok } else { None })
        }
        Err(Refusal(n, why)) => (
            json!({"status": n, "status_message": format!("{}: {why}", status_name(n))}),
            n,
            None,
        ),
    };
    record(
        &inner,
        &path,
        token,
        authorized,
        body,
        200,
        Some(status),
        token_answered,
    );
    if status == 0 && !delivered_to.is_empty() {
        let mut s = lock(&inner);
        if let Some(call) = s.calls.last_mut() {
            call.delivered_to = delivered_to;
        }
    }
    Json(answer).into_response()
}

#[allow(clippy::too_many_arguments)]
fn record(
    inner: &Shared,
    path: &str,
    token: Option<String>,
    authorized: bool,
    body: Value,
    http_status: u16,
    status: Option<i64>,
    message_token: Option<u64>,
) {
    lock(inner).calls.push(Call {
        path: path.to_owned(),
        token,
        authorized,
        body,
        http_status,
        status,
        message_token,
        delivered_to: Vec::new(),
        at: Instant::now(),
    });
}
