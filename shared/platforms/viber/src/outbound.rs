//! Outbound Viber: the content model rendered as `send_message` calls, Viber's answers
//! classified, the welcome message and user profiles (`reference/platforms.md` §7.3–§7.5).
//!
//! Every call is `POST <base>/pa/<method>` with the bot's auth token in `X-Viber-Auth-Token`
//! and a JSON body; Viber answers HTTP 200 with `{"status": 0, …}` on success and another
//! `status` on refusal. A message is `{"receiver": <user id>, "type": …, "sender": {"name",
//! "avatar"?}, …}`: the sender name is the channel's `sender_name`, else the Patchbay bot's
//! name (cut to 28 characters); the avatar the channel's `sender_avatar`. Viber answers with a
//! `message_token`, the id its `delivered`, `seen` and `failed` callbacks name:
//! [`Sent::platform_message_id`] is the first message's.
//!
//! | content | message(s) |
//! |---|---|
//! | text | `text` |
//! | image | `picture` (`media`; the caption as `text`, else `""`) |
//! | video with `size_bytes` | `video` (`media`, `size`, `duration` in seconds from `duration_ms`, `thumbnail` from `preview_url`); a caption follows as a `text` |
//! | file with `size_bytes` | `file` (`media`, `size`, `file_name`: the file name, else the URL's last segment); a caption follows as a `text` |
//! | other video or file; audio, voice | `url` (`media`: the file's URL); a caption follows as a `text` (Viber shows a video or file only with its size, and has no audio message) |
//! | location | `location` (`lat`, `lon`); a name or address follows as a `text` |
//! | sticker | `sticker` (`sticker_id`, a number) |
//! | buttons | a `text` with a keyboard: a postback button is `{"ActionType": "reply", "ActionBody": payload, "Silent": true}`, a reply button `{"ActionType": "reply", "ActionBody": title}`, a URL button `{"ActionType": "open-url", "ActionBody": url}`; one a row |
//! | quick replies | a `text` with a keyboard of `reply` buttons (`ActionBody`: the payload, silent, when there is one, else the title), two a row |
//! | carousel | `rich_media`, six cards a message at most: per card an image (3 rows), its title and subtitle, and its buttons (1 row each) |
//! | media by `file_id` only, template | refused: `unsupported_content` |
//!
//! A keyboard's reply comes back as a plain text `message`. So that a postback's payload is
//! told from typed text, the message carrying postback buttons sets `tracking_data` to
//! `{"pb": {<payload>: <title>}}`, which Viber echoes on the user's next message
//! ([`postback_title`]); a map over Viber's 4,000 characters is left out (the payloads then
//! arrive as text). `min_api_version` is set to what the content needs: 2 for `rich_media`
//! (`reference/platforms.md` §7.3), 4 for keyboards with silent buttons (`Silent` is an API
//! level 4 field [mem: the reference lists no keyboard field levels]); absent otherwise. A
//! message over Viber's 30 KB, or a text over 7,000 characters, is refused before the call
//! (`invalid_request`). A message that takes several Viber messages sends them in order; the
//! first refusal stops the rest (a retry sends it again from its first part).
//!
//! A broadcast's message goes to up to [`BROADCAST_MAX`] subscribers in one call per Viber
//! message: `broadcast_message`, the same body with `broadcast_list` instead of `receiver`
//! ([`OutboundAdapter::send_many`]), in as few calls as fit Viber's 30 KB with the list. Viber
//! answers one `message_token` for everyone, and `failed_list` (`receiver`, `status`,
//! `status_message`) for the users it refused, each classified as below; a user refused one
//! part gets none of the parts after it. Viber takes no idempotency key: a broadcast that got
//! no answer is sent again.
//!
//! Viber's answers (its `status` is the `platform_code`):
//!
//! | status | name | Patchbay |
//! |---|---|---|
//! | 0 | ok | sent |
//! | 1 | invalidUrl | `invalid_request` |
//! | 2 | invalidAuthToken | `unauthorized` |
//! | 3 | badData | `invalid_request` |
//! | 4 | missingData | `invalid_request` |
//! | 5 | receiverNotRegistered | `user_unavailable` |
//! | 6 | receiverNotSubscribed | `user_unavailable` |
//! | 7 | publicAccountBlocked | `account_locked` |
//! | 8 | publicAccountNotFound | `unauthorized` |
//! | 9 | publicAccountSuspended | `account_locked` |
//! | 10 | webhookNotSet | `channel_misconfigured` (`outbound-viber` sets it when the channel appears) |
//! | 11 | receiverNoSuitableDevice | `user_unavailable` |
//! | 12 | tooManyRequests (also: 100 messages to one user in an hour without a reply) | retry after 60 s |
//! | 13 | apiVersionNotSupported | `unsupported_content` |
//! | 14 | incompatibleWithVersion | `unsupported_content` |
//! | 15 | publicAccountNotAuthorized | `unauthorized` |
//! | 16 | inboxMessageStateMismatch | `platform_error` |
//! | 17 | unsupportedMessageType | `unsupported_content` |
//! | 18 | messageRateExceeded | retry after 60 s |
//! | 19 | editMessageFailed | `platform_error` |
//! | 20 | unsupportedMedia | `unsupported_content` |
//! | any other status | | `platform_error` |
//! | HTTP 429, 5xx, no answer, timeout | | retry |
//! | HTTP 4xx otherwise, an answer that is not Viber's JSON | | `platform_error` (the HTTP status as `platform_code`) |
//!
//! [`user_details`] reads a user's name, avatar and language (`get_user_details`, allowed
//! twice per 12 hours per user: the ingress calls it off a message's way, and caches).

use std::time::Duration;

use patchbay_bus::ConfigView;
use patchbay_contract::content::{Button, Card, Media, QuickReply};
use patchbay_contract::{Content, OutboundJob, Platform};
use patchbay_platform::{
    Batch, BulkSend, BulkSent, Capabilities, Limits, OutboundAdapter, SendError, Sent, Target,
    degrade,
};
use serde_json::{Map, Value, json};

use crate::ViberCredentials;
use crate::capabilities::CAPABILITIES;
use crate::credentials::SENDER_NAME_MAX;

