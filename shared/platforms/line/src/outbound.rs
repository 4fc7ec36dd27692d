//! Outbound LINE: the content model rendered as LINE message objects, sent with the reply or
//! the push API, LINE's answers classified, and profiles (`reference/platforms.md` §6.3–§6.5).
//!
//! Every call authenticates with `Authorization: Bearer <channel access token>`. The address
//! is the chat: a user id, or a group or room id.
//!
//! | content | message object(s) |
//! |---|---|
//! | text | `text` |
//! | image | `image` (`originalContentUrl`, and the same URL as `previewImageUrl`); a caption follows as a `text` |
//! | video with `preview_url` | `video` (`originalContentUrl`, `previewImageUrl`); a caption follows as a `text` |
//! | audio or voice with `duration_ms` | `audio` (`originalContentUrl`, `duration`); a caption follows as a `text` |
//! | other video, audio, voice; file | a `text`: the caption (else the file name) and the URL (LINE shows a video only with a preview image, audio only with its duration, and bots cannot send files) |
//! | location | `location` (`title`: the name, else "Location"; `address`: the address, else the coordinates) |
//! | sticker | `sticker` (`packageId`, `stickerId` from `<packageId>:<stickerId>`) |
//! | buttons | exactly two: a `confirm` template; otherwise `buttons` templates of at most 4 actions each (the text on the first, "…" on the others); a postback button is a `postback` action (`displayText` its title), a reply button a `message` action, a URL button a `uri` action; `altText` the text |
//! | quick replies | a `text` with `quickReply.items` (≤ 13): a `postback` action when the reply has a payload, else a `message` action |
//! | carousel | a `carousel` template (columns: `title`, `text` the subtitle, `thumbnailImageUrl`, the buttons as actions) when every card has the same number (1 to 3) of buttons; otherwise card by card (`degrade`) |
//! | native for LINE (`{"type": "native", "platform": "line", "message": {…}}`) | the message object as given: Flex Messages (`flex`, with `altText` and `contents`) and anything else LINE takes, passed through unread (LINE judges it) |
//! | media by `file_id` only, template, native for another platform | refused: `unsupported_content` |
//!
//! Labels are cut to LINE's 20 characters, template texts to its limits (160 for buttons,
//! 240 for confirm, 120 for a carousel column, 60 when it has a title or image), `altText` to
//! 400.
//!
//! Reply or push: an inline reply (`OutboundJob::in_reply_to`) takes the event's reply token
//! from the replies bucket (`patchbay_platform::replies`; taken once, so of several messages
//! answering one event only the first uses it). While the token is fresh ([`REPLY_TOKEN_FRESH`]
//! after the event; LINE says to use it within about a minute) and the message fits in one
//! call, it goes out with `POST /v2/bot/message/reply`, which does not count against the
//! monthly quota. Otherwise, and when LINE answers that the reply token is invalid (used or
//! expired), it goes out with `POST /v2/bot/message/push` `{"to": <address>}`, each call with
//! an `X-Line-Retry-Key` derived from the Patchbay message id and the call's position
//! ([`retry_key`]), so a retried push is never sent twice: LINE answers a repeated key with
//! 409, which counts as sent. LINE takes at most 5 messages per call: a message that renders
//! to more is sent in calls of 5, in order, and the first refusal stops the rest (a retry
//! sends again from the first call, with the same keys, which LINE answers with 409).
//! The reply API has no retry key: a reply call that got no answer is retried as a push, and
//! if the reply had in fact arrived the user sees the message twice.
//!
//! A broadcast's message goes to up to [`MULTICAST_MAX`] users in one call: `POST
//! /v2/bot/message/multicast` `{"to": [<user id>, …], "messages": […]}`
//! ([`OutboundAdapter::send_many`]), each call with an `X-Line-Retry-Key` derived from the
//! batch's id and the call's position, so a retried batch is answered 409 and sent once.
//! Multicast reaches users only: a group or room in a batch fails alone (`invalid_request`).
//! LINE answers `{}`, with no message ids, and does not say which users it reached: a user who
//! blocked the bot is counted as sent, as LINE counts them.
//!
//! LINE's answers (`{"message", "details": [{"message", "property"}]}`; the HTTP status is the
//! `platform_code`):
//!
//! | answer | Patchbay |
//! |---|---|
//! | 200 | sent: `sentMessages[0].id` is the platform message id |
//! | 409 to a push (the retry key was accepted before) | sent (`sentMessages` when LINE gives them) |
//! | 400 "Invalid reply token" to a reply | sent again with push |
//! | 400 naming the property `to` (no such user, group or room, or not a friend) | `user_unavailable` |
//! | 400 otherwise, 413 | `invalid_request` |
//! | 401 (bad or expired channel access token), 403 (not allowed for the channel's plan) | `unauthorized` |
//! | 404 | `user_unavailable` |
//! | 429 "You have reached your monthly limit." | `quota_exceeded` (not retried: the quota is monthly) |
//! | 429 otherwise (the rate limit) | retry, after `Retry-After` (else 1 s) |
//! | 5xx, no answer, timeout | retry (a push with the same retry key) |
//! | anything else | `platform_error` |
//!
//! [`profile`] reads a user's name, picture and language (`GET /v2/bot/profile/{userId}`,
//! only for friends of the bot; in groups and rooms `GET /v2/bot/group/{groupId}/member/
//! {userId}` and `/v2/bot/room/{roomId}/member/{userId}`).

use std::time::Duration;

