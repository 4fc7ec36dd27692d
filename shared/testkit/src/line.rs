//! A fake LINE Messaging API (`api.line.me`, `reference/platforms.md` §6) speaking its wire
//! format: `Authorization: Bearer <channel access token>` on every call, checked against the
//! channels added; `POST /v2/bot/message/reply` and `/push` answering
//! `{"sentMessages": [{"id", "quoteToken"}]}`; `GET /v2/bot/profile/{userId}` and the group
//! and room member forms; `x-line-request-id` on every answer.
//!
//! Request shapes are checked strictly: 1 to [`MAX_PER_CALL`] messages per call, known
//! message types with their required fields and no unknown ones, quick replies of at most
//! [`MAX_QUICK_REPLIES`] action items, labels of at most 20 characters, templates (`buttons`
//! with 1 to 4 actions, `confirm` with exactly 2, `carousel` with 1 to 10 columns of 1 to 3
//! actions, the same number in each) with an `altText` of at most 400 characters, and `flex`
//! with `altText` and `contents` passed through unread. Replies need a reply token the fake
//! issued ([`FakeLine::issue_reply_token`]; the harness issues one for every event it posts
//! with a `replyToken`), unused and younger than [`REPLY_TOKEN_TTL`] (or not expired with
//! [`FakeLine::expire_reply_token`]); otherwise LINE's own 400 `{"message": "Invalid reply
//! token"}`; a reply must not carry `X-Line-Retry-Key`. Each channel (access token) has its
//! own friends ([`FakeLine::add_friend`]), groups and rooms ([`FakeLine::add_member`]), reply
//! tokens, retry keys and monthly quota: pushes go to the channel's friends and chats, else 400
//! naming the property `to`, and a reply token works only for the channel whose event carried
//! it; a push's `X-Line-Retry-Key` must be a UUID, and a key the channel used before with an
//! accepted push answers 409 with the first answer's `sentMessages` (and
//! `x-line-accepted-request-id`), sending nothing. A monthly quota can be set
//! ([`FakeLine::set_monthly_quota`]): pushes beyond it answer 429 "You have reached your
//! monthly limit." (replies are free). Failures can be queued per path, including a 500 after
//! the push was accepted (the retry must then not send twice). Every call is recorded, refused
//! ones too, with the status answered; a request refused is refused whole.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Replies.
pub const REPLY_PATH: &str = "/v2/bot/message/reply";
/// Pushes.
pub const PUSH_PATH: &str = "/v2/bot/message/push";
/// Multicasts: one message to up to [`MULTICAST_MAX`] users.
pub const MULTICAST_PATH: &str = "/v2/bot/message/multicast";
/// Users per multicast at most.
pub const MULTICAST_MAX: usize = 500;
/// Profiles of friends: `/v2/bot/profile/{userId}`.
pub const PROFILE_PATH: &str = "/v2/bot/profile/";
/// Members of groups: `/v2/bot/group/{groupId}/member/{userId}`.
pub const GROUP_PATH: &str = "/v2/bot/group/";
/// Members of rooms: `/v2/bot/room/{roomId}/member/{userId}`.
pub const ROOM_PATH: &str = "/v2/bot/room/";
/// Messages per call.
pub const MAX_PER_CALL: usize = 5;
/// The bot's own account: `userId` (the `destination` of its webhooks), `basicId`, name.
pub const BOT_INFO_PATH: &str = "/v2/bot/info";
/// The channel's webhook URL: `GET` reads `{"endpoint", "active"}`, `PUT {"endpoint"}` sets it.
pub const WEBHOOK_ENDPOINT_PATH: &str = "/v2/bot/channel/webhook/endpoint";
/// The user id of a channel's bot unless given ([`FakeLine::add_channel_as`]): the
/// `destination` of `patchbay_line::fixtures::post`.
pub const BOT_USER_ID: &str = "Ub0700000000000000000000000000000";
/// Quick-reply items per message.
pub const MAX_QUICK_REPLIES: usize = 13;
/// How long a reply token works (LINE: about a minute).
pub const REPLY_TOKEN_TTL: Duration = Duration::from_secs(60);

/// One API call the fake received, refused or not.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GET` or `POST`.
    pub method: String,
    /// The path, e.g. `/v2/bot/message/push`.
    pub path: String,
    /// The bearer token (the channel access token), if any.
    pub token: Option<String>,
    /// Whether the bearer token was a known channel's.
    pub authorized: bool,
    /// `X-Line-Retry-Key`, if given.
    pub retry_key: Option<String>,
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
    /// 429 for the rate limit, with `Retry-After` when given (seconds).
    TooManyRequests {
        /// `Retry-After`.
        retry_after: Option<u64>,
    },
    /// 500, nothing sent.
    ServerError,
    /// The call is carried out (a push is accepted under its retry key), then answered 500:
    /// the sender cannot know it went through.
    ServerErrorAfterAccepting,
    /// Any other status, with a generic error body.
    Status(u16),
}

/// One channel, by its access token.
#[derive(Default)]
struct Channel {
    /// The bot's user id.
    bot_user_id: String,
    /// The webhook URL set (`PUT /v2/bot/channel/webhook/endpoint`).
    webhook: Option<String>,
    /// "Use webhook" is off in the console.
    webhook_off: bool,
    friends: HashSet<String>,
    /// Group or room id → members.
    chats: HashMap<String, HashSet<String>>,
    /// Retry key → the `sentMessages` of the push accepted under it.
    retry_keys: HashMap<String, Value>,
    monthly_quota: Option<usize>,
    pushed: usize,
}

