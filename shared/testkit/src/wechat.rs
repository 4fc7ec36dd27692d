//! A fake WeChat Official Account server API (`api.weixin.qq.com`) speaking its wire format
//! (`reference/platforms.md` §4.3–§4.5): `GET /cgi-bin/token` (access tokens; a new one
//! replaces the previous one), `POST /cgi-bin/message/custom/send` (customer-service
//! messages), `POST /cgi-bin/media/upload` (temporary media, multipart), `POST
//! /cgi-bin/message/template/send` and `GET /cgi-bin/user/info`. Every call but the token fetch
//! takes `access_token` in the query string and is checked against the app that token belongs
//! to: its followers, its uploads, its templates. Errors are answered as WeChat does, with HTTP
//! 200 and `{"errcode": n, "errmsg": "…"}`; request shapes are checked strictly. Customer-service
//! windows can be closed, and failures queued or answered at random. Every call is recorded,
//! refused ones too, with the `errcode` answered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The token endpoint.
pub const TOKEN_PATH: &str = "/cgi-bin/token";
/// The customer-service send endpoint.
pub const CUSTOM_SEND_PATH: &str = "/cgi-bin/message/custom/send";
/// The template send endpoint.
pub const TEMPLATE_SEND_PATH: &str = "/cgi-bin/message/template/send";
/// The temporary media upload endpoint.
pub const MEDIA_UPLOAD_PATH: &str = "/cgi-bin/media/upload";
/// The user profile endpoint.
pub const USER_INFO_PATH: &str = "/cgi-bin/user/info";
/// The temporary media download endpoint.
pub const MEDIA_GET_PATH: &str = "/cgi-bin/media/get";

/// `errmsg` of a replaced or unknown access token.
const TOKEN_NOT_LATEST: &str = "invalid credential, access_token is invalid or not latest";
/// Largest request body (a 10 MB video plus the multipart framing).
const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Largest `text.content` of a customer-service text message, in bytes.
const TEXT_LIMIT: usize = 2048;

/// One API call the fake received, refused or not.
#[derive(Debug, Clone)]
pub struct Call {
    /// The HTTP method, `GET` or `POST`.
    pub method: String,
    /// The path, e.g. `/cgi-bin/message/custom/send`.
    pub path: String,
    /// The query string's parameters.
    pub query: HashMap<String, String>,
    /// The JSON body (`Null` for `GET`, multipart uploads and bodies that are not JSON).
    pub body: Value,
    /// The `errcode` answered: 0 for success, 404 for a path the fake does not serve (answered
    /// HTTP 404).
    pub errcode: i64,
    /// The app the call was made for: the access token's app, or the `appid` of a token fetch
    /// naming a known app.
    pub app_id: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A follower's profile, as `GET /cgi-bin/user/info` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    /// `language`, e.g. `zh_CN` (the default) or `en`.
    pub language: String,
    /// `subscribe_time`, unix seconds (default: when the value was made).
    pub subscribe_time: i64,
    /// `unionid`, when the app is bound to an Open Platform account (default: none).
    pub unionid: Option<String>,
    /// `remark` (default empty).
    pub remark: String,
    /// `tagid_list` (default empty).
    pub tagid_list: Vec<i64>,
    /// `subscribe_scene` (default `ADD_SCENE_QR_CODE`).
    pub subscribe_scene: String,
    /// `qr_scene` (default 0).
    pub qr_scene: i64,
    /// `qr_scene_str` (default empty).
    pub qr_scene_str: String,
}

impl Default for Follower {
    fn default() -> Self {
        Self {
            language: "zh_CN".into(),
            subscribe_time: chrono::Utc::now().timestamp(),
            unionid: None,
            remark: String::new(),
            tagid_list: Vec::new(),
            subscribe_scene: "ADD_SCENE_QR_CODE".into(),
            qr_scene: 0,
            qr_scene_str: String::new(),
        }
    }
}

/// A temporary media file uploaded to the fake.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The app it was uploaded for.
    pub app_id: String,
    /// The `media_id` answered.
    pub media_id: String,
    /// The `type` query parameter: `image`, `voice`, `video` or `thumb`.
    pub kind: String,
    /// The file name of the `media` part.
    pub filename: Option<String>,
    /// The content type of the `media` part.
    pub content_type: Option<String>,
    /// The file's length in bytes.
    pub len: usize,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// `created_at`, unix seconds.
    pub created_at: i64,
}

struct App {
    secret: String,
    /// The newest token, if one was fetched.
    current: Option<String>,
    fetches: usize,
}

struct Token {
    app_id: String,
    expires_at: Instant,
    /// When a newer token replaced this one.
    replaced_at: Option<Instant>,
}

struct Member {
    profile: Follower,
    subscribed: bool,
}