use patchbay_contract::content::{Button, Card, Location, Media, QuickReply};
use patchbay_contract::{Content, OutboundJob, Platform, PlatformUser};
use patchbay_platform::replies::Replies;
use patchbay_platform::{
    Batch, BulkSend, BulkSent, Capabilities, Limits, OutboundAdapter, SendError, Sent, Target,
    degrade,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Digest;

use crate::LineCredentials;
use crate::capabilities::{CAPABILITIES, CARD_BY_CARD};
use crate::inbound::Source;

/// LINE's API.
pub const DEFAULT_BASE_URL: &str = "https://api.line.me";
/// Replies with a reply token.
pub const REPLY_PATH: &str = "/v2/bot/message/reply";
/// Pushes.
pub const PUSH_PATH: &str = "/v2/bot/message/push";
/// Multicasts: one message to many users.
pub const MULTICAST_PATH: &str = "/v2/bot/message/multicast";
/// Users per multicast at most.
pub const MULTICAST_MAX: usize = 500;
/// Profiles of friends: `<PROFILE_PATH>/<userId>`.
pub const PROFILE_PATH: &str = "/v2/bot/profile";
/// The idempotency header of pushes.
pub const RETRY_KEY_HEADER: &str = "x-line-retry-key";
/// Messages per call.
pub const MAX_PER_CALL: usize = 5;
/// How long after its event a reply token is used (LINE: about a minute; the margin covers
/// clocks and the call itself).
pub const REPLY_TOKEN_FRESH: Duration = Duration::from_secs(50);
/// What LINE says of a used or expired reply token.
const INVALID_REPLY_TOKEN: &str = "invalid reply token";
/// What LINE says when the monthly message quota is used up.
const MONTHLY_LIMIT: &str = "monthly limit";
/// The wait after a 429 without `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How much of an error body is quoted.
const QUOTE_MAX: usize = 300;
/// LINE's limits on what a message shows.
const LABEL_MAX: usize = 20;
const ALT_TEXT_MAX: usize = 400;
const BUTTONS_TEXT_MAX: usize = 160;
const CONFIRM_TEXT_MAX: usize = 240;
const COLUMN_TEXT_MAX: usize = 120;
const COLUMN_TEXT_WITH_TITLE_MAX: usize = 60;
const TITLE_MAX: usize = 40;
const LOCATION_FIELD_MAX: usize = 100;
const BUTTONS_ACTIONS_MAX: usize = 4;
const COLUMN_ACTIONS_MAX: usize = 3;

/// Sends through LINE's reply and push APIs.
#[derive(Debug, Clone)]
pub struct LineSender {
    http: reqwest::Client,
    base_url: String,
    limits: Limits,
    replies: Option<Replies>,
}

/// The name of group `group_id` (`GET <base>/v2/bot/group/{groupId}/summary`): `None` when
/// LINE has none or refuses (the bot left the group) or cannot be reached. Never fails the
/// caller.
pub async fn group_name(
    http: &reqwest::Client,
    base_url: &str,
    creds: &LineCredentials,
    group_id: &str,
) -> Option<String> {
    let mut url = api_url(base_url, "/v2/bot").ok()?;
    url.path_segments_mut()
        .ok()?
        .extend(["group", group_id, "summary"]);
    let summary: Value = read(http, url, creds, "group summary").await?;
    summary
        .get("groupName")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .map(str::to_owned)
}

impl LineSender {
    /// A sender with `base_url` as default API, `timeout` per call and the given pace; without
    /// reply tokens (every message is pushed) until [`LineSender::with_replies`].
    pub fn new(base_url: &str, timeout: Duration, limits: Limits) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: patchbay_platform::http::client_builder(timeout).build()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            limits,
            replies: None,
        })
    }

    /// Uses the reply tokens the ingress keeps in `replies` for inline replies.
    #[must_use]
    pub fn with_replies(mut self, replies: Replies) -> Self {
        self.replies = Some(replies);
        self
    }
}

fn invalid(message: impl Into<String>) -> SendError {
    SendError::permanent("invalid_request", message, None)
}

fn unsupported(message: impl Into<String>) -> SendError {
    SendError::permanent("unsupported_content", message, None)
}

/// `s` cut to `max` characters (the last one an ellipsis when cut).
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let kept: String = s.chars().take(max.saturating_sub(1)).collect();
        let mut out = kept.trim_end().to_owned();
        out.push('…');
        out
    }
}

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

fn caption(m: &Media) -> Option<&str> {
    m.caption.as_deref().filter(|c| !c.trim().is_empty())
}

fn url_of<'a>(m: &'a Media, kind: &str) -> Result<&'a str, SendError> {
    m.url.as_deref().ok_or_else(|| {
        unsupported(format!(
            "LINE sends {kind}s by URL only (a LINE message id cannot be sent again): this one has no url"
        ))
    })
}

/// Media LINE cannot show as such: a text with the caption (or file name) and the URL.
fn as_link(kind: &str, m: &Media) -> Result<Vec<Value>, SendError> {
    let url = url_of(m, kind)?;
    let lines: Vec<&str> = [caption(m).or(m.filename.as_deref()), Some(url)]
        .into_iter()
        .flatten()
        .collect();
    Ok(vec![text(&lines.join("\n"))])
}

/// A button as a LINE action.
fn action(b: &Button) -> Value {
    match b {
        Button::Postback { title, payload } => json!({"type": "postback",
            "label": cut(title, LABEL_MAX), "data": payload, "displayText": title}),
        Button::Reply { title } => {
            json!({"type": "message", "label": cut(title, LABEL_MAX), "text": title})
        }
        Button::Url { title, url, .. } => {
            json!({"type": "uri", "label": cut(title, LABEL_MAX), "uri": url})
        }
    }
}

fn template(alt_text: &str, template: Value) -> Value {
    json!({"type": "template", "altText": cut(alt_text, ALT_TEXT_MAX), "template": template})
}

fn buttons(t: &str, bs: &[Button]) -> Vec<Value> {
    if bs.len() == 2 {
        let actions: Vec<Value> = bs.iter().map(action).collect();
        return vec![template(
            t,
            json!({"type": "confirm", "text": cut(t, CONFIRM_TEXT_MAX), "actions": actions}),
        )];
    }
    bs.chunks(BUTTONS_ACTIONS_MAX)
        .enumerate()
        .map(|(i, chunk)| {
            let shown = if i == 0 {
                cut(t, BUTTONS_TEXT_MAX)
            } else {
                "…".into()
            };
            let actions: Vec<Value> = chunk.iter().map(action).collect();
            template(
                t,
                json!({"type": "buttons", "text": shown, "actions": actions}),
            )
        })
        .collect()
}

fn quick_replies(t: &str, replies: &[QuickReply]) -> Value {
    let items: Vec<Value> = replies
        .iter()
        .map(|QuickReply { title, payload }| {
            let a = match payload {
                Some(p) => json!({"type": "postback", "label": cut(title, LABEL_MAX),
                                  "data": p, "displayText": title}),
                None => json!({"type": "message", "label": cut(title, LABEL_MAX), "text": title}),
            };
            json!({"type": "action", "action": a})
        })
        .collect();
    let mut m = text(t);
    m["quickReply"] = json!({ "items": items });
    m
}

/// Whether LINE's carousel can take `cards`: every card with the same number (1 to 3) of
/// buttons.
pub fn fits_carousel(cards: &[Card]) -> bool {
    let n = cards.first().map_or(0, |c| c.buttons.len());
    (1..=COLUMN_ACTIONS_MAX).contains(&n) && cards.iter().all(|c| c.buttons.len() == n)
}

fn carousel(cards: &[Card]) -> Value {
    let columns: Vec<Value> = cards
        .iter()
        .map(|c| {
            let mut col = serde_json::Map::new();
            let (title, body) = match c.subtitle.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(sub) => (Some(c.title.as_str()), sub),
                None => (None, c.title.as_str()),
            };
            if let Some(u) = &c.image_url {
                col.insert("thumbnailImageUrl".into(), json!(u));
            }
            if let Some(t) = title {
                col.insert("title".into(), json!(cut(t, TITLE_MAX)));
            }
            let max = if title.is_some() || c.image_url.is_some() {
                COLUMN_TEXT_WITH_TITLE_MAX
            } else {
                COLUMN_TEXT_MAX
            };
            col.insert("text".into(), json!(cut(body, max)));
            let actions: Vec<Value> = c.buttons.iter().map(action).collect();
            col.insert("actions".into(), json!(actions));
            Value::Object(col)
        })
        .collect();
    let alt: Vec<&str> = cards.iter().map(|c| c.title.as_str()).collect();
    template(
        &alt.join(", "),
        json!({"type": "carousel", "columns": columns}),
    )
}

fn location(l: &Location) -> Value {
    let title = l.name.as_deref().unwrap_or("Location");
    let address = l
        .address
        .clone()
        .unwrap_or_else(|| format!("{}, {}", l.latitude, l.longitude));
    json!({"type": "location", "title": cut(title, LOCATION_FIELD_MAX),
           "address": cut(&address, LOCATION_FIELD_MAX),
           "latitude": l.latitude, "longitude": l.longitude})
}