/// Viber's API.
pub const DEFAULT_BASE_URL: &str = "https://chatapi.viber.com";
/// Sending messages.
pub const SEND_PATH: &str = "/pa/send_message";
/// `broadcast_message`: one message to many subscribers.
pub const BROADCAST_PATH: &str = "/pa/broadcast_message";
/// Users per broadcast at most.
pub const BROADCAST_MAX: usize = 300;
/// Setting (or removing) the webhook.
pub const SET_WEBHOOK_PATH: &str = "/pa/set_webhook";
/// The bot account's details, with its webhook.
pub const ACCOUNT_INFO_PATH: &str = "/pa/get_account_info";
/// A user's details.
pub const USER_DETAILS_PATH: &str = "/pa/get_user_details";
/// The auth header.
pub const AUTH_HEADER: &str = "X-Viber-Auth-Token";
/// The largest request Viber takes.
pub const MAX_REQUEST_BYTES: usize = 30 * 1024;
/// The longest text sent.
pub const MAX_TEXT_CHARS: usize = 7000;
/// The longest `tracking_data`.
pub const MAX_TRACKING_CHARS: usize = 4000;
/// Cards per `rich_media` message.
pub const CARDS_PER_MESSAGE: usize = 6;
/// The wait after status 12 or 18.
const RATE_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How much of an unreadable answer is quoted.
const QUOTE_MAX: usize = 300;

/// Sends through Viber's REST bot API.
#[derive(Debug, Clone)]
pub struct ViberSender {
    http: reqwest::Client,
    base_url: String,
    limits: Limits,
    /// For the bot's name, the sender name of channels without one.
    view: Option<ConfigView>,
}

impl ViberSender {
    /// A sender with `base_url` as default API, `timeout` per call and the given pace; `view`
    /// names the bots of channels without a `sender_name`.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        limits: Limits,
        view: Option<ConfigView>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: patchbay_platform::http::client_builder(timeout).build()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            limits,
            view,
        })
    }
}

fn invalid(message: impl Into<String>) -> SendError {
    SendError::permanent("invalid_request", message, None)
}

fn unsupported(message: impl Into<String>) -> SendError {
    SendError::permanent("unsupported_content", message, None)
}

fn text(t: &str) -> Result<Value, SendError> {
    if t.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(format!(
            "Viber texts are at most {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(json!({"type": "text", "text": t}))
}

fn caption(m: &Media) -> Option<&str> {
    m.caption.as_deref().filter(|c| !c.trim().is_empty())
}

fn url_of<'a>(m: &'a Media, kind: &str) -> Result<&'a str, SendError> {
    m.url.as_deref().ok_or_else(|| {
        unsupported(format!(
            "Viber sends {kind}s by URL only and has no media ids: this one has no url"
        ))
    })
}

/// The last segment of a media's URL, as a file name.
fn name_of(m: &Media) -> Option<&str> {
    m.url
        .as_deref()
        .and_then(|u| u.split(['?', '#']).next())
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| !n.is_empty())
}

/// A file Viber cannot send as such, as a `url` message to it, then its caption.
fn link(kind: &str, m: &Media) -> Result<Vec<Value>, SendError> {
    let mut out = vec![json!({"type": "url", "media": url_of(m, kind)?})];
    if let Some(c) = caption(m) {
        out.push(text(c)?);
    }
    Ok(out)
}

/// One keyboard or rich-media button.
fn button(b: &Button, columns: u8, rows: u8) -> Value {
    let (kind, body, silent) = match b {
        Button::Postback { payload, .. } => ("reply", payload.as_str(), true),
        Button::Reply { title } => ("reply", title.as_str(), false),
        Button::Url { url, .. } => ("open-url", url.as_str(), false),
    };
    let mut v = json!({"Columns": columns, "Rows": rows, "ActionType": kind,
                       "ActionBody": body, "Text": b.title()});
    if silent {
        v["Silent"] = json!(true);
    }
    v
}

/// The postbacks of `buttons`, as `tracking_data` (none without postbacks or when too long).
fn tracking(postbacks: &[(&str, &str)]) -> Option<String> {
    if postbacks.is_empty() {
        return None;
    }
    let map: Map<String, Value> = postbacks
        .iter()
        .map(|(payload, title)| ((*payload).to_owned(), json!(title)))
        .collect();
    let t = json!({ "pb": map }).to_string();
    (t.chars().count() <= MAX_TRACKING_CHARS).then_some(t)
}

/// The title of the postback whose payload `text` is, when `tracking_data` (echoed by Viber
/// from the bot's last message) names it.
pub fn postback_title(tracking_data: Option<&str>, text: &str) -> Option<String> {
    let t: Value = serde_json::from_str(tracking_data?).ok()?;
    t.get("pb")?.get(text)?.as_str().map(str::to_owned)
}

/// A text with a keyboard of `buttons` (`columns` wide each, of 6), with the tracking data
/// and API level its postbacks need.
fn with_keyboard(
    t: &str,
    buttons: Vec<Value>,
    postbacks: &[(&str, &str)],
) -> Result<Value, SendError> {
    let mut m = text(t)?;
    if buttons.iter().any(|b| b.get("Silent").is_some()) {
        m["min_api_version"] = json!(4);
    }
    m["keyboard"] = json!({"Type": "keyboard", "DefaultHeight": false, "Buttons": buttons});
    if let Some(t) = tracking(postbacks) {
        m["tracking_data"] = json!(t);
    }
    Ok(m)
}