struct Inner {
    ttl: Duration,
    /// How long a replaced token keeps working.
    overlap: Duration,
    apps: HashMap<String, App>,
    tokens: HashMap<String, Token>,
    /// (app, openid) → the user. An openid is per app: known to one app, invalid for another.
    members: HashMap<(String, String), Member>,
    templates: HashSet<(String, String)>,
    /// (app, openid) pairs whose customer-service window is closed.
    closed: HashSet<(String, String)>,
    uploads: Vec<Upload>,
    failures: VecDeque<i64>,
    /// Per mille of send calls answered -1 (system busy), at random.
    busy: crate::flaky::RandomFailures,
    next_msgid: i64,
    calls: Vec<Call>,
    /// While set, token answers wait until it turns `true` (see [`FakeWechat::hold_token_answers`]).
    token_gate: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(7200),
            overlap: Duration::ZERO,
            apps: HashMap::new(),
            tokens: HashMap::new(),
            members: HashMap::new(),
            templates: HashSet::new(),
            closed: HashSet::new(),
            uploads: Vec::new(),
            failures: VecDeque::new(),
            busy: crate::flaky::RandomFailures::default(),
            next_msgid: 3_100_000_000,
            calls: Vec::new(),
            token_gate: None,
        }
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake. Stops when dropped.
pub struct FakeWechat {
    addr: SocketAddr,
    inner: Shared,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeWechat {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake wechat");
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

    /// The base URL to give a channel as `api_base_url` (paths are `/cgi-bin/…`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds (or replaces) the app `app_id` with its AppSecret.
    pub fn add_app(&self, app_id: &str, app_secret: &str) {
        let mut s = self.lock();
        let app = s.apps.entry(app_id.to_owned()).or_insert_with(|| App {
            secret: String::new(),
            current: None,
            fetches: 0,
        });
        app_secret.clone_into(&mut app.secret);
    }

    /// The lifetime of tokens fetched from now on (default 7200 s). `expires_in` answers it in
    /// whole seconds, rounded down.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().ttl = ttl;
    }

    /// How long a replaced token keeps working (default zero: a fetch invalidates the previous
    /// token at once; WeChat documents a short overlap).
    pub fn set_token_overlap(&self, overlap: Duration) {
        self.lock().overlap = overlap;
    }

    /// How many tokens were fetched (successfully) for `app_id` over HTTP.
    pub fn token_fetches(&self, app_id: &str) -> usize {
        self.lock().apps.get(app_id).map_or(0, |a| a.fetches)
    }

    /// The newest token of `app_id`, if one was issued.
    pub fn current_token(&self, app_id: &str) -> Option<String> {
        self.lock().apps.get(app_id).and_then(|a| a.current.clone())
    }

    /// Issues a new token for `app_id` as if another process had fetched one, replacing the
    /// current one (which then answers 40001). Not counted in [`Self::token_fetches`]. `None`
    /// for an unknown app.
    pub fn rotate_token(&self, app_id: &str) -> Option<String> {
        let mut s = self.lock();
        s.apps.contains_key(app_id).then(|| issue(&mut s, app_id))
    }

    /// Makes every token of `app_id` expire now: they answer 42001.
    pub fn expire_tokens(&self, app_id: &str) {
        let now = Instant::now();
        for t in self.lock().tokens.values_mut() {
            if t.app_id == app_id {
                t.expires_at = now;
            }
        }
    }

    /// Makes `openid` a follower of `app_id` with a default profile.
    pub fn add_follower(&self, app_id: &str, openid: &str) {
        self.add_follower_with(app_id, openid, Follower::default());
    }

    /// Makes `openid` a follower of `app_id` with `profile`.
    pub fn add_follower_with(&self, app_id: &str, openid: &str, profile: Follower) {
        self.lock().members.insert(
            (app_id.to_owned(), openid.to_owned()),
            Member {
                profile,
                subscribed: true,
            },
        );
    }

    /// `openid` unfollows `app_id`: sends answer 43004, `user/info` `subscribe: 0`.
    pub fn remove_follower(&self, app_id: &str, openid: &str) {
        if let Some(m) = self
            .lock()
            .members
            .get_mut(&(app_id.to_owned(), openid.to_owned()))
        {
            m.subscribed = false;
        }
    }

    /// Registers the template `template_id` for `app_id`; other ids answer 40037.
    pub fn add_template(&self, app_id: &str, template_id: &str) {
        self.lock()
            .templates
            .insert((app_id.to_owned(), template_id.to_owned()));
    }

    /// Closes the customer-service window of `openid` with `app_id`: custom sends to them
    /// answer 45015 (template sends still work).
    pub fn close_window(&self, app_id: &str, openid: &str) {
        self.lock()
            .closed
            .insert((app_id.to_owned(), openid.to_owned()));
    }

    /// Opens the window again (as when the user writes to the account).
    pub fn open_window(&self, app_id: &str, openid: &str) {
        self.lock()
            .closed
            .remove(&(app_id.to_owned(), openid.to_owned()));
    }