#[derive(Default)]
struct Inner {
    /// Access token → channel.
    channels: HashMap<String, Channel>,
    profiles: HashMap<String, Value>,
    /// Group id → its name (`GET /v2/bot/group/{id}/summary`).
    group_names: HashMap<String, String>,
    /// Reply token → (its channel's access token, issued, used).
    reply_tokens: HashMap<String, (String, Instant, bool)>,
    /// A reply token never issued counts as issued at its first use (the demo).
    any_reply_token: bool,
    next_id: u64,
    failures: VecDeque<(String, Failure)>,
    /// Per mille of authenticated sends answered 500 at random.
    random_server_errors: crate::flaky::RandomFailures,
    /// How long profile lookups wait before they are answered.
    profile_delay: Duration,
    calls: Vec<Call>,
    /// (access token, message id) → (content type, bytes): what users sent, for
    /// `GET /v2/bot/message/{id}/content`.
    contents: HashMap<(String, String), (String, Vec<u8>)>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake. Stops when dropped.
pub struct FakeLine {
    addr: SocketAddr,
    inner: Shared,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeLine {
    /// The content of message `message_id` a user sent to the channel of `access_token`:
    /// `GET /v2/bot/message/<message_id>/content` with that token serves it (404 otherwise).
    pub fn add_content(
        &self,
        access_token: &str,
        message_id: &str,
        content_type: &str,
        bytes: &[u8],
    ) {
        lock(&self.inner).contents.insert(
            (access_token.to_owned(), message_id.to_owned()),
            (content_type.to_owned(), bytes.to_vec()),
        );
    }

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
            .expect("bind fake line");
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

    /// The base URL to give a channel as `api_base_url` (paths are `/v2/bot/…`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Accepts `access_token` as a channel's, whose bot is [`BOT_USER_ID`].
    pub fn add_channel(&self, access_token: &str) {
        self.add_channel_as(access_token, BOT_USER_ID);
    }

    /// Accepts `access_token` as the channel of the bot `bot_user_id`.
    pub fn add_channel_as(&self, access_token: &str, bot_user_id: &str) {
        self.lock()
            .channels
            .entry(access_token.to_owned())
            .or_default()
            .bot_user_id = bot_user_id.to_owned();
    }

    /// The webhook URL set for the channel of `access_token`.
    pub fn webhook(&self, access_token: &str) -> Option<String> {
        self.lock()
            .channels
            .get(access_token)
            .and_then(|c| c.webhook.clone())
    }

    /// Names group `group` (`GET /v2/bot/group/{group}/summary` answers it to the channels
    /// in the group).
    pub fn set_group_name(&self, group: &str, name: &str) {
        self.lock()
            .group_names
            .insert(group.to_owned(), name.to_owned());
    }

    /// Switches the channel's "Use webhook" off (LINE's console): `GET` the endpoint says
    /// `"active": false`.
    pub fn switch_webhook_off(&self, access_token: &str) {
        self.channel(access_token, |c| c.webhook_off = true);
    }

    fn channel(&self, access_token: &str, change: impl FnOnce(&mut Channel)) {
        if let Some(c) = self.lock().channels.get_mut(access_token) {
            change(c);
        }
    }

    /// `user` added the channel's bot as a friend (or unblocked it): pushes reach them.
    pub fn add_friend(&self, access_token: &str, user: &str) {
        self.channel(access_token, |c| {
            c.friends.insert(user.to_owned());
        });
    }

    /// `user` blocked the channel's bot: pushes to them are refused.
    pub fn block(&self, access_token: &str, user: &str) {
        self.channel(access_token, |c| {
            c.friends.remove(user);
        });
    }

    /// `user` is a member of the group or room `chat`, which the channel's bot is in.
    pub fn add_member(&self, access_token: &str, chat: &str, user: &str) {
        self.channel(access_token, |c| {
            c.chats
                .entry(chat.to_owned())
                .or_default()
                .insert(user.to_owned());
        });
    }

    /// The channel's bot is in the group or room `chat`.
    pub fn add_chat(&self, access_token: &str, chat: &str) {
        self.channel(access_token, |c| {
            c.chats.entry(chat.to_owned()).or_default();
        });
    }

    /// `user`'s profile as LINE answers it (`displayName`, `pictureUrl`, `language`, …).
    pub fn set_profile(&self, user: &str, profile: Value) {
        self.lock().profiles.insert(user.to_owned(), profile);
    }

    /// LINE gave `token` with an event for the channel of `access_token` just now.
    pub fn issue_reply_token(&self, access_token: &str, token: &str) {
        self.lock().reply_tokens.insert(
            token.to_owned(),
            (access_token.to_owned(), Instant::now(), false),
        );
    }

    /// `token` expired.
    pub fn expire_reply_token(&self, token: &str) {
        if let Some((_, issued, _)) = self.lock().reply_tokens.get_mut(token) {
            *issued = Instant::now()
                .checked_sub(REPLY_TOKEN_TTL)
                .unwrap_or(*issued);
        }
    }

    /// Takes any reply token once, as if LINE had issued it just before (for `make run`,
    /// whose webhooks are posted by hand).
    pub fn accept_unknown_reply_tokens(&self) {
        self.lock().any_reply_token = true;
    }

    /// At most `messages` pushed messages this month for the channel (`None`: no limit).
    pub fn set_monthly_quota(&self, access_token: &str, messages: Option<usize>) {
        self.channel(access_token, |c| c.monthly_quota = messages);
    }

    /// Queues `failures` as the answers of the next authenticated calls to `path`
    /// ([`REPLY_PATH`], [`PUSH_PATH`], [`PROFILE_PATH`]), in order.
    pub fn fail_next(&self, path: &str, failures: impl IntoIterator<Item = Failure>) {
        let mut s = self.lock();
        for f in failures {
            s.failures.push_back((path.to_owned(), f));
        }
    }

    /// Answers profile lookups only after `delay` (a slow LINE).
    pub fn delay_profiles(&self, delay: Duration) {
        self.lock().profile_delay = delay;
    }

    /// Answers a share of authenticated pushes and replies at random with 500, in per mille
    /// (after any failure queued with [`FakeLine::fail_next`]); 0 turns it off.
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

    /// Every message the fake delivered (replies, pushes and multicasts it accepted, and those
    /// it accepted before answering 500), in order, each with `to`: the push's address, each
    /// user a multicast reached (friends of the bot), or `reply:<token>`.
    pub fn messages(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == REPLY_PATH || c.path == PUSH_PATH || c.path == MULTICAST_PATH)
            .filter(|c| c.status == 200 || (c.status == 500 && c.body.get("delivered").is_some()))
            .flat_map(|c| {
                let to: Vec<String> = match (c.path.as_str(), c.body.get("to")) {
                    (MULTICAST_PATH, _) => c.body["delivered_to"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect(),
                    (_, Some(Value::String(to))) => vec![to.clone()],
                    _ => vec![format!(
                        "reply:{}",
                        c.body["replyToken"].as_str().unwrap_or_default()
                    )],
                };
                let messages = c.body["messages"].as_array().cloned().unwrap_or_default();
                to.into_iter().flat_map(move |to| {
                    messages.clone().into_iter().map(move |mut m| {
                        m["to"] = json!(to);
                        m
                    })
                })
            })
            .collect()
    }

    /// Waits until at least `n` calls to paths starting with `path` arrived.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Call> {
        crate::eventually(
            timeout,
            &format!("{n} calls to {path} at the fake LINE"),
            || async {
                let c = self.calls_to(path);
                (c.len() >= n).then_some(c)
            },
        )
        .await
    }
}

/// A refusal: status, LINE's `message`, and `details` (property, message).
struct Refusal(StatusCode, String, Vec<(String, String)>);

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Refusal(StatusCode::BAD_REQUEST, message.into(), vec![])
    }

    /// 400 "The request body has N error(s)" with one detail about `property`.
    fn property(property: &str, message: impl Into<String>) -> Self {
        Refusal(
            StatusCode::BAD_REQUEST,
            "The request body has 1 error(s)".into(),
            vec![(property.to_owned(), message.into())],
        )
    }
}