/// Escapes text for rich media's HTML-like `Text`.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Up to six cards as one `rich_media` message: every card as tall as the tallest (at most
/// 7 rows: a 3-row image, a text of the rows left, a row per button).
fn rich_media(cards: &[Card]) -> Value {
    let image_rows = |c: &Card| if c.image_url.is_some() { 3 } else { 0 };
    let rows = cards
        .iter()
        .map(|c| image_rows(c) + 1 + c.buttons.len().min(3))
        .max()
        .unwrap_or(1)
        .min(7);
    let mut buttons = Vec::new();
    let mut postbacks = Vec::new();
    for c in cards {
        let card_buttons = &c.buttons[..c.buttons.len().min(3)];
        if let Some(url) = &c.image_url {
            buttons.push(json!({"Columns": 6, "Rows": 3, "ActionType": "none", "Image": url}));
        }
        let mut body = format!("<b>{}</b>", escape(&c.title));
        if let Some(s) = &c.subtitle {
            body.push_str(&format!("<br>{}", escape(s)));
        }
        let text_rows = rows
            .saturating_sub(image_rows(c) + card_buttons.len())
            .max(1);
        buttons.push(
            json!({"Columns": 6, "Rows": text_rows, "ActionType": "none",
                            "Text": body, "TextHAlign": "left", "TextVAlign": "top"}),
        );
        for b in card_buttons {
            buttons.push(button(b, 6, 1));
            if let Button::Postback { title, payload } = b {
                postbacks.push((payload.as_str(), title.as_str()));
            }
        }
    }
    let mut m = json!({"type": "rich_media", "min_api_version": 2,
                       "rich_media": {"Type": "rich_media", "ButtonsGroupColumns": 6,
                                      "ButtonsGroupRows": rows, "BgColor": "#FFFFFF",
                                      "Buttons": buttons}});
    if buttons_silent(&m) {
        m["min_api_version"] = json!(4);
    }
    if let Some(t) = tracking(&postbacks) {
        m["tracking_data"] = json!(t);
    }
    m
}

fn buttons_silent(m: &Value) -> bool {
    m.pointer("/rich_media/Buttons")
        .and_then(Value::as_array)
        .is_some_and(|b| b.iter().any(|b| b.get("Silent").is_some()))
}

/// Renders one (already degraded) content as Viber messages, in order (without `receiver`
/// and `sender`).
pub fn render(content: &Content) -> Result<Vec<Value>, SendError> {
    Ok(match content {
        Content::Text { text: t } => vec![text(t)?],
        Content::Image(m) => vec![json!({"type": "picture", "media": url_of(m, "image")?,
                                        "text": caption(m).unwrap_or_default()})],
        // Viber shows a video or a file only with its size (and a file with its name).
        Content::Video(m) => match m.size_bytes {
            Some(size) => {
                let mut video = json!({"type": "video", "media": url_of(m, "video")?,
                                       "size": size});
                if let Some(ms) = m.duration_ms {
                    video["duration"] = json!(ms.div_ceil(1000));
                }
                if let Some(preview) = &m.preview_url {
                    video["thumbnail"] = json!(preview);
                }
                let mut out = vec![video];
                if let Some(c) = caption(m) {
                    out.push(text(c)?);
                }
                out
            }
            None => link("video", m)?,
        },
        Content::Audio(m) => link("audio", m)?,
        Content::Voice(m) => link("voice message", m)?,
        Content::File(m) => match (m.size_bytes, m.filename.as_deref().or_else(|| name_of(m))) {
            (Some(size), Some(name)) => {
                let mut out = vec![json!({"type": "file", "media": url_of(m, "file")?,
                                          "size": size, "file_name": name})];
                if let Some(c) = caption(m) {
                    out.push(text(c)?);
                }
                out
            }
            _ => link("file", m)?,
        },
        Content::Location(l) => {
            let mut out = vec![json!({"type": "location",
                                      "location": {"lat": l.latitude, "lon": l.longitude}})];
            let words: Vec<&str> = [l.name.as_deref(), l.address.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.trim().is_empty())
                .collect();
            if !words.is_empty() {
                out.push(text(&words.join("\n"))?);
            }
            out
        }
        Content::Sticker { id } => {
            let n: u64 = id
                .parse()
                .map_err(|_| invalid(format!("Viber sticker ids are numbers, not {id:?}")))?;
            vec![json!({"type": "sticker", "sticker_id": n})]
        }
        Content::Buttons { text: t, buttons } => {
            let postbacks: Vec<(&str, &str)> = buttons
                .iter()
                .filter_map(|b| match b {
                    Button::Postback { title, payload } => Some((payload.as_str(), title.as_str())),
                    _ => None,
                })
                .collect();
            let keys = buttons.iter().map(|b| button(b, 6, 1)).collect();
            vec![with_keyboard(t, keys, &postbacks)?]
        }
        Content::QuickReplies { text: t, replies } => {
            let mut postbacks = Vec::new();
            let keys = replies
                .iter()
                .map(|QuickReply { title, payload }| match payload {
                    Some(p) => {
                        postbacks.push((p.as_str(), title.as_str()));
                        button(
                            &Button::Postback {
                                title: title.clone(),
                                payload: p.clone(),
                            },
                            3,
                            1,
                        )
                    }
                    None => button(
                        &Button::Reply {
                            title: title.clone(),
                        },
                        3,
                        1,
                    ),
                })
                .collect();
            vec![with_keyboard(t, keys, &postbacks)?]
        }
        Content::Carousel { cards } => cards.chunks(CARDS_PER_MESSAGE).map(rich_media).collect(),
        other => {
            return Err(unsupported(format!(
                "Viber cannot show {} messages",
                other.kind()
            )));
        }
    })
}

/// The `sender` of the channel's messages: its `sender_name` (else `bot_name`, cut to 28
/// characters) and `sender_avatar`.
pub fn sender(creds: &ViberCredentials, bot_name: &str) -> Value {
    let name: String = creds
        .sender_name
        .clone()
        .unwrap_or_else(|| bot_name.chars().take(SENDER_NAME_MAX).collect());
    let mut s = json!({ "name": name });
    if let Some(a) = &creds.sender_avatar {
        s["avatar"] = json!(a);
    }
    s
}

/// Checks the size Viber takes.
fn sized(body: &Value) -> Result<(), SendError> {
    let n = body.to_string().len();
    if n > MAX_REQUEST_BYTES {
        return Err(invalid(format!(
            "the Viber message is {n} bytes; Viber takes at most {MAX_REQUEST_BYTES}"
        )));
    }
    Ok(())
}

/// The welcome message answering `conversation_started` in the webhook's response: `content`
/// as one Viber message with its sender and no receiver. Content that takes several Viber
/// messages is refused (Viber takes one).
pub fn welcome(
    creds: &ViberCredentials,
    bot_name: &str,
    content: &Content,
) -> Result<Value, SendError> {
    let mut rendered = render(content)?;
    if rendered.len() != 1 {
        return Err(invalid(format!(
            "a welcome message must be one Viber message; this content takes {}",
            rendered.len()
        )));
    }
    let mut m = rendered.remove(0);
    m["sender"] = sender(creds, bot_name);
    sized(&m)?;
    Ok(m)
}