/// Renders one (already degraded) content as LINE message objects, in order.
pub fn render(content: &Content) -> Result<Vec<Value>, SendError> {
    Ok(match content {
        Content::Text { text: t } => vec![text(t)],
        Content::Image(m) => {
            let url = url_of(m, "image")?;
            let mut out =
                vec![json!({"type": "image", "originalContentUrl": url, "previewImageUrl": url})];
            out.extend(caption(m).map(text));
            out
        }
        // LINE shows a video only with a preview image, audio only with its duration.
        Content::Video(m) => match &m.preview_url {
            Some(preview) => {
                let mut out = vec![json!({"type": "video",
                    "originalContentUrl": url_of(m, "video")?, "previewImageUrl": preview})];
                out.extend(caption(m).map(text));
                out
            }
            None => as_link("video", m)?,
        },
        Content::Audio(m) | Content::Voice(m) => match m.duration_ms {
            Some(duration) => {
                let mut out = vec![json!({"type": "audio",
                    "originalContentUrl": url_of(m, "audio")?, "duration": duration})];
                out.extend(caption(m).map(text));
                out
            }
            None if matches!(content, Content::Voice(_)) => as_link("voice message", m)?,
            None => as_link("audio", m)?,
        },
        Content::File(m) => as_link("file", m)?,
        Content::Location(l) => vec![location(l)],
        Content::Sticker { id } => {
            let (package, sticker) = id
                .split_once(':')
                .filter(|(p, s)| !p.is_empty() && !s.is_empty())
                .ok_or_else(|| {
                    unsupported(format!(
                        "a LINE sticker id is <packageId>:<stickerId>, not {id:?}"
                    ))
                })?;
            vec![json!({"type": "sticker", "packageId": package, "stickerId": sticker})]
        }
        Content::Buttons {
            text: t,
            buttons: bs,
        } => buttons(t, bs),
        Content::QuickReplies { text: t, replies } => vec![quick_replies(t, replies)],
        Content::Carousel { cards } => vec![carousel(cards)],
        other => {
            return Err(unsupported(format!(
                "LINE cannot show {} messages",
                other.kind()
            )));
        }
    })
}

/// `content` as LINE message objects: degraded as LINE needs, then rendered; LINE's own
/// message objects (`native`, e.g. Flex Messages) as they are.
pub fn messages(content: &Content) -> Result<Vec<Value>, SendError> {
    if let Content::Native {
        platform: Platform::Line,
        message,
    } = content
    {
        if message.get("type").and_then(Value::as_str).is_none() {
            return Err(invalid(
                "a native LINE message is a LINE message object with a type",
            ));
        }
        return Ok(vec![message.clone()]);
    }
    let caps = match content {
        Content::Carousel { cards } if !fits_carousel(cards) => &CARD_BY_CARD,
        _ => &CAPABILITIES,
    };
    let parts = degrade(content, caps, "LINE").map_err(SendError::Permanent)?;
    let mut out = Vec::new();
    for p in &parts {
        out.extend(render(p)?);
    }
    Ok(out)
}

/// The `X-Line-Retry-Key` of push call `index` of the Patchbay message `message_id`: a
/// name-based UUID (the version 5 layout over SHA-1), the same every time.
pub fn retry_key(message_id: &str, index: usize) -> String {
    let digest = sha1::Sha1::digest(format!("patchbay:line:{message_id}:{index}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// LINE's error body, as far as it can be read.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Vec<Detail>,
}

#[derive(Debug, Default, Deserialize)]
struct Detail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    property: Option<String>,
}

fn describe(status: u16, body: &[u8]) -> (String, Option<ErrorBody>) {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let said = match &parsed {
        Some(e) => {
            let mut parts: Vec<String> = e.message.iter().cloned().collect();
            parts.extend(e.details.iter().map(|d| match (&d.property, &d.message) {
                (Some(p), Some(m)) => format!("{p}: {m}"),
                (p, m) => p.clone().or_else(|| m.clone()).unwrap_or_default(),
            }));
            parts.retain(|p| !p.is_empty());
            parts.join("; ")
        }
        None => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let said: String = said.chars().take(QUOTE_MAX).collect();
    let text = if said.is_empty() {
        format!("LINE answered HTTP {status}")
    } else {
        format!("LINE answered HTTP {status}: {said}")
    };
    (text, parsed)
}

/// Whether LINE refused a reply because its token was used or expired.
pub fn is_invalid_reply_token(status: u16, body: &[u8]) -> bool {
    status == 400
        && serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .and_then(|e| e.message)
            .is_some_and(|m| m.to_ascii_lowercase().contains(INVALID_REPLY_TOKEN))
}

/// Classifies LINE's refusal of a call: its HTTP status, `Retry-After` and body.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
    let (description, parsed) = describe(status, body);
    let code = Some(i64::from(status));
    let permanent = |patchbay: &str, why: &str| {
        SendError::permanent(patchbay, format!("{why} ({description})"), code)
    };
    let names_to = parsed.as_ref().is_some_and(|e| {
        e.details
            .iter()
            .any(|d| d.property.as_deref() == Some("to"))
            || e.message.as_deref().is_some_and(|m| m.contains("'to'"))
    });
    let monthly = parsed.as_ref().is_some_and(|e| {
        e.message
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().contains(MONTHLY_LIMIT))
    });
    match status {
        429 if monthly => permanent(
            "quota_exceeded",
            "the channel's monthly message quota is used up; pushes fail until it renews or \
             the plan changes (replies to a user's message remain free)",
        ),
        429 => SendError::Retryable {
            reason: description,
            after: Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
        },
        500..=599 => SendError::Retryable {
            reason: description,
            after: None,
        },
        400 if names_to => permanent(
            "user_unavailable",
            "LINE knows no such user, group or room for this channel (or the user is not a \
             friend of the bot)",
        ),
        400 | 413 => permanent("invalid_request", "LINE refused the message"),
        401 => permanent("unauthorized", "LINE refused the channel access token"),
        403 => permanent(
            "unauthorized",
            "LINE does not allow this channel to use this API (plan or permission)",
        ),
        404 => permanent("user_unavailable", "LINE knows no such user"),
        _ => permanent("platform_error", "LINE refused the request"),
    }
}

/// `Retry-After` in seconds, when given.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// `<base><path>` as a URL, or the channel's misconfiguration.
pub(crate) fn api_url(base: &str, path: &str) -> Result<reqwest::Url, SendError> {
    reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/'))).map_err(|e| {
        SendError::permanent(
            "channel_misconfigured",
            format!("the LINE API base URL {base:?} is not a URL: {e}"),
            None,
        )
    })
}

/// LINE's answer to one call.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

/// Makes one authenticated call; an error only when LINE could not be reached.
pub(crate) async fn call(
    request: reqwest::RequestBuilder,
    creds: &LineCredentials,
    what: &str,
) -> Result<Answer, SendError> {
    let response = request
        .bearer_auth(&creds.channel_access_token)
        .headers(patchbay_platform::http::trace_headers())
        .send()
        .await
        .map_err(|e| SendError::Retryable {
            reason: format!("LINE unreachable ({what}): {}", e.without_url()),
            after: None,
        })?;
    let status = response.status().as_u16();
    let after = retry_after(response.headers());
    if status == 409
        && let Some(id) = response
            .headers()
            .get("x-line-accepted-request-id")
            .and_then(|v| v.to_str().ok())
    {
        tracing::info!(
            accepted_request_id = id,
            "LINE had accepted this push already"
        );
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| SendError::Retryable {
            reason: format!("LINE's answer was cut ({what}): {}", e.without_url()),
            after: None,
        })?
        .to_vec();
    Ok(Answer {
        status,
        after,
        body,
    })
}