    /// A file a follower sent to the app: `GET /cgi-bin/media/get?media_id=<media_id>` with
    /// one of the app's tokens serves `bytes` as `content_type`.
    pub fn add_media(&self, app_id: &str, media_id: &str, content_type: &str, bytes: &[u8]) {
        self.lock().uploads.push(Upload {
            app_id: app_id.to_owned(),
            media_id: media_id.to_owned(),
            kind: "image".into(),
            filename: None,
            content_type: Some(content_type.to_owned()),
            len: bytes.len(),
            bytes: bytes.to_vec(),
            created_at: chrono::Utc::now().timestamp(),
        });
    }

    /// Holds the answers to token fetches from now on: a fetch is served (the token issued and
    /// the call recorded, so the previous token starts to lapse) when it arrives, but answered
    /// only once the returned sender is sent `true` (or dropped).
    pub fn hold_token_answers(&self) -> tokio::sync::watch::Sender<bool> {
        let (open, gate) = tokio::sync::watch::channel(false);
        self.lock().token_gate = Some(gate);
        open
    }

    /// Queues `errcode` (e.g. -1 system busy, 45047 out of response count limit, 45009 api freq
    /// out of limit) as the answer of the next authenticated call of a send endpoint (custom
    /// or template), before any other check. Queued codes are answered in order.
    pub fn fail_next(&self, errcode: i64) {
        self.lock().failures.push_back(errcode);
    }

    /// Answers `busy_per_mille` per mille of the authenticated calls of a send endpoint (custom
    /// or template) with -1 (system busy), at random, before any other check (queued failures
    /// come first). 0 turns it off.
    /// One message fails at most [`crate::flaky::MAX_IN_A_ROW`] times in a row.
    pub fn fail_randomly(&self, busy_per_mille: u32) {
        self.lock().busy.set(busy_per_mille);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls whose path ends with `path_suffix` (e.g. `custom/send`) so far.
    pub fn calls_to(&self, path_suffix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path.ends_with(path_suffix))
            .collect()
    }

    /// Calls whose path ends with `path_suffix` that the fake accepted (errcode 0).
    pub fn accepted(&self, path_suffix: &str) -> Vec<Call> {
        self.calls_to(path_suffix)
            .into_iter()
            .filter(|c| c.errcode == 0)
            .collect()
    }

    /// Waits until at least `n` calls whose path ends with `path_suffix` arrived.
    pub async fn wait_for(&self, path_suffix: &str, n: usize, timeout: Duration) -> Vec<Call> {
        crate::eventually(
            timeout,
            &format!("{n} calls to {path_suffix} at the fake WeChat"),
            || async {
                let c = self.calls_to(path_suffix);
                (c.len() >= n).then_some(c)
            },
        )
        .await
    }

    /// Every media file uploaded so far, in order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.lock().uploads.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

/// WeChat's `errmsg` for `errcode`.
pub fn errmsg(errcode: i64) -> &'static str {
    match errcode {
        0 => "ok",
        -1 => "system error",
        40001 => TOKEN_NOT_LATEST,
        40002 => "invalid grant_type",
        40003 => "invalid openid",
        40004 => "invalid media type",
        40005 => "invalid file type",
        40007 => "invalid media_id",
        40008 => "invalid message type",
        40009 => "invalid image size",
        40010 => "invalid voice size",
        40011 => "invalid video size",
        40012 => "invalid thumb size",
        40013 => "invalid appid",
        40037 => "invalid template_id",
        41001 => "access_token missing",
        41002 => "appid missing",
        41004 => "appsecret missing",
        41005 => "media data missing",
        42001 => "access_token expired",
        43004 => "require subscribe",
        44003 => "empty news data",
        44004 => "empty content",
        45002 => "content size out of limit",
        45008 => "article size out of limit",
        45009 => "api freq out of limit",
        45015 => "response out of time limit or subscription is canceled",
        45047 => "out of response count limit",
        47001 => "data format error",
        48001 => "api unauthorized",
        _ => "system error",
    }
}

/// WeChat's error body: `{"errcode": n, "errmsg": "…"}`.
pub fn error_body(errcode: i64) -> Value {
    json!({"errcode": errcode, "errmsg": errmsg(errcode)})
}