fn is_https(v: Option<&Value>) -> bool {
    // LINE wants HTTPS; the fake also takes http:// so tests can point at local servers.
    v.and_then(Value::as_str)
        .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"))
}

fn non_empty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

fn chars(v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, |s| s.chars().count())
}

/// Checks that `o` has only `allowed` keys.
fn only(o: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), Refusal> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Refusal::property(&format!("{at}.{k}"), "unknown property")),
        None => Ok(()),
    }
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Refusal> {
    v.as_object()
        .ok_or_else(|| Refusal::property(at, "must be an object"))
}

fn require(o: &Map<String, Value>, field: &str, at: &str, max: usize) -> Result<(), Refusal> {
    if !non_empty_str(o.get(field)) {
        return Err(Refusal::property(
            &format!("{at}.{field}"),
            "may not be empty",
        ));
    }
    if chars(o.get(field)) > max {
        return Err(Refusal::property(
            &format!("{at}.{field}"),
            format!("Length must be between 0 and {max}"),
        ));
    }
    Ok(())
}

fn check_action(a: &Value, at: &str, label_required: bool) -> Result<(), Refusal> {
    let o = object(a, at)?;
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let (fields, required): (&[&str], &[&str]) = match kind {
        "postback" => (
            &[
                "type",
                "label",
                "data",
                "displayText",
                "text",
                "inputOption",
                "fillInText",
            ],
            &["data"],
        ),
        "message" => (&["type", "label", "text"], &["text"]),
        "uri" => (&["type", "label", "uri", "altUri"], &["uri"]),
        "datetimepicker" => (
            &["type", "label", "data", "mode", "initial", "max", "min"],
            &["data", "mode"],
        ),
        "camera" | "cameraRoll" | "location" => (&["type", "label"], &[]),
        other => {
            return Err(Refusal::property(
                &format!("{at}.type"),
                format!("unknown action type {other:?}"),
            ));
        }
    };
    only(o, fields, at)?;
    for f in required {
        require(o, f, at, if *f == "data" { 300 } else { 5000 })?;
    }
    if label_required || o.contains_key("label") {
        require(o, "label", at, 20)?;
    }
    Ok(())
}

fn check_actions(v: Option<&Value>, at: &str, min: usize, max: usize) -> Result<usize, Refusal> {
    let actions = v
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::property(&format!("{at}.actions"), "may not be null"))?;
    if actions.len() < min || actions.len() > max {
        return Err(Refusal::property(
            &format!("{at}.actions"),
            format!("Size must be between {min} and {max}"),
        ));
    }
    for (i, a) in actions.iter().enumerate() {
        check_action(a, &format!("{at}.actions[{i}]"), true)?;
    }
    Ok(actions.len())
}