/// Classifies Viber's refusal: its `status` and `status_message`.
pub fn classify(status: i64, message: &str) -> SendError {
    let code = Some(status);
    let said = if message.is_empty() {
        format!("Viber answered status {status}")
    } else {
        format!("Viber answered status {status}: {message}")
    };
    let permanent =
        |patchbay: &str, why: &str| SendError::permanent(patchbay, format!("{why} ({said})"), code);
    match status {
        1 => permanent("invalid_request", "Viber refused a URL in the message"),
        2 | 15 => permanent("unauthorized", "Viber refused the bot's auth token"),
        3 | 4 => permanent("invalid_request", "Viber refused the message"),
        5 => permanent("user_unavailable", "the user is not registered on Viber"),
        6 => permanent(
            "user_unavailable",
            "the user is not subscribed to the bot (or unsubscribed)",
        ),
        7 => permanent("account_locked", "the bot's account is blocked"),
        8 => permanent("unauthorized", "Viber knows no such bot account"),
        9 => permanent("account_locked", "the bot's account is suspended"),
        10 => permanent(
            "channel_misconfigured",
            "the bot has no webhook at Viber (outbound-viber sets it when the channel appears; check PATCHBAY_PUBLIC_URL)",
        ),
        11 => permanent(
            "user_unavailable",
            "the user has no device that can receive the message",
        ),
        12 | 18 => SendError::Retryable {
            reason: said,
            after: Some(RATE_RETRY_AFTER),
        },
        13 | 14 | 17 | 20 => permanent(
            "unsupported_content",
            "the user's Viber cannot show this content",
        ),
        _ => permanent("platform_error", "Viber refused the request"),
    }
}

/// `<base><path>` as a URL, or the channel's misconfiguration.
pub(crate) fn api_url(base: &str, path: &str) -> Result<reqwest::Url, SendError> {
    reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/'))).map_err(|e| {
        SendError::permanent(
            "channel_misconfigured",
            format!("the Viber API base URL {base:?} is not a URL: {e}"),
            None,
        )
    })
}

/// Calls `method` (`path`) with `body`: Viber's answer when its `status` is 0, else its
/// classification.
pub async fn call(
    http: &reqwest::Client,
    base: &str,
    creds: &ViberCredentials,
    path: &str,
    body: &Value,
) -> Result<Value, SendError> {
    let url = api_url(base, path)?;
    let response = http
        .post(url)
        .header(AUTH_HEADER, &creds.auth_token)
        .headers(patchbay_platform::http::trace_headers())
        .json(body)
        .send()
        .await
        .map_err(|e| SendError::Retryable {
            reason: format!("Viber unreachable ({path}): {}", e.without_url()),
            after: None,
        })?;
    let status = response.status();
    let after = patchbay_platform::webhook::retry_after(response.headers());
    let bytes = response.bytes().await.map_err(|e| SendError::Retryable {
        reason: format!("reading Viber's answer ({path}): {}", e.without_url()),
        after: None,
    })?;
    if status.as_u16() == 429 || status.is_server_error() {
        return Err(SendError::Retryable {
            reason: format!("Viber answered HTTP {status} ({path})"),
            after,
        });
    }
    let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
    let viber_status = answer
        .as_ref()
        .and_then(|a| a.get("status"))
        .and_then(Value::as_i64);
    match (status.is_success(), viber_status, answer) {
        (true, Some(0), Some(a)) => Ok(a),
        (true, Some(s), Some(a)) => Err(classify(
            s,
            a.get("status_message")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        )),
        _ => {
            let quoted: String = String::from_utf8_lossy(&bytes)
                .trim()
                .chars()
                .take(QUOTE_MAX)
                .collect();
            Err(SendError::permanent(
                "platform_error",
                format!("Viber answered HTTP {status} ({path}) without its status: {quoted}"),
                Some(i64::from(status.as_u16())),
            ))
        }
    }
}

/// Reads `user`'s name, avatar and language (`get_user_details`) as the ingress's profile
/// hint (`display_name`, `avatar_url`, `locale`; an empty object when Viber tells none);
/// `None` when Viber refuses (Viber allows two lookups per user in 12 hours) or cannot be
/// reached. Never fails the caller.
pub async fn user_details(
    http: &reqwest::Client,
    base: &str,
    creds: &ViberCredentials,
    user: &str,
) -> Option<Value> {
    let answer = call(http, base, creds, USER_DETAILS_PATH, &json!({ "id": user }))
        .await
        .map_err(|e| tracing::info!(error = %e, "Viber user details not available"))
        .ok()?;
    let u = answer.get("user")?;
    let mut hint = Map::new();
    for (from, to) in [
        ("name", "display_name"),
        ("avatar", "avatar_url"),
        ("language", "locale"),
    ] {
        if let Some(v) = u
            .get(from)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            hint.insert(to.into(), json!(v));
        }
    }
    Some(Value::Object(hint))
}

/// A JSON token (Viber's 64-bit `message_token`) as text.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

impl ViberSender {
    /// `content` as Viber messages from the channel's sender (its `sender_name`, else the
    /// bot's name), without a receiver.
    async fn messages(
        &self,
        creds: &ViberCredentials,
        bot_id: &str,
        content: &Content,
    ) -> Result<Vec<Value>, SendError> {
        let parts = degrade(content, &CAPABILITIES, "Viber").map_err(SendError::Permanent)?;
        let mut rendered = Vec::new();
        for p in &parts {
            rendered.extend(render(p)?);
        }
        let bot_name = match (&creds.sender_name, &self.view) {
            (None, Some(view)) => view
                .bot(bot_id)
                .await
                .ok()
                .flatten()
                .map(|b| b.name.clone()),
            _ => None,
        }
        .unwrap_or_else(|| "Patchbay".to_owned());
        let from = sender(creds, &bot_name);
        for m in &mut rendered {
            m["sender"] = from.clone();
        }
        Ok(rendered)
    }