/// A random id over WeChat's token alphabet.
fn random_id(len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("getrandom");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// -1 (system busy) for [`FakeWechat::fail_randomly`]'s share of send calls.
fn busy(s: &mut Inner, body: &Value) -> Option<i64> {
    s.busy.roll(body.to_string().as_bytes()).map(|_| -1)
}

/// Issues a new token for the known app `app_id`, replacing its current one.
fn issue(s: &mut Inner, app_id: &str) -> String {
    let now = Instant::now();
    let token = loop {
        let t = random_id(136);
        if !s.tokens.contains_key(&t) {
            break t;
        }
    };
    let previous = s
        .apps
        .get_mut(app_id)
        .and_then(|a| a.current.replace(token.clone()));
    if let Some(old) = previous.and_then(|p| s.tokens.get_mut(&p)) {
        old.replaced_at = Some(now);
    }
    s.tokens.insert(
        token.clone(),
        Token {
            app_id: app_id.to_owned(),
            expires_at: now + s.ttl,
            replaced_at: None,
        },
    );
    token
}

/// The app the call's `access_token` belongs to, or the errcode to answer.
fn authenticate(s: &Inner, query: &HashMap<String, String>) -> Result<String, i64> {
    let Some(token) = query.get("access_token").filter(|t| !t.is_empty()) else {
        return Err(41001);
    };
    let Some(t) = s.tokens.get(token) else {
        return Err(40001);
    };
    let now = Instant::now();
    if t.replaced_at.is_some_and(|r| now >= r + s.overlap) {
        return Err(40001);
    }
    if now >= t.expires_at {
        return Err(42001);
    }
    Ok(t.app_id.clone())
}

/// Whether `app_id` may write to `openid`: 40003 for an empty openid or one of another app,
/// 43004 for a user who does not follow the app.
fn recipient(s: &Inner, app_id: &str, openid: &str) -> Result<(), i64> {
    if openid.is_empty() {
        return Err(40003);
    }
    match s.members.get(&(app_id.to_owned(), openid.to_owned())) {
        Some(m) if m.subscribed => Ok(()),
        Some(_) => Err(43004),
        None if s.members.keys().any(|(_, o)| o == openid) => Err(40003),
        None => Err(43004),
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Whether an optional field, when present, is a string.
fn optional_str(v: &Value, key: &str) -> Result<(), i64> {
    match v.get(key) {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(_) => Err(47001),
    }
}

/// Whether `media_id` was uploaded for `app_id` as one of `kinds`.
fn uploaded(s: &Inner, app_id: &str, media_id: Option<&str>, kinds: &[&str]) -> Result<(), i64> {
    let found = media_id.is_some_and(|id| {
        s.uploads
            .iter()
            .any(|u| u.app_id == app_id && u.media_id == id && kinds.contains(&u.kind.as_str()))
    });
    if found { Ok(()) } else { Err(40007) }
}

/// What is wrong with the message of a customer-service send, if anything.
fn check_custom(s: &Inner, app_id: &str, b: &Value) -> Result<(), i64> {
    let Some(kind) = b["msgtype"].as_str() else {
        return Err(40008);
    };
    let m = &b[kind];
    if !m.is_object() && !m.is_null() {
        return Err(47001);
    }
    const THUMBS: &[&str] = &["thumb", "image"];
    match kind {
        "text" => {
            let content = m.get("content").and_then(Value::as_str).unwrap_or_default();
            if content.is_empty() {
                return Err(44004);
            }
            if content.len() > TEXT_LIMIT {
                return Err(45002);
            }
        }
        "image" | "voice" => uploaded(s, app_id, str_field(m, "media_id"), &[kind])?,
        "video" => {
            uploaded(s, app_id, str_field(m, "media_id"), &["video"])?;
            if let Some(thumb) = m.get("thumb_media_id").filter(|t| !t.is_null()) {
                uploaded(s, app_id, thumb.as_str(), THUMBS)?;
            }
            optional_str(m, "title")?;
            optional_str(m, "description")?;
        }
        "music" => {
            for key in ["title", "description", "musicurl", "hqmusicurl"] {
                optional_str(m, key)?;
            }
            uploaded(s, app_id, str_field(m, "thumb_media_id"), THUMBS)?;
        }
        "news" => {
            let articles = m
                .get("articles")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or(44003)?;
            if articles.len() > 8 {
                return Err(45008);
            }
            for a in articles {
                if str_field(a, "title").is_none() || str_field(a, "url").is_none() {
                    return Err(47001);
                }
                optional_str(a, "description")?;
                optional_str(a, "picurl")?;
            }
        }
        "mpnews" => {
            // Permanent material is not modelled: any non-empty media_id is accepted.
            str_field(m, "media_id").ok_or(40007)?;
        }
        "mpnewsarticle" => {
            str_field(m, "article_id").ok_or(47001)?;
        }
        "msgmenu" => {
            optional_str(m, "head_content")?;
            optional_str(m, "tail_content")?;
            let list = m
                .get("list")
                .and_then(Value::as_array)
                .filter(|l| (1..=10).contains(&l.len()))
                .ok_or(47001)?;
            if list
                .iter()
                .any(|i| str_field(i, "id").is_none() || str_field(i, "content").is_none())
            {
                return Err(47001);
            }
        }
        "wxcard" => {
            str_field(m, "card_id").ok_or(47001)?;
        }
        "miniprogrampage" => {
            for key in ["title", "appid", "pagepath"] {
                str_field(m, key).ok_or(47001)?;
            }
            uploaded(s, app_id, str_field(m, "thumb_media_id"), THUMBS)?;
        }
        _ => return Err(40008),
    }
    if let Some(cs) = b.get("customservice")
        && !cs.is_object()
    {
        return Err(47001);
    }
    Ok(())
}

/// Answers a customer-service send.
fn custom_send(s: &mut Inner, app_id: &str, b: &Value) -> Result<Value, i64> {
    if !b.is_object() {
        return Err(47001);
    }
    let touser = b["touser"].as_str().unwrap_or_default();
    if touser.is_empty() {
        return Err(40003);
    }
    check_custom(s, app_id, b)?;
    recipient(s, app_id, touser)?;
    if s.closed.contains(&(app_id.to_owned(), touser.to_owned())) {
        return Err(45015);
    }
    Ok(error_body(0))
}

/// Answers a template send.
fn template_send(s: &mut Inner, app_id: &str, b: &Value) -> Result<Value, i64> {
    if !b.is_object() {
        return Err(47001);
    }
    let touser = b["touser"].as_str().unwrap_or_default();
    if touser.is_empty() {
        return Err(40003);
    }
    let template = b["template_id"].as_str().unwrap_or_default();
    if !s
        .templates
        .contains(&(app_id.to_owned(), template.to_owned()))
    {
        return Err(40037);
    }
    let data_ok = b["data"].as_object().is_some_and(|d| {
        d.values().all(|v| {
            v.get("value").is_some_and(Value::is_string) && optional_str(v, "color").is_ok()
        })
    });
    if !data_ok {
        return Err(47001);
    }
    optional_str(b, "url")?;
    if let Some(mp) = b.get("miniprogram")
        && (str_field(mp, "appid").is_none() || optional_str(mp, "pagepath").is_err())
    {
        return Err(47001);
    }
    recipient(s, app_id, touser)?;
    s.next_msgid += 1;
    Ok(json!({"errcode": 0, "errmsg": "ok", "msgid": s.next_msgid}))
}

/// Answers `user/info`.
fn user_info(s: &Inner, app_id: &str, query: &HashMap<String, String>) -> Result<Value, i64> {
    let openid = query.get("openid").map(String::as_str).unwrap_or_default();
    match recipient(s, app_id, openid) {
        Err(43004) => return Ok(json!({"subscribe": 0, "openid": openid})),
        r => r?,
    }
    let Some(m) = s.members.get(&(app_id.to_owned(), openid.to_owned())) else {
        return Err(40003);
    };
    let f = &m.profile;
    let mut out = json!({
        "subscribe": 1,
        "openid": openid,
        "language": f.language,
        "subscribe_time": f.subscribe_time,
        "remark": f.remark,
        "groupid": 0,
        "tagid_list": f.tagid_list,
        "subscribe_scene": f.subscribe_scene,
        "qr_scene": f.qr_scene,
        "qr_scene_str": f.qr_scene_str,
    });
    if let Some(u) = &f.unionid {
        out["unionid"] = json!(u);
    }
    Ok(out)
}

/// Answers a token fetch; the app is the one named, when it is known.
fn token(s: &mut Inner, query: &HashMap<String, String>) -> (Option<String>, Result<Value, Value>) {
    let q = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    let app_id = q("appid");
    let known = s.apps.contains_key(app_id).then(|| app_id.to_owned());
    let refuse = |code: i64, msg: &str| Err(json!({"errcode": code, "errmsg": msg}));
    let result = if q("grant_type") != "client_credential" {
        refuse(40002, errmsg(40002))
    } else if app_id.is_empty() {
        refuse(41002, errmsg(41002))
    } else if q("secret").is_empty() {
        refuse(41004, errmsg(41004))
    } else {
        match s.apps.get(app_id) {
            None => refuse(40013, errmsg(40013)),
            Some(a) if a.secret != q("secret") => refuse(40001, "invalid credential"),
            Some(_) => {
                let token = issue(s, app_id);
                if let Some(a) = s.apps.get_mut(app_id) {
                    a.fetches += 1;
                }
                Ok(json!({"access_token": token, "expires_in": s.ttl.as_secs()}))
            }
        }
    };
    (known, result)
}

/// The `media` part of an upload.
struct MediaPart {
    filename: Option<String>,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

async fn read_media(req: Request) -> Option<MediaPart> {
    let mut multipart = Multipart::from_request(req, &()).await.ok()?;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("media") {
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(str::to_owned);
            let bytes = field.bytes().await.ok()?.to_vec();
            return Some(MediaPart {
                filename,
                content_type,
                bytes,
            });
        }
    }
    None
}

/// Answers an upload: the `type` must be known, the file's extension fit it and its size the
/// type's limit.
fn upload(
    s: &mut Inner,
    app_id: &str,
    query: &HashMap<String, String>,
    part: Option<MediaPart>,
) -> Result<Value, i64> {
    let kind = query.get("type").map(String::as_str).unwrap_or_default();
    let (extensions, max, size_code): (&[&str], usize, i64) = match kind {
        "image" => (&["bmp", "png", "jpeg", "jpg", "gif"], 10 << 20, 40009),
        "voice" => (&["amr", "mp3"], 2 << 20, 40010),
        "video" => (&["mp4"], 10 << 20, 40011),
        "thumb" => (&["jpg", "jpeg"], 64 << 10, 40012),
        _ => return Err(40004),
    };
    let part = part.filter(|p| !p.bytes.is_empty()).ok_or(41005)?;
    let extension = part
        .filename
        .as_deref()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    if !extension.is_some_and(|e| extensions.contains(&e.as_str())) {
        return Err(40005);
    }
    if part.bytes.len() > max {
        return Err(size_code);
    }
    let media_id = random_id(64);
    let created_at = chrono::Utc::now().timestamp();
    s.uploads.push(Upload {
        app_id: app_id.to_owned(),
        media_id: media_id.clone(),
        kind: kind.to_owned(),
        filename: part.filename,
        content_type: part.content_type,
        len: part.bytes.len(),
        bytes: part.bytes,
        created_at,
    });
    Ok(json!({"type": kind, "media_id": media_id, "created_at": created_at}))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Token,
    CustomSend,
    TemplateSend,
    Upload,
    UserInfo,
    Unknown,
}

async fn handle(State(inner): State<Shared>, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    if method == "GET" && path == MEDIA_GET_PATH {
        return media_get(&inner, path, query);
    }
    let route = match (method.as_str(), path.as_str()) {
        ("GET", TOKEN_PATH) => Route::Token,
        ("POST", CUSTOM_SEND_PATH) => Route::CustomSend,
        ("POST", TEMPLATE_SEND_PATH) => Route::TemplateSend,
        ("POST", MEDIA_UPLOAD_PATH) => Route::Upload,
        ("GET", USER_INFO_PATH) => Route::UserInfo,
        _ => Route::Unknown,
    };
    let mut media = None;
    let mut body = Value::Null;
    match route {
        Route::Upload => media = read_media(req).await,
        Route::CustomSend | Route::TemplateSend => {
            if let Ok(bytes) = axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
                body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            }
        }
        _ => {}
    }

    let (result, gate) = {
        let mut s = lock(&inner);
        let (app_id, result) = match route {
            Route::Unknown => (None, Err(json!(null))),
            Route::Token => token(&mut s, &query),
            _ => match authenticate(&s, &query) {
                Err(code) => (None, Err(error_body(code))),
                Ok(app_id) => {
                    let send = matches!(route, Route::CustomSend | Route::TemplateSend);
                    let queued = if send {
                        s.failures.pop_front().or_else(|| busy(&mut s, &body))
                    } else {
                        None
                    };
                    let result = match (queued, route) {
                        (Some(code), _) => Err(code),
                        (None, Route::CustomSend) => custom_send(&mut s, &app_id, &body),
                        (None, Route::TemplateSend) => template_send(&mut s, &app_id, &body),
                        (None, Route::Upload) => upload(&mut s, &app_id, &query, media),
                        (None, _) => user_info(&s, &app_id, &query),
                    };
                    (Some(app_id), result.map_err(error_body))
                }
            },
        };
        let errcode = match (&result, route) {
            (Ok(_), _) => 0,
            (Err(_), Route::Unknown) => 404,
            (Err(e), _) => e["errcode"].as_i64().unwrap_or(-1),
        };
        s.calls.push(Call {
            method,
            path,
            query,
            body,
            errcode,
            app_id,
            at: Instant::now(),
        });
        let gate = matches!(route, Route::Token)
            .then(|| s.token_gate.clone())
            .flatten();
        (result, gate)
    };
    if let Some(mut gate) = gate {
        // Issued (and recorded) already, as at WeChat: only the answer is late.
        while !*gate.borrow_and_update() {
            if gate.changed().await.is_err() {
                break;
            }
        }
    }
    match (result, route) {
        (Err(_), Route::Unknown) => (StatusCode::NOT_FOUND, "Not Found").into_response(),
        (Ok(v) | Err(v), _) => Json(v).into_response(),
    }
}

/// `GET /cgi-bin/media/get`: the file's bytes with its content type, or WeChat's JSON error
/// (40007 for a media id the app does not have).
fn media_get(inner: &Shared, path: String, query: HashMap<String, String>) -> Response {
    let mut s = lock(inner);
    let found = authenticate(&s, &query).and_then(|app_id| {
        let id = query
            .get("media_id")
            .map(String::as_str)
            .unwrap_or_default();
        s.uploads
            .iter()
            .find(|u| u.app_id == app_id && u.media_id == id)
            .map(|u| (app_id.clone(), u.content_type.clone(), u.bytes.clone()))
            .ok_or(40007)
    });
    let (errcode, app_id) = match &found {
        Ok((app_id, _, _)) => (0, Some(app_id.clone())),
        Err(code) => (*code, None),
    };
    s.calls.push(Call {
        method: "GET".into(),
        path,
        query,
        body: Value::Null,
        errcode,
        app_id,
        at: Instant::now(),
    });
    match found {
        Ok((_, content_type, bytes)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                content_type.unwrap_or_else(|| "application/octet-stream".into()),
            )],
            bytes,
        )
            .into_response(),
        Err(code) => Json(error_body(code)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "wx0000000000000001";
    const SECRET: &str = "s3cret";

    /// reqwest is built with `rustls-no-provider`: a client needs a provider even for http.
    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::http_client()
    }

    async fn get(url: String) -> Value {
        let r = client().get(url).send().await.unwrap();
        r.json().await.unwrap()
    }

    async fn post(url: String, body: Value) -> Value {
        let r = client().post(url).json(&body).send().await.unwrap();
        r.json().await.unwrap()
    }

    async fn fetch(wx: &FakeWechat, app: &str, secret: &str) -> Value {
        get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={app}&secret={secret}",
            wx.base_url()
        ))
        .await
    }

    async fn new_token(wx: &FakeWechat) -> String {
        fetch(wx, APP, SECRET).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn info(wx: &FakeWechat, token: &str, openid: &str) -> Value {
        get(format!(
            "{}/cgi-bin/user/info?access_token={token}&openid={openid}&lang=zh_CN",
            wx.base_url()
        ))
        .await
    }

    async fn send(wx: &FakeWechat, token: &str, body: Value) -> Value {
        let url = format!("{}{CUSTOM_SEND_PATH}?access_token={token}", wx.base_url());
        post(url, body).await
    }

    async fn started() -> (FakeWechat, String) {
        let wx = FakeWechat::start().await;
        wx.add_app(APP, SECRET);
        wx.add_follower(APP, "oFollower");
        let token = new_token(&wx).await;
        (wx, token)
    }

    #[tokio::test]
    async fn a_new_token_replaces_the_previous_one() {
        let wx = FakeWechat::start().await;
        wx.add_app(APP, SECRET);
        wx.add_follower(APP, "oFollower");
        let bad = fetch(&wx, "wxnope", SECRET).await;
        assert_eq!(bad, json!({"errcode": 40013, "errmsg": "invalid appid"}));
        let bad = fetch(&wx, APP, "wrong").await;
        assert_eq!(
            bad,
            json!({"errcode": 40001, "errmsg": "invalid credential"})
        );

        let first = fetch(&wx, APP, SECRET).await;
        assert_eq!(first["expires_in"], 7200);
        let first = first["access_token"].as_str().unwrap().to_owned();
        assert_eq!(info(&wx, &first, "oFollower").await["subscribe"], 1);
        let second = new_token(&wx).await;
        assert_ne!(first, second);
        assert_eq!(info(&wx, &first, "oFollower").await, error_body(40001));
        assert_eq!(info(&wx, &second, "oFollower").await["subscribe"], 1);
        assert_eq!(wx.token_fetches(APP), 2);
        assert_eq!(wx.current_token(APP), Some(second));
        let refused = wx.calls_to("/token");
        assert_eq!(
            refused.iter().map(|c| c.errcode).collect::<Vec<_>>(),
            [40013, 40001, 0, 0]
        );
    }

    #[tokio::test]
    async fn an_expired_token_answers_42001() {
        let wx = FakeWechat::start().await;
        wx.add_app(APP, SECRET);
        wx.set_token_ttl(Duration::from_millis(30));
        let token = new_token(&wx).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(info(&wx, &token, "oX").await, error_body(42001));

        wx.set_token_ttl(Duration::from_secs(7200));
        let token = new_token(&wx).await;
        assert_eq!(info(&wx, &token, "oX").await["subscribe"], 0);
        wx.expire_tokens(APP);
        assert_eq!(info(&wx, &token, "oX").await["errcode"], 42001);
        let url = format!("{}{USER_INFO_PATH}?openid=oX", wx.base_url());
        assert_eq!(get(url).await["errcode"], 41001);
    }

    #[tokio::test]
    async fn text_goes_to_followers_with_an_open_window_only() {
        let (wx, token) = started().await;
        let text = |to: &str, content: &str| json!({"touser": to, "msgtype": "text", "text": {"content": content}});
        let ok = json!({"errcode": 0, "errmsg": "ok"});
        assert_eq!(send(&wx, &token, text("oFollower", "hi")).await, ok);
        assert_eq!(
            send(&wx, &token, text("oStranger", "hi")).await,
            error_body(43004)
        );
        let long = "汉".repeat(700); // 2100 bytes
        assert_eq!(
            send(&wx, &token, text("oFollower", &long)).await["errcode"],
            45002
        );
        assert_eq!(
            send(&wx, &token, text("oFollower", "")).await["errcode"],
            44004
        );
        let odd = json!({"touser": "oFollower", "msgtype": "telegram", "telegram": {}});
        assert_eq!(send(&wx, &token, odd).await, error_body(40008));

        wx.close_window(APP, "oFollower");
        assert_eq!(
            send(&wx, &token, text("oFollower", "hi")).await["errcode"],
            45015
        );
        wx.open_window(APP, "oFollower");
        wx.fail_next(-1);
        assert_eq!(
            send(&wx, &token, text("oFollower", "hi")).await,
            error_body(-1)
        );
        assert_eq!(send(&wx, &token, text("oFollower", "hi")).await, ok);

        let calls = wx.wait_for("custom/send", 8, Duration::from_secs(5)).await;
        assert_eq!(calls[0].body["text"]["content"], "hi");
        assert_eq!(calls[0].app_id.as_deref(), Some(APP));
        assert_eq!(calls[0].query["access_token"], token);
        assert_eq!(wx.accepted("custom/send").len(), 2);
    }

    #[tokio::test]
    async fn random_failures_answer_busy_on_sends_only() {
        let (wx, token) = started().await;
        let text = json!({"touser": "oFollower", "msgtype": "text", "text": {"content": "hi"}});
        wx.fail_randomly(1000);
        assert_eq!(send(&wx, &token, text.clone()).await, error_body(-1));
        assert_eq!(info(&wx, &token, "oFollower").await["subscribe"], 1);
        // Queued failures come first.
        wx.fail_next(45009);
        assert_eq!(send(&wx, &token, text.clone()).await["errcode"], 45009);
        wx.fail_randomly(500);
        let mut codes = HashSet::new();
        for _ in 0..100 {
            codes.insert(send(&wx, &token, text.clone()).await["errcode"].as_i64());
        }
        assert_eq!(codes, HashSet::from([Some(0), Some(-1)]), "some of each");
        wx.fail_randomly(0);
        assert_eq!(send(&wx, &token, text).await["errcode"], 0);
        assert_eq!(
            wx.token_fetches(APP),
            1,
            "a busy answer is not a token's fault"
        );
    }

    #[tokio::test]
    async fn an_uploaded_image_can_be_sent() {
        let (wx, token) = started().await;
        let image =
            json!({"touser": "oFollower", "msgtype": "image", "image": {"media_id": "nope"}});
        assert_eq!(send(&wx, &token, image).await["errcode"], 40007);

        let boundary = "XyZbOuNdArY";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"cat.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(b"\x89PNG-not-really");
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = format!(
            "{}{MEDIA_UPLOAD_PATH}?access_token={token}&type=image",
            wx.base_url()
        );
        let uploaded: Value = client()
            .post(url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(uploaded["type"], "image");
        assert!(uploaded["created_at"].as_i64().unwrap() > 1_700_000_000);
        let media_id = uploaded["media_id"].as_str().unwrap();
        let up = &wx.uploads()[0];
        assert_eq!(
            (up.len, up.content_type.as_deref()),
            (15, Some("image/png"))
        );

        let image =
            json!({"touser": "oFollower", "msgtype": "image", "image": {"media_id": media_id}});
        assert_eq!(send(&wx, &token, image).await["errcode"], 0);
        let voice =
            json!({"touser": "oFollower", "msgtype": "voice", "voice": {"media_id": media_id}});
        assert_eq!(send(&wx, &token, voice).await["errcode"], 40007);
        assert_eq!(wx.calls_to("media/upload")[0].body, Value::Null);
    }

    #[tokio::test]
    async fn template_sends_answer_increasing_msgids() {
        let (wx, token) = started().await;
        wx.add_template(APP, "TPL1");
        let url = format!("{}{TEMPLATE_SEND_PATH}?access_token={token}", wx.base_url());
        let body = |tpl: &str| {
            json!({"touser": "oFollower", "template_id": tpl, "url": "https://example.com",
                   "data": {"first": {"value": "Hello"}, "remark": {"value": "Bye", "color": "#173177"}}})
        };
        let a = post(url.clone(), body("TPL1")).await;
        let b = post(url.clone(), body("TPL1")).await;
        assert_eq!((&a["errcode"], &a["errmsg"]), (&json!(0), &json!("ok")));
        assert!(b["msgid"].as_i64().unwrap() > a["msgid"].as_i64().unwrap());
        assert_eq!(post(url.clone(), body("TPL2")).await, error_body(40037));
        let bad = json!({"touser": "oFollower", "template_id": "TPL1", "data": {"first": "Hello"}});
        assert_eq!(post(url, bad).await["errcode"], 47001);
    }

    #[tokio::test]
    async fn user_info_answers_followers_and_strangers() {
        let (wx, token) = started().await;
        wx.add_follower_with(
            APP,
            "oEn",
            Follower {
                language: "en".into(),
                subscribe_time: 1_767_225_600,
                unionid: Some("uUnion".into()),
                ..Follower::default()
            },
        );
        let en = info(&wx, &token, "oEn").await;
        assert_eq!(
            en,
            json!({"subscribe": 1, "openid": "oEn", "language": "en",
                   "subscribe_time": 1_767_225_600, "unionid": "uUnion", "remark": "",
                   "groupid": 0, "tagid_list": [], "subscribe_scene": "ADD_SCENE_QR_CODE",
                   "qr_scene": 0, "qr_scene_str": ""})
        );
        let plain = info(&wx, &token, "oFollower").await;
        assert_eq!(plain["language"], "zh_CN");
        assert!(plain.get("unionid").is_none() && plain.get("nickname").is_none());
        assert_eq!(
            info(&wx, &token, "oStranger").await,
            json!({"subscribe": 0, "openid": "oStranger"})
        );
        assert_eq!(info(&wx, &token, "").await, error_body(40003));
        wx.add_follower("wxother", "oOther");
        assert_eq!(info(&wx, &token, "oOther").await["errcode"], 40003);
    }
}