fn check_template(t: &Value, at: &str) -> Result<(), Refusal> {
    let o = object(t, at)?;
    match o.get("type").and_then(Value::as_str).unwrap_or_default() {
        "buttons" => {
            only(
                o,
                &[
                    "type",
                    "text",
                    "actions",
                    "title",
                    "thumbnailImageUrl",
                    "imageAspectRatio",
                    "imageSize",
                    "imageBackgroundColor",
                    "defaultAction",
                ],
                at,
            )?;
            let max = if o.contains_key("title") || o.contains_key("thumbnailImageUrl") {
                60
            } else {
                160
            };
            require(o, "text", at, max)?;
            check_actions(o.get("actions"), at, 1, 4)?;
        }
        "confirm" => {
            only(o, &["type", "text", "actions"], at)?;
            require(o, "text", at, 240)?;
            check_actions(o.get("actions"), at, 2, 2)?;
        }
        "carousel" => {
            only(o, &["type", "columns", "imageAspectRatio", "imageSize"], at)?;
            let columns = o
                .get("columns")
                .and_then(Value::as_array)
                .filter(|c| (1..=10).contains(&c.len()))
                .ok_or_else(|| {
                    Refusal::property(&format!("{at}.columns"), "Size must be between 1 and 10")
                })?;
            let mut counts = HashSet::new();
            for (i, c) in columns.iter().enumerate() {
                let at = format!("{at}.columns[{i}]");
                let co = object(c, &at)?;
                only(
                    co,
                    &[
                        "text",
                        "actions",
                        "title",
                        "thumbnailImageUrl",
                        "imageBackgroundColor",
                        "defaultAction",
                    ],
                    &at,
                )?;
                if co.contains_key("title") {
                    require(co, "title", &at, 40)?;
                }
                if co.contains_key("thumbnailImageUrl") && !is_https(co.get("thumbnailImageUrl")) {
                    return Err(Refusal::property(
                        &format!("{at}.thumbnailImageUrl"),
                        "must be an https URL",
                    ));
                }
                let max = if co.contains_key("title") || co.contains_key("thumbnailImageUrl") {
                    60
                } else {
                    120
                };
                require(co, "text", &at, max)?;
                counts.insert(check_actions(co.get("actions"), &at, 1, 3)?);
            }
            if counts.len() > 1 {
                return Err(Refusal::bad(
                    "all columns of a carousel must have the same number of actions",
                ));
            }
        }
        other => {
            return Err(Refusal::property(
                &format!("{at}.type"),
                format!("unknown template type {other:?}"),
            ));
        }
    }
    Ok(())
}

fn check_message(m: &Value, at: &str) -> Result<(), Refusal> {
    let o = object(m, at)?;
    const COMMON: &[&str] = &["type", "quickReply", "sender"];
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let fields: &[&str] = match kind {
        "text" => &["text", "emojis", "quoteToken"],
        "image" | "video" => &["originalContentUrl", "previewImageUrl", "trackingId"],
        "audio" => &["originalContentUrl", "duration"],
        "location" => &["title", "address", "latitude", "longitude"],
        "sticker" => &["packageId", "stickerId", "quoteToken"],
        "template" => &["altText", "template"],
        "flex" => &["altText", "contents"],
        other => {
            return Err(Refusal::property(
                &format!("{at}.type"),
                format!("unknown message type {other:?}"),
            ));
        }
    };
    let allowed: Vec<&str> = COMMON.iter().chain(fields).copied().collect();
    only(o, &allowed, at)?;
    match kind {
        "text" => require(o, "text", at, 5000)?,
        "image" | "video" => {
            for f in ["originalContentUrl", "previewImageUrl"] {
                if !is_https(o.get(f)) {
                    return Err(Refusal::property(
                        &format!("{at}.{f}"),
                        "must be an https URL",
                    ));
                }
            }
        }
        "audio" => {
            if !is_https(o.get("originalContentUrl"))
                || !o.get("duration").is_some_and(Value::is_u64)
            {
                return Err(Refusal::property(
                    at,
                    "audio needs originalContentUrl and duration",
                ));
            }
        }
        "location" => {
            require(o, "title", at, 100)?;
            require(o, "address", at, 100)?;
            if !o.get("latitude").is_some_and(Value::is_number)
                || !o.get("longitude").is_some_and(Value::is_number)
            {
                return Err(Refusal::property(at, "latitude and longitude are numbers"));
            }
        }
        "sticker" => {
            require(o, "packageId", at, 100)?;
            require(o, "stickerId", at, 100)?;
        }
        "template" => {
            require(o, "altText", at, 400)?;
            check_template(
                o.get("template").unwrap_or(&Value::Null),
                &format!("{at}.template"),
            )?;
        }
        _ => {
            // flex: passed through; LINE checks `contents` itself.
            require(o, "altText", at, 400)?;
            object(
                o.get("contents").unwrap_or(&Value::Null),
                &format!("{at}.contents"),
            )?;
        }
    }
    if let Some(q) = o.get("quickReply") {
        let at = format!("{at}.quickReply");
        let qo = object(q, &at)?;
        only(qo, &["items"], &at)?;
        let items = qo
            .get("items")
            .and_then(Value::as_array)
            .filter(|i| (1..=MAX_QUICK_REPLIES).contains(&i.len()))
            .ok_or_else(|| {
                Refusal::property(
                    &format!("{at}.items"),
                    format!("Size must be between 1 and {MAX_QUICK_REPLIES}"),
                )
            })?;
        for (i, item) in items.iter().enumerate() {
            let at = format!("{at}.items[{i}]");
            let io = object(item, &at)?;
            only(io, &["type", "imageUrl", "action"], &at)?;
            if io.get("type").and_then(Value::as_str) != Some("action") {
                return Err(Refusal::property(
                    &format!("{at}.type"),
                    "must be \"action\"",
                ));
            }
            let action = io.get("action").unwrap_or(&Value::Null);
            if action.get("type").and_then(Value::as_str) == Some("uri") {
                return Err(Refusal::property(
                    &format!("{at}.action.type"),
                    "quick replies take no uri actions",
                ));
            }
            check_action(action, &format!("{at}.action"), true)?;
        }
    }
    Ok(())
}