    /// Broadcasts `batch` (see the module documentation).
    async fn broadcast(
        &self,
        target: Target<'_, ViberCredentials>,
        batch: Batch<'_>,
    ) -> Result<BulkSent, SendError> {
        if batch.addresses.len() > BROADCAST_MAX {
            return Err(invalid(format!(
                "a Viber broadcast takes at most {BROADCAST_MAX} users, not {}",
                batch.addresses.len()
            )));
        }
        let bodies = self
            .messages(target.credentials, batch.bot_id, batch.content)
            .await?;
        let mut outcomes: Vec<Option<Result<Sent, SendError>>> = vec![None; batch.addresses.len()];
        let mut tokens: Vec<Option<String>> = vec![None; batch.addresses.len()];
        // The users still to get the rest: one refused a part gets none of the parts after it.
        let mut alive: Vec<usize> = (0..batch.addresses.len()).collect();
        for body in bodies {
            let mut rest = alive.clone();
            while !rest.is_empty() {
                let list = fitting(&body, &rest, batch.addresses)?;
                let chunk: Vec<usize> = rest.drain(..list).collect();
                let mut call_body = body.clone();
                call_body["broadcast_list"] = json!(
                    chunk
                        .iter()
                        .map(|&i| &batch.addresses[i])
                        .collect::<Vec<_>>()
                );
                let answer = call(
                    &self.http,
                    target.base_url,
                    target.credentials,
                    BROADCAST_PATH,
                    &call_body,
                )
                .await?;
                let token = answer.get("message_token").and_then(token_text);
                let failed = answer
                    .get("failed_list")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for f in failed {
                    let receiver = f
                        .get("receiver")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let Some(&i) = chunk.iter().find(|&&i| batch.addresses[i] == receiver) else {
                        continue;
                    };
                    if outcomes[i].is_none() {
                        outcomes[i] = Some(Err(classify(
                            f.get("status").and_then(Value::as_i64).unwrap_or(-1),
                            f.get("status_message")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        )));
                    }
                }
                for &i in &chunk {
                    if outcomes[i].is_none() && tokens[i].is_none() {
                        tokens[i].clone_from(&token);
                    }
                }
            }
            alive.retain(|&i| outcomes[i].is_none());
        }
        Ok(outcomes
            .into_iter()
            .zip(tokens)
            .map(|(outcome, token)| {
                outcome.unwrap_or(Ok(Sent {
                    platform_message_id: token,
                    media_reference: None,
                }))
            })
            .collect())
    }
}

/// How many of the users `rest` (indexes into `addresses`) fit in one broadcast of `body`
/// within Viber's 30 KB (at least one, else the message alone is too large).
fn fitting(body: &Value, rest: &[usize], addresses: &[String]) -> Result<usize, SendError> {
    let mut empty = body.clone();
    empty["broadcast_list"] = json!([]);
    let mut size = empty.to_string().len();
    let mut n = 0;
    for &i in rest {
        // The id quoted, and a comma after all but the first.
        let cost = json!(addresses[i]).to_string().len() + usize::from(n > 0);
        if size + cost > MAX_REQUEST_BYTES {
            break;
        }
        size += cost;
        n += 1;
    }
    if n == 0 {
        sized(&empty)?;
        return Err(invalid(format!(
            "the Viber message leaves no room within {MAX_REQUEST_BYTES} bytes for its recipients"
        )));
    }
    Ok(n)
}