/// The first `sentMessages[].id` of a body, when it has one.
fn first_sent(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/sentMessages/0/id").and_then(|id| {
        id.as_str()
            .map(str::to_owned)
            .or_else(|| Some(id.to_string()))
    })
}

/// `GET url`'s JSON answer, for lookups that never fail their caller: `None` (logged) when
/// LINE cannot be reached, answers other than 200, or with a body that is not `T`.
async fn read<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: reqwest::Url,
    creds: &LineCredentials,
    what: &str,
) -> Option<T> {
    let answer = call(http.get(url), creds, what)
        .await
        .map_err(|e| tracing::info!(error = %e, "LINE {what} not available"))
        .ok()?;
    if answer.status != 200 {
        tracing::info!(status = answer.status, "LINE {what} not available");
        return None;
    }
    serde_json::from_slice(&answer.body).ok()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    picture_url: Option<String>,
    #[serde(default)]
    language: Option<String>,
}

/// Reads the name, picture and language of the member of `source` who acted
/// (`GET <base>/v2/bot/profile/{userId}` in one-to-one chats, the group and room member forms
/// otherwise): `None` when LINE has none or refuses (not a friend, not a member) or cannot be
/// reached. Never fails the caller.
pub async fn profile(
    http: &reqwest::Client,
    base_url: &str,
    creds: &LineCredentials,
    source: &Source,
) -> Option<PlatformUser> {
    let user = source.user()?;
    let mut url = api_url(base_url, "/v2/bot").ok()?;
    {
        let mut segments = url.path_segments_mut().ok()?;
        match source.kind.as_str() {
            "group" => segments.extend(["group", source.group_id.as_deref()?, "member", user]),
            "room" => segments.extend(["room", source.room_id.as_deref()?, "member", user]),
            _ => segments.extend(["profile", user]),
        };
    }
    let p: Profile = read(http, url, creds, "profile").await?;
    let display_name = p.display_name.filter(|s| !s.trim().is_empty());
    let avatar_url = p.picture_url.filter(|s| !s.is_empty());
    let locale = p.language.filter(|s| !s.is_empty());
    (display_name.is_some() || avatar_url.is_some() || locale.is_some()).then(|| PlatformUser {
        platform_user_id: user.to_owned(),
        display_name,
        username: None,
        locale,
        avatar_url,
        email: None,
        phone: None,
    })
}

impl LineSender {
    /// The reply token to answer `job` with, when it is an inline reply whose token the
    /// ingress kept, nobody used, and is still fresh.
    async fn reply_token(&self, job: &OutboundJob) -> Option<String> {
        let event = job.in_reply_to.as_deref()?;
        let context = self.replies.as_ref()?.take(event, &job.channel.id).await?;
        let age = chrono::Utc::now() - context.issued_at;
        let fresh = age < chrono::TimeDelta::from_std(REPLY_TOKEN_FRESH).unwrap_or_default();
        if !fresh {
            metrics_outcome("reply_token_stale");
        }
        fresh.then_some(context.token)
    }

    /// Sends `job` to its address: with `reply_token` while it is given and the message fits
    /// in one call, else with push.
    pub async fn deliver(
        &self,
        target: Target<'_, LineCredentials>,
        job: &OutboundJob,
        reply_token: Option<String>,
    ) -> Result<Sent, SendError> {
        let rendered = messages(&job.content)?;
        let calls: Vec<&[Value]> = rendered.chunks(MAX_PER_CALL).collect();
        if let (Some(token), [only]) = (reply_token, calls.as_slice()) {
            let url = api_url(target.base_url, REPLY_PATH)?;
            let request = self
                .http
                .post(url)
                .json(&json!({"replyToken": token, "messages": only}));
            let a = call(request, target.credentials, "reply").await?;
            if a.status == 200 {
                metrics_outcome("replied");
                return Ok(Sent {
                    platform_message_id: first_sent(&a.body),
                    media_reference: None,
                });
            }
            if !is_invalid_reply_token(a.status, &a.body) {
                return Err(classify(a.status, a.after, &a.body));
            }
            metrics_outcome("reply_token_refused");
            tracing::info!(message_id = %job.message_id, "LINE refused the reply token; pushing instead");
        }
        let url = api_url(target.base_url, PUSH_PATH)?;
        let mut first = None;
        for (i, batch) in calls.iter().enumerate() {
            let request = self
                .http
                .post(url.clone())
                .header(RETRY_KEY_HEADER, retry_key(&job.message_id, i))
                .json(&json!({"to": job.address, "messages": batch}));
            let a = call(request, target.credentials, "push").await?;
            match a.status {
                200 => metrics_outcome("pushed"),
                409 => metrics_outcome("push_already_accepted"),
                _ => return Err(classify(a.status, a.after, &a.body)),
            }
            if i == 0 {
                first = first_sent(&a.body);
            }
        }
        Ok(Sent {
            platform_message_id: first,
            media_reference: None,
        })
    }
}