fn check_messages(body: &Value) -> Result<usize, Refusal> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::property("messages", "may not be null"))?;
    if messages.is_empty() || messages.len() > MAX_PER_CALL {
        return Err(Refusal::property(
            "messages",
            format!("Size must be between 1 and {MAX_PER_CALL}"),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        check_message(m, &format!("messages[{i}]"))?;
    }
    Ok(messages.len())
}

fn sent_messages(next_id: &mut u64, n: usize) -> Value {
    let sent: Vec<Value> = (0..n)
        .map(|_| {
            *next_id += 1;
            json!({"id": format!("{}", 500_000_000_000_000u64 + *next_id),
                   "quoteToken": format!("qt-{}", *next_id)})
        })
        .collect();
    json!({ "sentMessages": sent })
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// What a call did, besides its answer.
enum Done {
    Answer(Value),
    /// A multicast accepted: its answer and the users it reached.
    Delivered(Value, Vec<String>),
    /// 409: the retry key's push was accepted before.
    AlreadyAccepted(Value),
}

fn reply(
    s: &mut Inner,
    channel: &str,
    body: &Value,
    retry_key: Option<&str>,
) -> Result<Done, Refusal> {
    if retry_key.is_some() {
        return Err(Refusal::bad(
            "The X-Line-Retry-Key header cannot be specified for this API",
        ));
    }
    let o = object(body, "body")?;
    only(
        o,
        &["replyToken", "messages", "notificationDisabled"],
        "body",
    )?;
    let n = check_messages(body)?;
    let token = o
        .get("replyToken")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if s.any_reply_token && !token.is_empty() && !s.reply_tokens.contains_key(token) {
        s.reply_tokens.insert(
            token.to_owned(),
            (channel.to_owned(), Instant::now(), false),
        );
    }
    match s.reply_tokens.get_mut(token) {
        Some((own, issued, used))
            if own == channel && !*used && issued.elapsed() < REPLY_TOKEN_TTL =>
        {
            *used = true;
        }
        _ => return Err(Refusal::bad("Invalid reply token")),
    }
    Ok(Done::Answer(sent_messages(&mut s.next_id, n)))
}

/// The fields of a push's and a multicast's body.
const SEND_FIELDS: &[&str] = &[
    "to",
    "messages",
    "notificationDisabled",
    "customAggregationUnits",
];

/// LINE's answer to a retry key it accepted before (409), if `retry_key` is one; a key that
/// is not a UUID is refused.
fn accepted_before(c: &Channel, retry_key: Option<&str>) -> Result<Option<Done>, Refusal> {
    let Some(k) = retry_key else {
        return Ok(None);
    };
    if !is_uuid(k) {
        return Err(Refusal::bad("The retry key must be a UUID"));
    }
    Ok(c.retry_keys
        .get(k)
        .map(|first| Done::AlreadyAccepted(first.clone())))
}

fn push(
    s: &mut Inner,
    channel: &str,
    body: &Value,
    retry_key: Option<&str>,
) -> Result<Done, Refusal> {
    let Inner {
        channels, next_id, ..
    } = s;
    let c = channels
        .get_mut(channel)
        .ok_or_else(|| Refusal::bad("unknown channel"))?;
    if let Some(first) = accepted_before(c, retry_key)? {
        return Ok(first);
    }
    let o = object(body, "body")?;
    only(o, SEND_FIELDS, "body")?;
    let n = check_messages(body)?;
    let to = o.get("to").and_then(Value::as_str).unwrap_or_default();
    let reachable = c.friends.contains(to) || c.chats.contains_key(to);
    if !reachable {
        return Err(Refusal::property(
            "to",
            "The property, 'to', in the request body is invalid (line: -, column: -)",
        ));
    }
    if c.monthly_quota.is_some_and(|q| c.pushed + n > q) {
        return Err(Refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "You have reached your monthly limit.".into(),
            vec![],
        ));
    }
    c.pushed += n;
    let answer = sent_messages(next_id, n);
    if let Some(k) = retry_key {
        c.retry_keys.insert(k.to_owned(), answer.clone());
    }
    Ok(Done::Answer(answer))
}

/// `POST /v2/bot/message/multicast`: up to [`MULTICAST_MAX`] user ids (a group's or room's id
/// is refused, as any id that is not a user's), 1 to 5 messages. Users who are not friends of
/// the bot (never added it, or blocked it) silently get nothing, as at LINE; each user reached
/// counts against the monthly quota. Answered `{}`; a repeated retry key 409.
fn multicast(
    s: &mut Inner,
    channel: &str,
    body: &Value,
    retry_key: Option<&str>,
) -> Result<Done, Refusal> {
    let c = s
        .channels
        .get_mut(channel)
        .ok_or_else(|| Refusal::bad("unknown channel"))?;
    if let Some(first) = accepted_before(c, retry_key)? {
        return Ok(first);
    }
    let o = object(body, "body")?;
    only(o, SEND_FIELDS, "body")?;
    let to = o
        .get("to")
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::property("to", "may not be null"))?;
    if to.is_empty() || to.len() > MULTICAST_MAX {
        return Err(Refusal::property(
            "to",
            format!("Size must be between 1 and {MULTICAST_MAX}"),
        ));
    }
    let mut users = Vec::with_capacity(to.len());
    for (i, id) in to.iter().enumerate() {
        let id = id.as_str().unwrap_or_default();
        let user_id =
            id.len() == 33 && id.starts_with('U') && id[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if !user_id {
            return Err(Refusal::property(
                &format!("to[{i}]"),
                "The value must be a user ID",
            ));
        }
        users.push(id.to_owned());
    }
    let n = check_messages(body)?;
    let reached: Vec<String> = users
        .into_iter()
        .filter(|u| c.friends.contains(u))
        .collect();
    if c.monthly_quota
        .is_some_and(|q| c.pushed + n * reached.len() > q)
    {
        return Err(Refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "You have reached your monthly limit.".into(),
            vec![],
        ));
    }
    c.pushed += n * reached.len();
    let answer = json!({});
    if let Some(k) = retry_key {
        c.retry_keys.insert(k.to_owned(), answer.clone());
    }
    Ok(Done::Delivered(answer, reached))
}