impl OutboundAdapter for ViberSender {
    const PLATFORM: Platform = Platform::Viber;
    type Credentials = ViberCredentials;

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    fn default_base_url(&self) -> &str {
        &self.base_url
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    const BULK: Option<BulkSend> = crate::SPEC.bulk;

    async fn send_many(
        &self,
        target: Target<'_, ViberCredentials>,
        batch: Batch<'_>,
    ) -> Result<BulkSent, SendError> {
        self.broadcast(target, batch).await
    }

    async fn send(
        &self,
        target: Target<'_, ViberCredentials>,
        job: &OutboundJob,
    ) -> Result<Sent, SendError> {
        if job.address.is_empty() {
            return Err(invalid(
                "a Viber message needs the user's Viber id as address",
            ));
        }
        let mut bodies = self
            .messages(target.credentials, &job.bot_id, &job.content)
            .await?;
        for m in &mut bodies {
            m["receiver"] = json!(job.address);
            sized(m)?;
        }
        let mut first = None;
        for body in bodies {
            let answer = call(
                &self.http,
                target.base_url,
                target.credentials,
                SEND_PATH,
                &body,
            )
            .await?;
            if first.is_none() {
                first = answer.get("message_token").and_then(token_text);
            }
        }
        Ok(Sent {
            platform_message_id: first,
            media_reference: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use patchbay_contract::content::Location;
    use patchbay_contract::{ChannelRef, SendSource, V1};
    use patchbay_testkit::viber::{Failure, FakeViber};

    fn code_of(e: &SendError) -> (&str, Option<i64>) {
        match e {
            SendError::Permanent(d) => (d.code.as_str(), d.platform_code),
            SendError::Retryable { .. } => ("retry", None),
        }
    }

    #[test]
    fn every_status_is_classified_as_the_table_says() {
        let expected = [
            (1, "invalid_request"),
            (2, "unauthorized"),
            (3, "invalid_request"),
            (4, "invalid_request"),
            (5, "user_unavailable"),
            (6, "user_unavailable"),
            (7, "account_locked"),
            (8, "unauthorized"),
            (9, "account_locked"),
            (10, "channel_misconfigured"),
            (11, "user_unavailable"),
            (12, "retry"),
            (13, "unsupported_content"),
            (14, "unsupported_content"),
            (15, "unauthorized"),
            (16, "platform_error"),
            (17, "unsupported_content"),
            (18, "retry"),
            (19, "platform_error"),
            (20, "unsupported_content"),
            (21, "platform_error"),
            (999, "platform_error"),
        ];
        for (status, code) in expected {
            let e = classify(status, "said");
            assert_eq!(code_of(&e).0, code, "status {status}");
            if code != "retry" {
                assert_eq!(code_of(&e).1, Some(status));
                assert!(e.to_string().contains("said"), "{e}");
            }
        }
        assert_eq!(
            classify(12, "tooManyRequests"),
            SendError::Retryable {
                reason: "Viber answered status 12: tooManyRequests".into(),
                after: Some(RATE_RETRY_AFTER),
            }
        );
    }

    fn url_media(url: Option<&str>, caption: Option<&str>) -> Media {
        Media {
            url: url.map(str::to_owned),
            file_id: None,
            caption: caption.map(str::to_owned),
            filename: None,
            mime_type: None,
            media_id: None,
            download_url: None,
            preview_url: None,
            duration_ms: None,
            size_bytes: None,
        }
    }

    #[test]
    fn renders_the_content_model_as_viber_messages() {
        let pick = Content::Buttons {
            text: "Pick".into(),
            buttons: vec![
                Button::Postback {
                    title: "Yes".into(),
                    payload: "YES".into(),
                },
                Button::Reply {
                    title: "Maybe".into(),
                },
                Button::Url {
                    title: "Site".into(),
                    url: "https://x.test".into(),
                    reuse_seconds: None,
                },
            ],
        };
        let cases: Vec<(Content, Value)> = vec![
            (
                Content::Text { text: "hi".into() },
                json!([{"type": "text", "text": "hi"}]),
            ),
            (
                Content::Image(url_media(Some("https://i/p.png"), Some("Look"))),
                json!([{"type": "picture", "media": "https://i/p.png", "text": "Look"}]),
            ),
            (
                Content::Image(url_media(Some("https://i/p.png"), None)),
                json!([{"type": "picture", "media": "https://i/p.png", "text": ""}]),
            ),
            (
                Content::Video(Media {
                    size_bytes: Some(1_048_576),
                    duration_ms: Some(12_300),
                    preview_url: Some("https://v/v.jpg".into()),
                    ..url_media(Some("https://v/v.mp4"), Some("Clip"))
                }),
                json!([{"type": "video", "media": "https://v/v.mp4", "size": 1_048_576,
                        "duration": 13, "thumbnail": "https://v/v.jpg"},
                       {"type": "text", "text": "Clip"}]),
            ),
            (
                Content::File(Media {
                    size_bytes: Some(2_048),
                    ..url_media(Some("https://f/report.pdf?x=1"), None)
                }),
                json!([{"type": "file", "media": "https://f/report.pdf?x=1", "size": 2048,
                        "file_name": "report.pdf"}]),
            ),
            (
                Content::Video(url_media(Some("https://v/v.mp4"), Some("Clip"))),
                json!([{"type": "url", "media": "https://v/v.mp4"}, {"type": "text", "text": "Clip"}]),
            ),
            (
                Content::File(url_media(Some("https://f/r.pdf"), None)),
                json!([{"type": "url", "media": "https://f/r.pdf"}]),
            ),
            (
                Content::Location(Location {
                    latitude: 38.5,
                    longitude: -9.25,
                    name: Some("Rossio".into()),
                    address: None,
                }),
                json!([{"type": "location", "location": {"lat": 38.5, "lon": -9.25}},
                       {"type": "text", "text": "Rossio"}]),
            ),
            (
                Content::Sticker { id: "40100".into() },
                json!([{"type": "sticker", "sticker_id": 40100}]),
            ),
            (
                pick,
                json!([{"type": "text", "text": "Pick", "min_api_version": 4,
                        "tracking_data": r#"{"pb":{"YES":"Yes"}}"#,
                        "keyboard": {"Type": "keyboard", "DefaultHeight": false, "Buttons": [
                            {"Columns": 6, "Rows": 1, "ActionType": "reply", "ActionBody": "YES", "Text": "Yes", "Silent": true},
                            {"Columns": 6, "Rows": 1, "ActionType": "reply", "ActionBody": "Maybe", "Text": "Maybe"},
                            {"Columns": 6, "Rows": 1, "ActionType": "open-url", "ActionBody": "https://x.test", "Text": "Site"}]}}]),
            ),
            (
                Content::QuickReplies {
                    text: "Colour?".into(),
                    replies: vec![
                        QuickReply {
                            title: "Blue".into(),
                            payload: None,
                        },
                        QuickReply {
                            title: "Red".into(),
                            payload: None,
                        },
                    ],
                },
                json!([{"type": "text", "text": "Colour?",
                        "keyboard": {"Type": "keyboard", "DefaultHeight": false, "Buttons": [
                            {"Columns": 3, "Rows": 1, "ActionType": "reply", "ActionBody": "Blue", "Text": "Blue"},
                            {"Columns": 3, "Rows": 1, "ActionType": "reply", "ActionBody": "Red", "Text": "Red"}]}}]),
            ),
        ];
        for (content, expected) in cases {
            assert_eq!(json!(render(&content).unwrap()), expected, "{content:?}");
        }
        for (refused, code) in [
            (
                Content::Image(Media {
                    url: None,
                    file_id: Some("f".into()),
                    caption: None,
                    filename: None,
                    mime_type: None,
                    media_id: None,
                    download_url: None,
                    preview_url: None,
                    duration_ms: None,
                    size_bytes: None,
                }),
                "unsupported_content",
            ),
            (Content::Sticker { id: "smile".into() }, "invalid_request"),
            (
                Content::Text {
                    text: "x".repeat(7001),
                },
                "invalid_request",
            ),
        ] {
            let e = render(&refused).unwrap_err();
            assert_eq!(code_of(&e).0, code, "{refused:?}");
        }
        let postback = postback_title(Some(r#"{"pb":{"YES":"Yes"}}"#), "YES");
        assert_eq!(postback.as_deref(), Some("Yes"));
        assert_eq!(postback_title(Some(r#"{"pb":{"YES":"Yes"}}"#), "yes"), None);
        assert_eq!(postback_title(Some("not json"), "YES"), None);
        assert_eq!(postback_title(None, "YES"), None);
    }

    #[test]
    fn carousels_are_rich_media_of_six_cards_at_most() {
        let card = |i: usize, image: bool, buttons: usize| Card {
            title: format!("Card <{i}>"),
            subtitle: Some("a & b".into()),
            image_url: image.then(|| format!("https://i/{i}.png")),
            buttons: (0..buttons)
                .map(|b| Button::Postback {
                    title: format!("Buy {b}"),
                    payload: format!("BUY_{i}_{b}"),
                })
                .collect(),
        };
        let seven = Content::Carousel {
            cards: (0..7).map(|i| card(i, i % 2 == 0, (i + 3) % 4)).collect(),
        };
        let out = render(&seven).unwrap();
        assert_eq!(out.len(), 2, "six cards, then one");
        let first = &out[0];
        assert_eq!(first["type"], "rich_media");
        assert_eq!(first["min_api_version"], 4, "silent postback buttons");
        let rows = first["rich_media"]["ButtonsGroupRows"].as_u64().unwrap();
        assert_eq!(rows, 7, "a 3-row image, a text row and three buttons");
        let buttons = first["rich_media"]["Buttons"].as_array().unwrap();
        let total: u64 = buttons.iter().map(|b| b["Rows"].as_u64().unwrap()).sum();
        assert_eq!(total, rows * 6, "every card fills the group's rows");
        assert_eq!(buttons[1]["Text"], "<b>Card &lt;0&gt;</b><br>a &amp; b");
        let tracking: Value =
            serde_json::from_str(first["tracking_data"].as_str().unwrap()).unwrap();
        assert_eq!(tracking["pb"]["BUY_0_2"], "Buy 2");
        let plain = render(&Content::Carousel {
            cards: vec![card(0, true, 0)],
        })
        .unwrap();
        assert_eq!(plain[0]["min_api_version"], 2, "rich media alone");
        assert!(plain[0].get("tracking_data").is_none());
    }

    fn creds() -> ViberCredentials {
        ViberCredentials {
            auth_token: fx::AUTH_TOKEN.into(),
            sender_name: Some("Shop".into()),
            sender_avatar: Some("https://cdn.example/shop.jpg".into()),
        }
    }

    fn job(content: Content) -> OutboundJob {
        OutboundJob {
            v: V1,
            message_id: "msg_01JH0000000000000000000001".into(),
            bot_id: "bot_1".into(),
            channel: ChannelRef {
                id: "ch_1".into(),
                platform: Platform::Viber,
            },
            user_id: "usr_1".into(),
            conversation_id: "cnv_1".into(),
            address: fx::USER.into(),
            content,
            source: SendSource::Api,
            source_id: None,
            in_reply_to: None,
            tag: None,
            created_at: chrono::Utc::now(),
            fresh: true,
            also: Vec::new(),
        }
    }

    /// A fake Viber whose bot has a webhook (Viber sends nothing for bots without one) and
    /// the fixtures' user as subscriber.
    async fn fake() -> (FakeViber, tokio::task::JoinHandle<()>) {
        let viber = FakeViber::start().await;
        viber.add_bot(fx::AUTH_TOKEN, "Shop");
        viber.add_subscriber(fx::AUTH_TOKEN, fx::USER);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!(
            "http://{}/webhooks/viber/ch_1",
            listener.local_addr().unwrap()
        );
        let app = axum::Router::new().fallback(|| async { "" });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = patchbay_platform::http::client_builder(Duration::from_secs(5))
            .build()
            .unwrap();
        crate::setup::write(&http, &viber.base_url(), &creds(), &hook)
            .await
            .unwrap();
        (viber, server)
    }

    fn sender() -> ViberSender {
        let limits = Limits {
            per_channel_per_second: 100,
            per_conversation_per_second: 100,
            per_conversation_burst: 100,
        };
        ViberSender::new(DEFAULT_BASE_URL, Duration::from_secs(5), limits, None).unwrap()
    }

    async fn send(
        viber: &FakeViber,
        creds: &ViberCredentials,
        content: Content,
    ) -> Result<Sent, SendError> {
        let base = viber.base_url();
        let target = Target {
            credentials: creds,
            base_url: &base,
        };
        sender().send(target, &job(content)).await
    }

    #[tokio::test]
    async fn a_message_goes_out_with_the_token_and_sender_and_reports_viber_s_token() {
        let (viber, _hook) = fake().await;
        let sent = send(
            &viber,
            &creds(),
            Content::Text {
                text: "hello".into(),
            },
        )
        .await
        .unwrap();
        let calls = viber.calls_to(SEND_PATH);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].token.as_deref(), Some(fx::AUTH_TOKEN));
        assert_eq!(
            calls[0].body,
            json!({"type": "text", "text": "hello", "receiver": fx::USER,
                   "sender": {"name": "Shop", "avatar": "https://cdn.example/shop.jpg"}})
        );
        assert_eq!(
            sent.platform_message_id,
            calls[0].message_token.map(|t| t.to_string())
        );
        let unnamed = ViberCredentials {
            sender_name: None,
            sender_avatar: None,
            ..creds()
        };
        send(&viber, &unnamed, Content::Text { text: "x".into() })
            .await
            .unwrap();
        assert_eq!(
            viber.calls_to(SEND_PATH)[1].body["sender"],
            json!({"name": "Patchbay"}),
            "without a view or a sender_name"
        );
        // A carousel of seven: two rich media messages, the first one's token reported.
        let cards = (0..7)
            .map(|i| Card {
                title: format!("Card {i}"),
                subtitle: None,
                image_url: Some(format!("https://i/{i}.png")),
                buttons: vec![Button::Url {
                    title: "See".into(),
                    url: "https://shop.example/p".into(),
                    reuse_seconds: None,
                }],
            })
            .collect();
        let sent = send(&viber, &creds(), Content::Carousel { cards })
            .await
            .unwrap();
        let calls = viber.calls_to(SEND_PATH);
        assert_eq!(calls.len(), 4);
        assert!(
            calls[2..].iter().all(|c| c.status == Some(0)),
            "the fake took both shapes"
        );
        assert_eq!(
            sent.platform_message_id,
            calls[2].message_token.map(|t| t.to_string())
        );
    }

    #[tokio::test]
    async fn refusals_and_failures_are_classified() {
        let (viber, _hook) = fake().await;
        let hi = || Content::Text { text: "hi".into() };
        let wrong = ViberCredentials {
            auth_token: "not-the-token".into(),
            ..creds()
        };
        assert_eq!(
            code_of(&send(&viber, &wrong, hi()).await.unwrap_err()),
            ("unauthorized", Some(2))
        );
        viber.fail_next(SEND_PATH, [Failure::Http(500)]);
        assert_eq!(
            code_of(&send(&viber, &creds(), hi()).await.unwrap_err()).0,
            "retry"
        );
        viber.fail_next(SEND_PATH, [Failure::Status(12)]);
        let SendError::Retryable { after, .. } = send(&viber, &creds(), hi()).await.unwrap_err()
        else {
            panic!("retry expected");
        };
        assert_eq!(after, Some(RATE_RETRY_AFTER));
        viber.remove_subscriber(fx::AUTH_TOKEN, fx::USER);
        assert_eq!(
            code_of(&send(&viber, &creds(), hi()).await.unwrap_err()),
            ("user_unavailable", Some(6))
        );
        let too_big = json!({"type": "text", "text": "x".repeat(MAX_REQUEST_BYTES)});
        assert_eq!(code_of(&sized(&too_big).unwrap_err()).0, "invalid_request");
        let unreachable = Target {
            credentials: &creds(),
            base_url: "http://127.0.0.1:9",
        };
        let e = sender().send(unreachable, &job(hi())).await.unwrap_err();
        assert_eq!(code_of(&e).0, "retry");
        assert!(!e.to_string().contains(fx::AUTH_TOKEN));
    }

    #[tokio::test]
    async fn user_details_are_read_and_limited_by_viber() {
        let (viber, _hook) = fake().await;
        viber.set_profile(
            fx::USER,
            json!({"name": "Ana", "avatar": "https://p/a.jpg", "language": "pt"}),
        );
        let http = patchbay_platform::http::client_builder(Duration::from_secs(5))
            .build()
            .unwrap();
        let base = viber.base_url();
        let expected =
            json!({"display_name": "Ana", "avatar_url": "https://p/a.jpg", "locale": "pt"});
        for _ in 0..2 {
            assert_eq!(
                user_details(&http, &base, &creds(), fx::USER).await,
                Some(expected.clone())
            );
        }
        assert_eq!(
            user_details(&http, &base, &creds(), fx::USER).await,
            None,
            "a third within 12 h"
        );
        assert_eq!(user_details(&http, &base, &creds(), "stranger").await, None);
    }

    async fn broadcast(
        viber: &FakeViber,
        addresses: &[String],
        content: &Content,
    ) -> Result<BulkSent, SendError> {
        let base = viber.base_url();
        let creds = creds();
        let target = Target {
            credentials: &creds,
            base_url: &base,
        };
        let batch = Batch {
            id: "bat_1",
            bot_id: "bot_1",
            content,
            addresses,
        };
        sender().send_many(target, batch).await
    }

    fn receivers(viber: &FakeViber) -> Vec<String> {
        viber
            .messages()
            .iter()
            .map(|m| m["receiver"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_broadcast_reaches_the_subscribers_in_one_call_per_part_and_fails_the_others_alone() {
        let (viber, _hook) = fake().await;
        viber.add_subscriber(fx::AUTH_TOKEN, "sub2==");
        let addresses = [fx::USER.to_owned(), "gone==".into(), "sub2==".into()];
        // A location with a name: two Viber messages.
        let place = Content::Location(Location {
            latitude: 38.7,
            longitude: -9.1,
            name: Some("Shop".into()),
            address: None,
        });
        let outcomes = broadcast(&viber, &addresses, &place).await.unwrap();
        let calls = viber.calls_to(BROADCAST_PATH);
        let lists: Vec<&Value> = calls.iter().map(|c| &c.body["broadcast_list"]).collect();
        assert_eq!(
            lists,
            [
                &json!([fx::USER, "gone==", "sub2=="]),
                &json!([fx::USER, "sub2=="])
            ],
            "the user refused the first part is not sent the second"
        );
        assert!(
            calls
                .iter()
                .all(|c| c.body.get("receiver").is_none() && c.body["sender"]["name"] == "Shop")
        );
        let first_token = calls[0].message_token.map(|t| t.to_string());
        assert_eq!(
            outcomes[0].as_ref().unwrap().platform_message_id,
            first_token
        );
        assert_eq!(
            code_of(outcomes[1].as_ref().unwrap_err()),
            ("user_unavailable", Some(6))
        );
        assert_eq!(
            outcomes[2].as_ref().unwrap().platform_message_id,
            first_token
        );
        assert_eq!(
            receivers(&viber),
            [fx::USER, "sub2==", fx::USER, "sub2=="],
            "both parts to each subscriber"
        );
        assert!(viber.calls_to(SEND_PATH).is_empty());
    }

    #[tokio::test]
    async fn a_broadcast_too_large_for_one_call_goes_in_as_few_as_fit_and_a_failure_fails_it_whole()
    {
        let (viber, _hook) = fake().await;
        let users: Vec<String> = (0..BROADCAST_MAX).map(|n| format!("{n:022}==")).collect();
        for u in &users {
            viber.add_subscriber(fx::AUTH_TOKEN, u);
        }
        let mut too_many = users.clone();
        too_many.push("one-more==".into());
        let e = broadcast(&viber, &too_many, &Content::Text { text: "hi".into() })
            .await
            .unwrap_err();
        assert_eq!(code_of(&e).0, "invalid_request");
        // 7,000 four-byte characters: 28 KB of the 30 a call may be, before the list.
        let long = Content::Text {
            text: "\u{1F600}".repeat(MAX_TEXT_CHARS),
        };
        let outcomes = broadcast(&viber, &users, &long).await.unwrap();
        assert!(outcomes.iter().all(Result::is_ok));
        let calls = viber.calls_to(BROADCAST_PATH);
        assert!(calls.len() > 1, "the list does not fit in one call");
        assert!(
            calls
                .iter()
                .all(|c| c.status == Some(0) && c.body.to_string().len() <= MAX_REQUEST_BYTES)
        );
        let mut got = receivers(&viber);
        got.sort();
        assert_eq!(got, users, "each subscriber once");
        // Viber down: the batch fails as a whole, to be tried again.
        viber.fail_next(BROADCAST_PATH, [Failure::Http(503)]);
        let e = broadcast(&viber, &users[..3], &Content::Text { text: "hi".into() })
            .await
            .unwrap_err();
        assert_eq!(code_of(&e).0, "retry");
    }
}