/// Whether `address` is a user id (`U` and 32 hexadecimal digits), which multicast takes; a
/// group's (`C…`) and a room's (`R…`) it does not.
pub fn is_user_id(address: &str) -> bool {
    address.len() == 33
        && address.starts_with('U')
        && address[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl LineSender {
    /// Multicasts `batch` (see the module documentation).
    async fn multicast(
        &self,
        target: Target<'_, LineCredentials>,
        batch: Batch<'_>,
    ) -> Result<BulkSent, SendError> {
        if batch.addresses.len() > MULTICAST_MAX {
            return Err(invalid(format!(
                "a LINE multicast takes at most {MULTICAST_MAX} users, not {}",
                batch.addresses.len()
            )));
        }
        let rendered = messages(batch.content)?;
        let users: Vec<&str> = batch
            .addresses
            .iter()
            .map(String::as_str)
            .filter(|a| is_user_id(a))
            .collect();
        if !users.is_empty() {
            let url = api_url(target.base_url, MULTICAST_PATH)?;
            for (i, part) in rendered.chunks(MAX_PER_CALL).enumerate() {
                let request = self
                    .http
                    .post(url.clone())
                    .header(RETRY_KEY_HEADER, retry_key(batch.id, i))
                    .json(&json!({"to": users, "messages": part}));
                let a = call(request, target.credentials, "multicast").await?;
                match a.status {
                    200 => metrics_outcome("multicast"),
                    409 => metrics_outcome("multicast_already_accepted"),
                    _ => return Err(classify(a.status, a.after, &a.body)),
                }
            }
        }
        Ok(batch
            .addresses
            .iter()
            .map(|a| {
                if is_user_id(a) {
                    Ok(Sent::default())
                } else {
                    Err(invalid(
                        "a LINE multicast reaches users only, not groups or rooms",
                    ))
                }
            })
            .collect())
    }
}

/// Counts how LINE sends went: `replied`, `pushed`, `push_already_accepted` (409),
/// `reply_token_refused`, `reply_token_stale`, `multicast`, `multicast_already_accepted`.
fn metrics_outcome(outcome: &'static str) {
    metrics::counter!("patchbay_line_sends_total", "outcome" => outcome).increment(1);
}

/// LINE serves content from `api-data.line.me`: the data host of the official API base, the
/// same base otherwise (the fakes, a proxy the operator points a channel at).
pub fn data_base_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    match base.strip_prefix("https://api.line.me") {
        Some(rest) => format!("https://api-data.line.me{rest}"),
        None => base.to_owned(),
    }
}

impl OutboundAdapter for LineSender {
    const PLATFORM: Platform = Platform::Line;
    type Credentials = LineCredentials;

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
        target: Target<'_, LineCredentials>,
        batch: Batch<'_>,
    ) -> Result<BulkSent, SendError> {
        self.multicast(target, batch).await
    }

    /// A user's image, video, audio or file: `GET /v2/bot/message/{messageId}/content` on
    /// LINE's data host (`api-data.line.me` beside `api.line.me`; a channel's own
    /// `api_base_url` serves both), with the channel access token. LINE keeps it a limited
    /// time (404 after). Media given by an external URL (`contentProvider.type = external`)
    /// are fetched from that URL.
    async fn fetch_media(
        &self,
        target: Target<'_, LineCredentials>,
        media: &Media,
        ctx: patchbay_platform::media::Context<'_>,
    ) -> Result<patchbay_platform::media::Fetched, SendError> {
        let Some(id) = media.file_id.as_deref() else {
            return match &media.url {
                Some(url) => ctx.urls.get(url, ctx.max_bytes).await,
                None => Err(SendError::permanent(
                    "not_found",
                    "the media has no LINE message id",
                    None,
                )),
            };
        };
        let response = self
            .http
            .get(format!(
                "{}/v2/bot/message/{id}/content",
                data_base_url(target.base_url)
            ))
            .bearer_auth(&target.credentials.channel_access_token)
            .send()
            .await
            .map_err(|e| SendError::Retryable {
                reason: format!("LINE unreachable: {}", e.without_url()),
                after: None,
            })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.bytes().await.unwrap_or_default();
            return Err(match status {
                404 => SendError::permanent(
                    "not_found",
                    "LINE no longer has the content (or the id is not this channel's)",
                    Some(404),
                ),
                _ => classify(status, None, &body),
            });
        }
        patchbay_platform::media::read_limited(response, ctx.max_bytes, "LINE").await
    }

    async fn send(
        &self,
        target: Target<'_, LineCredentials>,
        job: &OutboundJob,
    ) -> Result<Sent, SendError> {
        if job.address.is_empty() {
            return Err(invalid(
                "a LINE message needs the user, group or room id as address",
            ));
        }
        // Rendered first: a message LINE cannot show must not use up the reply token.
        let calls = messages(&job.content)?.len().div_ceil(MAX_PER_CALL);
        let token = if calls == 1 {
            self.reply_token(job).await
        } else {
            None
        };
        self.deliver(target, job, token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_comes_from_the_data_host_of_the_official_api_and_the_channels_own_base_otherwise() {
        assert_eq!(
            data_base_url("https://api.line.me"),
            "https://api-data.line.me"
        );
        assert_eq!(
            data_base_url("https://api.line.me/"),
            "https://api-data.line.me"
        );
        assert_eq!(
            data_base_url("http://127.0.0.1:8095"),
            "http://127.0.0.1:8095"
        );
    }
    use crate::fixtures as fx;
    use patchbay_contract::{ChannelRef, SendSource, V1};
    use patchbay_testkit::line::{Failure, FakeLine};

    fn code_of(e: &SendError) -> (&str, Option<i64>) {
        match e {
            SendError::Permanent(d) => (d.code.as_str(), d.platform_code),
            SendError::Retryable { .. } => ("retry", None),
        }
    }

    #[test]
    fn every_answer_is_classified_as_the_table_says() {
        let to = br#"{"message": "The request body has 1 error(s)",
                      "details": [{"message": "The property, 'to', in the request body is invalid (line: -, column: -)", "property": "to"}]}"#;
        let monthly = br#"{"message": "You have reached your monthly limit."}"#;
        let rate = br#"{"message": "The API rate limit has been exceeded. Try again later."}"#;
        let cases: Vec<(u16, Option<u64>, &[u8], &str)> = vec![
            (429, None, monthly, "quota_exceeded"),
            (429, Some(7), rate, "retry"),
            (429, None, b"", "retry"),
            (500, None, br#"{"message": "An unexpected error occurred."}"#, "retry"),
            (502, None, b"", "retry"),
            (400, None, to, "user_unavailable"),
            (
                400,
                None,
                br#"{"message": "The property, 'to', in the request body is invalid"}"#,
                "user_unavailable",
            ),
            (
                400,
                None,
                br#"{"message": "The request body has 1 error(s)", "details": [{"message": "Length must be between 0 and 20", "property": "messages[0].quickReply.items[0].action.label"}]}"#,
                "invalid_request",
            ),
            (400, None, br#"{"message": "Invalid reply token"}"#, "invalid_request"),
            (413, None, b"", "invalid_request"),
            (
                401,
                None,
                br#"{"message": "Authentication failed. Confirm that the access token in the authorization header is valid."}"#,
                "unauthorized",
            ),
            (
                403,
                None,
                br#"{"message": "Access to this API is not available for your account"}"#,
                "unauthorized",
            ),
            (404, None, br#"{"message": "Not found"}"#, "user_unavailable"),
            (415, None, b"", "platform_error"),
        ];
        for (status, after, body, expected) in cases {
            let e = classify(status, after.map(Duration::from_secs), body);
            let (code, platform_code) = code_of(&e);
            assert_eq!(code, expected, "{status} {}", String::from_utf8_lossy(body));
            if expected != "retry" {
                assert_eq!(platform_code, Some(i64::from(status)));
            }
        }
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), rate),
            SendError::Retryable {
                reason:
                    "LINE answered HTTP 429: The API rate limit has been exceeded. Try again later."
                        .into(),
                after: Some(Duration::from_secs(7)),
            }
        );
        let SendError::Retryable { after, .. } = classify(429, None, b"") else {
            panic!("retry expected");
        };
        assert_eq!(after, Some(DEFAULT_RETRY_AFTER));
        let SendError::Permanent(d) = classify(400, None, &[b'x'; 1000]) else {
            panic!("permanent expected");
        };
        assert!(
            d.message.len() < 500,
            "long bodies are cut: {}",
            d.message.len()
        );
        assert!(is_invalid_reply_token(
            400,
            br#"{"message": "Invalid reply token"}"#
        ));
        assert!(!is_invalid_reply_token(400, br#"{"message": "other"}"#));
        assert!(!is_invalid_reply_token(
            401,
            br#"{"message": "Invalid reply token"}"#
        ));
    }

    fn url_media(url: Option<&str>, caption: Option<&str>, filename: Option<&str>) -> Media {
        Media {
            url: url.map(str::to_owned),
            file_id: None,
            caption: caption.map(str::to_owned),
            filename: filename.map(str::to_owned),
            mime_type: None,
            media_id: None,
            download_url: None,
            preview_url: None,
            duration_ms: None,
            size_bytes: None,
        }
    }

    fn postback(title: &str, payload: &str) -> Button {
        Button::Postback {
            title: title.into(),
            payload: payload.into(),
        }
    }

    fn card(
        title: &str,
        subtitle: Option<&str>,
        image: Option<&str>,
        buttons: Vec<Button>,
    ) -> Card {
        Card {
            title: title.into(),
            subtitle: subtitle.map(str::to_owned),
            image_url: image.map(str::to_owned),
            buttons,
        }
    }

    #[test]
    fn renders_the_content_model_as_line_messages() {
        let cases: Vec<(Content, Value)> = vec![
            (
                Content::Text { text: "hi".into() },
                json!([{"type": "text", "text": "hi"}]),
            ),
            (
                Content::Image(url_media(Some("https://i/p.png"), Some("Look"), None)),
                json!([{"type": "image", "originalContentUrl": "https://i/p.png",
                        "previewImageUrl": "https://i/p.png"},
                       {"type": "text", "text": "Look"}]),
            ),
            (
                Content::Video(url_media(Some("https://v/v.mp4"), None, None)),
                json!([{"type": "text", "text": "https://v/v.mp4"}]),
            ),
            (
                Content::Video(Media {
                    preview_url: Some("https://v/v.jpg".into()),
                    ..url_media(Some("https://v/v.mp4"), Some("Clip"), None)
                }),
                json!([{"type": "video", "originalContentUrl": "https://v/v.mp4",
                        "previewImageUrl": "https://v/v.jpg"},
                       {"type": "text", "text": "Clip"}]),
            ),
            (
                Content::Voice(Media {
                    duration_ms: Some(4_200),
                    ..url_media(Some("https://a/n.m4a"), None, None)
                }),
                json!([{"type": "audio", "originalContentUrl": "https://a/n.m4a",
                        "duration": 4200}]),
            ),
            (
                Content::File(url_media(Some("https://f/r.pdf"), None, Some("r.pdf"))),
                json!([{"type": "text", "text": "r.pdf\nhttps://f/r.pdf"}]),
            ),
            (
                Content::Audio(url_media(Some("https://a/s.mp3"), Some("Song"), None)),
                json!([{"type": "text", "text": "Song\nhttps://a/s.mp3"}]),
            ),
            (
                Content::Location(Location {
                    latitude: 35.5,
                    longitude: 139.25,
                    name: Some("Shibuya".into()),
                    address: None,
                }),
                json!([{"type": "location", "title": "Shibuya", "address": "35.5, 139.25",
                        "latitude": 35.5, "longitude": 139.25}]),
            ),
            (
                Content::Sticker {
                    id: "446:1988".into(),
                },
                json!([{"type": "sticker", "packageId": "446", "stickerId": "1988"}]),
            ),
            (
                Content::Buttons {
                    text: "Sure?".into(),
                    buttons: vec![postback("Yes", "YES"), Button::Reply { title: "No".into() }],
                },
                json!([{"type": "template", "altText": "Sure?", "template": {"type": "confirm",
                    "text": "Sure?", "actions": [
                        {"type": "postback", "label": "Yes", "data": "YES", "displayText": "Yes"},
                        {"type": "message", "label": "No", "text": "No"}]}}]),
            ),
            (
                Content::Buttons {
                    text: "Pick".into(),
                    buttons: vec![
                        postback("A", "a"),
                        postback("B", "b"),
                        Button::Url {
                            title: "Site".into(),
                            url: "https://x.test".into(),
                            reuse_seconds: None,
                        },
                        postback("D", "d"),
                        postback("A very long button title indeed", "e"),
                    ],
                },
                json!([
                    {"type": "template", "altText": "Pick", "template": {"type": "buttons",
                        "text": "Pick", "actions": [
                            {"type": "postback", "label": "A", "data": "a", "displayText": "A"},
                            {"type": "postback", "label": "B", "data": "b", "displayText": "B"},
                            {"type": "uri", "label": "Site", "uri": "https://x.test"},
                            {"type": "postback", "label": "D", "data": "d", "displayText": "D"}]}},
                    {"type": "template", "altText": "Pick", "template": {"type": "buttons",
                        "text": "…", "actions": [
                            {"type": "postback", "label": "A very long button…", "data": "e",
                             "displayText": "A very long button title indeed"}]}}
                ]),
            ),
            (
                Content::QuickReplies {
                    text: "Colour?".into(),
                    replies: vec![
                        QuickReply {
                            title: "Red".into(),
                            payload: Some("RED".into()),
                        },
                        QuickReply {
                            title: "Blue".into(),
                            payload: None,
                        },
                    ],
                },
                json!([{"type": "text", "text": "Colour?", "quickReply": {"items": [
                    {"type": "action", "action": {"type": "postback", "label": "Red",
                                                  "data": "RED", "displayText": "Red"}},
                    {"type": "action", "action": {"type": "message", "label": "Blue",
                                                  "text": "Blue"}}]}}]),
            ),
            (
                Content::Carousel {
                    cards: vec![
                        card(
                            "A",
                            Some("a"),
                            Some("https://i/a.png"),
                            vec![postback("Buy", "A")],
                        ),
                        card("B", None, None, vec![postback("Buy", "B")]),
                    ],
                },
                json!([{"type": "template", "altText": "A, B", "template": {"type": "carousel",
                    "columns": [
                        {"thumbnailImageUrl": "https://i/a.png", "title": "A", "text": "a",
                         "actions": [{"type": "postback", "label": "Buy", "data": "A", "displayText": "Buy"}]},
                        {"text": "B",
                         "actions": [{"type": "postback", "label": "Buy", "data": "B", "displayText": "Buy"}]}]}}]),
            ),
        ];
        for (content, expected) in cases {
            assert_eq!(json!(messages(&content).unwrap()), expected, "{content:?}");
        }
        for refused in [
            Content::Sticker {
                id: "no-colon".into(),
            },
            Content::Image(Media {
                url: None,
                file_id: Some("5001".into()),
                caption: None,
                filename: None,
                mime_type: None,
                media_id: None,
                download_url: None,
                preview_url: None,
                duration_ms: None,
                size_bytes: None,
            }),
            Content::Template(
                patchbay_contract::content::Template::with_body("t", "en", &[]).into(),
            ),
        ] {
            let e = messages(&refused).unwrap_err();
            assert_eq!(code_of(&e).0, "unsupported_content", "{refused:?}");
        }
    }

    #[test]
    fn native_line_messages_pass_through_and_others_are_refused() {
        let flex = json!({"type": "flex", "altText": "Your order",
                          "contents": {"type": "bubble", "body": {"type": "box",
                              "layout": "vertical", "contents": [{"type": "text", "text": "#42"}]}}});
        let native = |platform, message: Value| Content::Native { platform, message };
        assert_eq!(
            messages(&native(Platform::Line, flex.clone())).unwrap(),
            vec![flex.clone()]
        );
        let e = messages(&native(Platform::Kik, flex)).unwrap_err();
        assert_eq!(code_of(&e).0, "unsupported_content");
        let e = messages(&native(Platform::Line, json!({"altText": "no type"}))).unwrap_err();
        assert_eq!(code_of(&e).0, "invalid_request");
    }

    #[test]
    fn carousels_line_cannot_take_go_card_by_card() {
        let uneven = Content::Carousel {
            cards: vec![
                card("A", None, Some("https://i/a.png"), vec![]),
                card("B", Some("b"), None, vec![postback("Buy", "B")]),
            ],
        };
        assert!(!matches!(&uneven, Content::Carousel { cards } if fits_carousel(cards)));
        let kinds: Vec<String> = messages(&uneven)
            .unwrap()
            .iter()
            .map(|m| {
                m.pointer("/template/type")
                    .or_else(|| m.get("type"))
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(kinds, ["image", "text", "buttons"]);
    }

    #[test]
    fn retry_keys_are_uuids_derived_from_the_message_and_the_call() {
        let a = retry_key("msg_01JH00000000000000000000AB", 0);
        assert_eq!(a, retry_key("msg_01JH00000000000000000000AB", 0));
        assert_ne!(a, retry_key("msg_01JH00000000000000000000AB", 1));
        assert_ne!(a, retry_key("msg_01JH00000000000000000000AC", 0));
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "5", "version 5 layout");
        assert!(
            matches!(&a[19..20], "8" | "9" | "a" | "b"),
            "RFC 4122 variant"
        );
    }

    fn creds() -> LineCredentials {
        LineCredentials {
            channel_secret: fx::CHANNEL_SECRET.into(),
            channel_access_token: fx::ACCESS_TOKEN.into(),
        }
    }

    fn job(content: Content) -> OutboundJob {
        OutboundJob {
            v: V1,
            message_id: "msg_01JH0000000000000000000001".into(),
            bot_id: "bot_1".into(),
            channel: ChannelRef {
                id: "ch_1".into(),
                platform: Platform::Line,
            },
            user_id: "usr_1".into(),
            conversation_id: "cnv_1".into(),
            address: fx::USER.into(),
            content,
            source: SendSource::Inline,
            source_id: None,
            in_reply_to: Some("evt_1".into()),
            tag: None,
            created_at: chrono::Utc::now(),
            fresh: true,
            also: Vec::new(),
        }
    }

    async fn fake() -> FakeLine {
        let line = FakeLine::start().await;
        line.add_channel(fx::ACCESS_TOKEN);
        line.add_friend(fx::ACCESS_TOKEN, fx::USER);
        line
    }

    fn sender() -> LineSender {
        let limits = Limits {
            per_channel_per_second: 100,
            per_conversation_per_second: 100,
            per_conversation_burst: 100,
        };
        LineSender::new(DEFAULT_BASE_URL, Duration::from_secs(5), limits).unwrap()
    }

    async fn deliver(
        line: &FakeLine,
        creds: &LineCredentials,
        content: Content,
        token: Option<&str>,
    ) -> Result<Sent, SendError> {
        let base = line.base_url();
        let target = Target {
            credentials: creds,
            base_url: &base,
        };
        sender()
            .deliver(target, &job(content), token.map(str::to_owned))
            .await
    }

    fn hi() -> Content {
        Content::Text { text: "hi".into() }
    }

    #[tokio::test]
    async fn a_fresh_reply_token_replies_and_a_refused_one_falls_back_to_push() {
        let line = fake().await;
        line.issue_reply_token(fx::ACCESS_TOKEN, "rt-1");
        let sent = deliver(&line, &creds(), hi(), Some("rt-1")).await.unwrap();
        let replies = line.calls_to(REPLY_PATH);
        assert_eq!(replies.len(), 1);
        assert_eq!(
            (
                replies[0].status,
                replies[0].authorized,
                replies[0].retry_key.as_deref()
            ),
            (200, true, None)
        );
        assert_eq!(
            replies[0].body,
            json!({"replyToken": "rt-1", "messages": [{"type": "text", "text": "hi"}]})
        );
        assert!(sent.platform_message_id.is_some());
        assert!(line.calls_to(PUSH_PATH).is_empty());
        // Used: LINE refuses it, and the message is pushed instead.
        let sent = deliver(&line, &creds(), hi(), Some("rt-1")).await.unwrap();
        let statuses: Vec<u16> = line.calls().iter().map(|c| c.status).collect();
        assert_eq!(statuses, [200, 400, 200]);
        let push = &line.calls_to(PUSH_PATH)[0];
        assert_eq!(
            push.retry_key.as_deref(),
            Some(retry_key("msg_01JH0000000000000000000001", 0).as_str())
        );
        assert_eq!(push.body["to"], fx::USER);
        assert!(sent.platform_message_id.is_some());
        // Expired likewise.
        line.issue_reply_token(fx::ACCESS_TOKEN, "rt-2");
        line.expire_reply_token("rt-2");
        deliver(&line, &creds(), hi(), Some("rt-2")).await.unwrap();
        assert_eq!(line.accepted(PUSH_PATH).len(), 1, "the same retry key: 409");
        assert_eq!(line.calls_to(PUSH_PATH)[1].status, 409);
    }

    #[tokio::test]
    async fn more_than_five_messages_go_out_in_pushes_of_five_in_order_never_replied() {
        let line = fake().await;
        line.issue_reply_token(fx::ACCESS_TOKEN, "rt-9");
        // Seven cards without buttons: card by card, seven texts.
        let cards: Vec<Card> = (0..7)
            .map(|i| card(&format!("Card {i}"), None, None, vec![]))
            .collect();
        deliver(&line, &creds(), Content::Carousel { cards }, Some("rt-9"))
            .await
            .unwrap();
        assert!(
            line.calls_to(REPLY_PATH).is_empty(),
            "more than one call: pushed"
        );
        let pushes = line.calls_to(PUSH_PATH);
        let sizes: Vec<usize> = pushes
            .iter()
            .map(|c| c.body["messages"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [5, 2]);
        let keys: Vec<String> = pushes
            .iter()
            .map(|c| c.retry_key.clone().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                retry_key("msg_01JH0000000000000000000001", 0),
                retry_key("msg_01JH0000000000000000000001", 1)
            ]
        );
        let texts: Vec<String> = line
            .messages()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            texts,
            (0..7).map(|i| format!("Card {i}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_retried_push_is_not_sent_twice() {
        let line = fake().await;
        line.fail_next(PUSH_PATH, [Failure::ServerErrorAfterAccepting]);
        let e = deliver(&line, &creds(), hi(), None).await.unwrap_err();
        assert_eq!(code_of(&e).0, "retry");
        deliver(&line, &creds(), hi(), None).await.unwrap();
        let statuses: Vec<u16> = line.calls_to(PUSH_PATH).iter().map(|c| c.status).collect();
        assert_eq!(statuses, [500, 409]);
        assert_eq!(line.messages().len(), 1, "delivered once");
    }

    #[tokio::test]
    async fn refusals_and_failures_are_classified() {
        let line = fake().await;
        let wrong = LineCredentials {
            channel_secret: fx::CHANNEL_SECRET.into(),
            channel_access_token: "not-the-token".into(),
        };
        assert_eq!(
            code_of(&deliver(&line, &wrong, hi(), None).await.unwrap_err()),
            ("unauthorized", Some(401))
        );
        line.fail_next(
            PUSH_PATH,
            [Failure::TooManyRequests {
                retry_after: Some(3),
            }],
        );
        let SendError::Retryable { after, .. } =
            deliver(&line, &creds(), hi(), None).await.unwrap_err()
        else {
            panic!("retry expected");
        };
        assert_eq!(after, Some(Duration::from_secs(3)));
        line.set_monthly_quota(fx::ACCESS_TOKEN, Some(0));
        assert_eq!(
            code_of(&deliver(&line, &creds(), hi(), None).await.unwrap_err()),
            ("quota_exceeded", Some(429))
        );
        line.issue_reply_token(fx::ACCESS_TOKEN, "rt-free");
        deliver(&line, &creds(), hi(), Some("rt-free"))
            .await
            .expect("replies are free of the monthly quota");
        line.set_monthly_quota(fx::ACCESS_TOKEN, None);
        line.block(fx::ACCESS_TOKEN, fx::USER);
        assert_eq!(
            code_of(&deliver(&line, &creds(), hi(), None).await.unwrap_err()),
            ("user_unavailable", Some(400))
        );
        line.add_friend(fx::ACCESS_TOKEN, fx::USER);
        line.issue_reply_token(fx::ACCESS_TOKEN, "rt-5");
        line.fail_next(REPLY_PATH, [Failure::ServerError]);
        assert_eq!(
            code_of(
                &deliver(&line, &creds(), hi(), Some("rt-5"))
                    .await
                    .unwrap_err()
            )
            .0,
            "retry"
        );
        let unreachable = Target {
            credentials: &creds(),
            base_url: "http://127.0.0.1:9",
        };
        let e = sender()
            .deliver(unreachable, &job(hi()), None)
            .await
            .unwrap_err();
        assert_eq!(code_of(&e).0, "retry");
        assert!(!e.to_string().contains(fx::ACCESS_TOKEN));
    }

    #[tokio::test]
    async fn profiles_of_friends_and_group_members() {
        let line = fake().await;
        line.set_profile(
            fx::USER,
            json!({"displayName": "Ana", "pictureUrl": "https://p/a", "language": "ja",
                   "statusMessage": "hello"}),
        );
        line.add_member(fx::ACCESS_TOKEN, fx::GROUP, fx::USER);
        let http = patchbay_platform::http::client_builder(Duration::from_secs(5))
            .build()
            .unwrap();
        let base = line.base_url();
        let source = |v: Value| serde_json::from_value::<Source>(v).unwrap();
        let ana = profile(&http, &base, &creds(), &source(fx::from_user(fx::USER)))
            .await
            .unwrap();
        assert_eq!(
            (
                ana.display_name.as_deref(),
                ana.avatar_url.as_deref(),
                ana.locale.as_deref()
            ),
            (Some("Ana"), Some("https://p/a"), Some("ja"))
        );
        assert_eq!(ana.platform_user_id, fx::USER);
        let in_group = profile(
            &http,
            &base,
            &creds(),
            &source(fx::in_group(fx::GROUP, Some(fx::USER))),
        )
        .await
        .unwrap();
        assert_eq!(in_group.display_name.as_deref(), Some("Ana"));
        assert_eq!(
            profile(
                &http,
                &base,
                &creds(),
                &source(fx::in_room(fx::ROOM, Some(fx::USER)))
            )
            .await,
            None
        );
        assert_eq!(
            profile(&http, &base, &creds(), &source(fx::from_user("Ustranger"))).await,
            None
        );
        let paths: Vec<(String, u16)> = line
            .calls_to("/v2/bot/")
            .into_iter()
            .map(|c| (c.path, c.status))
            .collect();
        assert_eq!(
            paths,
            [
                (format!("/v2/bot/profile/{}", fx::USER), 200),
                (
                    format!("/v2/bot/group/{}/member/{}", fx::GROUP, fx::USER),
                    200
                ),
                (
                    format!("/v2/bot/room/{}/member/{}", fx::ROOM, fx::USER),
                    404
                ),
                ("/v2/bot/profile/Ustranger".to_owned(), 404),
            ]
        );
    }

    fn user(n: u32) -> String {
        format!("U{n:032x}")
    }

    async fn multicast(
        line: &FakeLine,
        addresses: &[String],
        content: &Content,
    ) -> Result<BulkSent, SendError> {
        let base = line.base_url();
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

    fn delivered_to(line: &FakeLine) -> Vec<String> {
        line.messages()
            .iter()
            .map(|m| m["to"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_multicast_reaches_a_batchs_users_in_one_call_and_a_retry_of_it_is_not_sent_again() {
        let line = fake().await;
        for n in [1, 2] {
            line.add_friend(fx::ACCESS_TOKEN, &user(n));
        }
        // User 3 blocked the bot; the group cannot be multicast to.
        let addresses = [
            user(1),
            user(2),
            "C0123456789abcdef0123456789abcdef".into(),
            user(3),
        ];
        let outcomes = multicast(&line, &addresses, &hi()).await.unwrap();
        let codes: Vec<Option<String>> = outcomes
            .iter()
            .map(|o| o.as_ref().err().map(|e| code_of(e).0.to_owned()))
            .collect();
        assert_eq!(
            codes,
            [None, None, Some("invalid_request".into()), None],
            "LINE does not say whom a multicast missed"
        );
        let calls = line.calls_to(MULTICAST_PATH);
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].status, calls[0].retry_key.clone()),
            (200, Some(retry_key("bat_1", 0)))
        );
        assert_eq!(
            calls[0].body["to"],
            json!([user(1), user(2), user(3)]),
            "users only"
        );
        assert_eq!(delivered_to(&line), [user(1), user(2)]);
        // The same batch again (its sender did not learn the answer): 409, sent once.
        let again = multicast(&line, &addresses, &hi()).await.unwrap();
        assert!(again[0].is_ok() && again[1].is_ok() && again[3].is_ok());
        assert_eq!(line.calls_to(MULTICAST_PATH)[1].status, 409);
        assert_eq!(delivered_to(&line), [user(1), user(2)]);
    }

    #[tokio::test]
    async fn a_multicast_fails_as_a_whole_and_its_retry_after_an_accepted_call_sends_nothing_twice()
    {
        let line = fake().await;
        let users: Vec<String> = (1..=MULTICAST_MAX as u32).map(user).collect();
        for u in &users {
            line.add_friend(fx::ACCESS_TOKEN, u);
        }
        let mut too_many = users.clone();
        too_many.push(user(9999));
        let e = multicast(&line, &too_many, &hi()).await.unwrap_err();
        assert_eq!(code_of(&e).0, "invalid_request");
        assert!(
            line.calls_to(MULTICAST_PATH).is_empty(),
            "refused before any call"
        );
        // Accepted, then answered 500: a retry, which LINE answers 409.
        line.fail_next(MULTICAST_PATH, [Failure::ServerErrorAfterAccepting]);
        let e = multicast(&line, &users, &hi()).await.unwrap_err();
        assert_eq!(code_of(&e).0, "retry");
        let outcomes = multicast(&line, &users, &hi()).await.unwrap();
        assert!(outcomes.iter().all(Result::is_ok));
        let statuses: Vec<u16> = line
            .calls_to(MULTICAST_PATH)
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(statuses, [500, 409]);
        assert_eq!(delivered_to(&line), users, "each of the 500 once");
        // The monthly quota counts each user reached.
        line.set_monthly_quota(fx::ACCESS_TOKEN, Some(MULTICAST_MAX + 10));
        let other = Batch {
            id: "bat_2",
            bot_id: "bot_1",
            content: &hi(),
            addresses: &users[..20],
        };
        let base = line.base_url();
        let creds = creds();
        let target = Target {
            credentials: &creds,
            base_url: &base,
        };
        let e = sender().send_many(target, other).await.unwrap_err();
        assert_eq!(code_of(&e).0, "quota_exceeded");
    }
}