fn profile(s: &Inner, channel: &str, path: &str) -> Result<Done, Refusal> {
    let not_found = || Refusal(StatusCode::NOT_FOUND, "Not found".into(), vec![]);
    let c = s.channels.get(channel).ok_or_else(not_found)?;
    let parts: Vec<&str> = path.trim_start_matches("/v2/bot/").split('/').collect();
    if let ["group", group, "summary"] = parts.as_slice() {
        // The bot is in the group (it got an event from it): its name and picture.
        if !c.chats.contains_key(*group) {
            return Err(not_found());
        }
        let name = s.group_names.get(*group).cloned().unwrap_or_default();
        return Ok(Done::Answer(json!({
            "groupId": group,
            "groupName": name,
            "pictureUrl": format!("https://profile.line.example/{group}"),
        })));
    }
    let user = match parts.as_slice() {
        ["profile", user] if c.friends.contains(*user) => *user,
        ["group" | "room", chat, "member", user]
            if c.chats.get(*chat).is_some_and(|m| m.contains(*user)) =>
        {
            *user
        }
        _ => return Err(not_found()),
    };
    let mut p = s.profiles.get(user).cloned().ok_or_else(not_found)?;
    p["userId"] = json!(user);
    Ok(Done::Answer(p))
}

/// A 500 drawn at random for a send, as [`FakeLine::fail_randomly`] set it.
fn random_failure(s: &mut Inner, path: &str, body: &Value) -> Option<Failure> {
    if path != PUSH_PATH && path != REPLY_PATH && path != MULTICAST_PATH {
        return None;
    }
    s.random_server_errors
        .roll(body.to_string().as_bytes())
        .map(|_| Failure::ServerError)
}

fn error_body(r: &Refusal) -> Value {
    let mut b = json!({ "message": r.1 });
    if !r.2.is_empty() {
        b["details"] = json!(
            r.2.iter()
                .map(|(p, m)| json!({"property": p, "message": m}))
                .collect::<Vec<_>>()
        );
    }
    b
}

fn with_header(mut r: Response, name: &'static str, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

/// The bot's account: its info, and its webhook endpoint read or set (LINE refuses an
/// endpoint that is not an HTTPS URL of at most 500 characters; the fake also takes `http://`
/// for local stacks).
fn account(
    s: &mut Inner,
    channel: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<Done, Refusal> {
    let Some(c) = s.channels.get_mut(channel) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "unknown channel".into(),
            vec![],
        ));
    };
    match (method, path) {
        ("GET", BOT_INFO_PATH) => Ok(Done::Answer(json!({
            "userId": c.bot_user_id,
            "basicId": format!("@{}", c.bot_user_id.get(1..9).unwrap_or("bot").to_lowercase()),
            "displayName": "Patchbay test bot",
            "chatMode": "bot",
            "markAsReadMode": "auto",
        }))),
        ("GET", _) => Ok(Done::Answer(json!({
            "endpoint": c.webhook.clone().unwrap_or_default(),
            "active": c.webhook.is_some() && !c.webhook_off,
        }))),
        _ => {
            let endpoint = body.get("endpoint").and_then(Value::as_str);
            match endpoint {
                Some(e)
                    if (e.starts_with("https://") || e.starts_with("http://"))
                        && e.len() <= 500
                        && body.as_object().is_some_and(|o| o.len() == 1) =>
                {
                    c.webhook = Some(e.to_owned());
                    Ok(Done::Answer(json!({})))
                }
                _ => Err(Refusal(
                    StatusCode::BAD_REQUEST,
                    "The request body has 1 error(s)".into(),
                    vec![("endpoint".into(), "Invalid webhook endpoint URL".into())],
                )),
            }
        }
    }
}

async fn handle(State(inner): State<Shared>, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let retry_key = req
        .headers()
        .get("x-line-retry-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if method == "GET"
        && let Some(id) = path
            .strip_prefix("/v2/bot/message/")
            .and_then(|p| p.strip_suffix("/content"))
    {
        let mut s = lock(&inner);
        let found = bearer
            .as_ref()
            .and_then(|t| s.contents.get(&(t.clone(), id.to_owned())).cloned());
        let response = match found {
            Some((content_type, bytes)) => {
                ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
            }
            None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not found"}))).into_response(),
        };
        let authorized = bearer.as_ref().is_some_and(|t| s.channels.contains_key(t));
        s.calls.push(Call {
            method,
            path,
            token: bearer,
            authorized,
            retry_key,
            body: Value::Null,
            status: response.status().as_u16(),
            at: Instant::now(),
        });
        return response;
    }
    let mut body: Value = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let delay = lock(&inner).profile_delay;
    if method == "GET" && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = lock(&inner);
    s.next_id += 1;
    let request_id = format!("req-{:016x}", s.next_id);
    let authorized = bearer.as_ref().is_some_and(|t| s.channels.contains_key(t));
    let channel = bearer.clone().unwrap_or_default();
    let route = match (method.as_str(), path.as_str()) {
        ("POST", REPLY_PATH) => Some(REPLY_PATH),
        ("POST", PUSH_PATH) => Some(PUSH_PATH),
        ("POST", MULTICAST_PATH) => Some(MULTICAST_PATH),
        ("GET", p) if p.starts_with(PROFILE_PATH) => Some(PROFILE_PATH),
        ("GET", p) if p.starts_with(GROUP_PATH) => Some(GROUP_PATH),
        ("GET", p) if p.starts_with(ROOM_PATH) => Some(ROOM_PATH),
        ("GET", BOT_INFO_PATH) => Some(BOT_INFO_PATH),
        ("GET" | "PUT", WEBHOOK_ENDPOINT_PATH) => Some(WEBHOOK_ENDPOINT_PATH),
        _ => None,
    };
    let mut retry_after = None;
    let mut delivered_then_failed = false;
    // The users a multicast reached, recorded with its call (see `FakeLine::messages`).
    let mut delivered_to: Option<Vec<String>> = None;
    let result = match route {
        None => Err(Refusal(StatusCode::NOT_FOUND, "Not found".into(), vec![])),
        Some(_) if !authorized => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "Authentication failed. Confirm that the access token in the authorization header is valid.".into(),
            vec![],
        )),
        Some(route) => {
            let queued = s
                .failures
                .iter()
                .position(|(p, _)| p == route)
                .and_then(|i| s.failures.remove(i))
                .map(|(_, f)| f)
                .or_else(|| random_failure(&mut s, route, &body));
            let server_error = || -> Result<Done, Refusal> {
                Err(Refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An unexpected error occurred.".into(),
                    vec![],
                ))
            };
            let carry_out = |s: &mut Inner| match route {
                REPLY_PATH => reply(s, &channel, &body, retry_key.as_deref()),
                PUSH_PATH => push(s, &channel, &body, retry_key.as_deref()),
                MULTICAST_PATH => multicast(s, &channel, &body, retry_key.as_deref()),
                BOT_INFO_PATH | WEBHOOK_ENDPOINT_PATH => account(s, &channel, &method, &path, &body),
                _ => profile(s, &channel, &path),
            };
            match queued {
                Some(Failure::TooManyRequests { retry_after: after }) => {
                    retry_after = after;
                    Err(Refusal(
                        StatusCode::TOO_MANY_REQUESTS,
                        "The API rate limit has been exceeded. Try again later.".into(),
                        vec![],
                    ))
                }
                Some(Failure::ServerError) => server_error(),
                Some(Failure::ServerErrorAfterAccepting) => {
                    match carry_out(&mut s) {
                        Ok(Done::Answer(_)) => delivered_then_failed = true,
                        Ok(Done::Delivered(_, to)) => {
                            delivered_then_failed = true;
                            delivered_to = Some(to);
                        }
                        _ => {}
                    }
                    server_error()
                }
                Some(Failure::Status(code)) => Err(Refusal(
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    format!("injected status {code}"),
                    vec![],
                )),
                None => carry_out(&mut s),
            }
        }
    };
    let response = match result {
        Ok(Done::Answer(v)) => Json(v).into_response(),
        Ok(Done::Delivered(v, to)) => {
            delivered_to = Some(to);
            Json(v).into_response()
        }
        Ok(Done::AlreadyAccepted(first)) => with_header(
            (
                StatusCode::CONFLICT,
                Json(json!({"message": "The retry key is already accepted",
                                               "sentMessages": first["sentMessages"]})),
            )
                .into_response(),
            "x-line-accepted-request-id",
            "req-accepted",
        ),
        Err(r) => {
            let mut response = (r.0, Json(error_body(&r))).into_response();
            if let Some(after) = retry_after
                && let Ok(v) = after.to_string().parse()
            {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    };
    let response = with_header(response, "x-line-request-id", &request_id);
    if delivered_then_failed && let Some(o) = body.as_object_mut() {
        // Marks the record: delivered although answered 500 (see `FakeLine::messages`).
        o.insert("delivered".into(), json!(true));
    }
    if let (Some(to), Some(o)) = (delivered_to, body.as_object_mut()) {
        o.insert("delivered_to".into(), json!(to));
    }
    s.calls.push(Call {
        method,
        path,
        token: bearer,
        authorized,
        retry_key,
        body,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "channel-token";
    const KEY: &str = "0f0e0d0c-0b0a-5908-8706-050403020100";

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::http_client()
    }

    async fn post(line: &FakeLine, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut r = client()
            .post(format!("{}{path}", line.base_url()))
            .bearer_auth(TOKEN)
            .json(&body);
        if let Some(k) = key {
            r = r.header("x-line-retry-key", k);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn started() -> FakeLine {
        let line = FakeLine::start().await;
        line.add_channel(TOKEN);
        line.add_friend(TOKEN, "Uana");
        line
    }

    fn text(t: &str) -> Value {
        json!({"type": "text", "text": t})
    }

    #[tokio::test]
    async fn a_reply_token_works_once_and_not_after_it_expired() {
        let line = started().await;
        line.issue_reply_token(TOKEN, "rt-1");
        line.issue_reply_token(TOKEN, "rt-2");
        line.add_channel("other-channel");
        line.issue_reply_token("other-channel", "rt-other");
        let body = |t: &str| json!({"replyToken": t, "messages": [text("hi")]});
        let (status, answer) = post(&line, REPLY_PATH, None, body("rt-1")).await;
        assert_eq!(status, 200);
        assert!(answer["sentMessages"][0]["id"].is_string());
        assert_eq!(
            post(&line, REPLY_PATH, None, body("rt-1")).await,
            (400, json!({"message": "Invalid reply token"}))
        );
        line.expire_reply_token("rt-2");
        assert_eq!(post(&line, REPLY_PATH, None, body("rt-2")).await.0, 400);
        assert_eq!(post(&line, REPLY_PATH, None, body("never")).await.0, 400);
        assert_eq!(
            post(&line, REPLY_PATH, None, body("rt-other")).await.0,
            400,
            "another channel's token"
        );
        line.issue_reply_token(TOKEN, "rt-3");
        assert_eq!(
            post(&line, REPLY_PATH, Some(KEY), body("rt-3")).await.0,
            400,
            "no retry key on replies"
        );
    }

    #[tokio::test]
    async fn a_repeated_retry_key_answers_409_and_sends_nothing() {
        let line = started().await;
        let body = json!({"to": "Uana", "messages": [text("once")]});
        let (status, first) = post(&line, PUSH_PATH, Some(KEY), body.clone()).await;
        assert_eq!(status, 200);
        let (status, again) = post(&line, PUSH_PATH, Some(KEY), body.clone()).await;
        assert_eq!(status, 409);
        assert_eq!(again["sentMessages"], first["sentMessages"]);
        assert_eq!(line.messages().len(), 1);
        assert_eq!(
            post(&line, PUSH_PATH, Some("not-a-uuid"), body).await.0,
            400
        );
    }

    #[tokio::test]
    async fn shapes_are_checked() {
        let line = started().await;
        let push = |messages: Value| json!({"to": "Uana", "messages": messages});
        let six: Vec<Value> = (0..6).map(|i| text(&i.to_string())).collect();
        let fourteen: Vec<Value> = (0..14)
            .map(|i| json!({"type": "action", "action": {"type": "message", "label": i.to_string(), "text": "x"}}))
            .collect();
        let refused = [
            push(json!(six)),
            push(json!([])),
            push(json!([{"type": "text"}])),
            push(json!([{"type": "text", "text": "x", "extra": 1}])),
            push(json!([{"type": "video", "originalContentUrl": "https://v"}])),
            push(json!([{"type": "text", "text": "x", "quickReply": {"items": fourteen}}])),
            push(
                json!([{"type": "template", "altText": "a", "template": {"type": "confirm",
                "text": "t", "actions": [{"type": "message", "label": "a", "text": "a"}]}}]),
            ),
            push(
                json!([{"type": "template", "altText": "a", "template": {"type": "buttons",
                "text": "t", "actions": [{"type": "message", "label": "a label longer than twenty", "text": "a"}]}}]),
            ),
            push(
                json!([{"type": "template", "template": {"type": "buttons", "text": "t",
                "actions": [{"type": "message", "label": "a", "text": "a"}]}}]),
            ),
            push(
                json!([{"type": "template", "altText": "a", "template": {"type": "carousel", "columns": [
                {"text": "a", "actions": [{"type": "message", "label": "a", "text": "a"}]},
                {"text": "b", "actions": []}]}}]),
            ),
            json!({"to": "Ustranger", "messages": [text("x")]}),
        ];
        for body in refused {
            assert_eq!(
                post(&line, PUSH_PATH, None, body.clone()).await.0,
                400,
                "{body}"
            );
        }
        let accepted = push(json!([
            text("a"),
            {"type": "flex", "altText": "f", "contents": {"type": "bubble"}},
            {"type": "sticker", "packageId": "446", "stickerId": "1988"},
            {"type": "location", "title": "t", "address": "a", "latitude": 1.5, "longitude": 2.0},
            {"type": "image", "originalContentUrl": "https://i", "previewImageUrl": "https://i"},
        ]));
        assert_eq!(post(&line, PUSH_PATH, None, accepted).await.0, 200);
    }

    #[tokio::test]
    async fn the_monthly_quota_and_queued_failures_are_played() {
        let line = started().await;
        line.set_monthly_quota(TOKEN, Some(1));
        let body = json!({"to": "Uana", "messages": [text("x")]});
        assert_eq!(post(&line, PUSH_PATH, None, body.clone()).await.0, 200);
        assert_eq!(
            post(&line, PUSH_PATH, None, body.clone()).await,
            (
                429,
                json!({"message": "You have reached your monthly limit."})
            )
        );
        line.set_monthly_quota(TOKEN, None);
        line.fail_next(PUSH_PATH, [Failure::ServerErrorAfterAccepting]);
        assert_eq!(post(&line, PUSH_PATH, Some(KEY), body.clone()).await.0, 500);
        assert_eq!(post(&line, PUSH_PATH, Some(KEY), body.clone()).await.0, 409);
        assert_eq!(
            line.messages().len(),
            2,
            "the one before the 500 was delivered"
        );
        let r = client()
            .post(format!("{}{PUSH_PATH}", line.base_url()))
            .bearer_auth("wrong")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.headers().contains_key("x-line-request-id"));
    }
}
