//! Outbound Kik: the content model rendered as `POST <base>/v1/message` batches, Kik's answers
//! classified, and user profiles (`reference/platforms.md` §5.1, §5.3).
//!
//! Every call authenticates with HTTP Basic (the bot's username and API key). A request is
//! `{"messages": [...]}`; each message has `type`, `to` (the user's username, which is the
//! address; no `chatId`, so Kik uses the user's chat with the bot) and an `id`. Kik answers
//! `{}` and assigns no ids: the sender chooses them. Each Kik message of a Patchbay message gets
//! a UUID derived from the Patchbay message id and its position ([`kik_message_id`]), so a retry
//! sends the same ids, and [`Sent::platform_message_id`] is the first one: the id
//! `delivery-receipt` and `read-receipt` name.
//!
//! | content | message(s) |
//! |---|---|
//! | text | `text` (`body`) |
//! | image | `picture` (`picUrl`); a caption follows as a `text` |
//! | video | `video` (`videoUrl`); a caption follows as a `text` |
//! | audio, voice, file | a `link` (`url`, `title`: the file name, else the kind; `text`: the caption) |
//! | location | a `text` with name, address and map link (`degrade`) |
//! | buttons | a `text` with `keyboards: [{"type": "suggested", "responses": [...]}]`: a postback button is `{"type": "text", "body": title, "metadata": payload}`, a reply button `{"type": "text", "body": title}`; URL buttons become `title: url` lines of the text |
//! | quick replies | a `text` with a suggested keyboard (`metadata` the payload, when there is one) |
//! | carousel | the cards one after the other (`degrade`): a `picture`, then the card's text and buttons |
//! | media by `file_id` only, sticker, template | refused: `unsupported_content` |
//!
//! A message that takes several Kik messages is sent in as few requests as Kik allows
//! ([`batches`]): at most 25 messages per request and at most 5 per user per request, in
//! order; the requests go one after the other, and the first refusal stops the rest (a retry
//! sends the message again from its first part, with the same ids).
//!
//! Kik's answers (the reference lists no error codes; Kik's HTTP status is the
//! `platform_code`):
//!
//! | answer | Patchbay |
//! |---|---|
//! | 200 | sent |
//! | 429 whose error names the user's message bank (or the user rate limit): Kik allows 20 messages per user, refilled by the user's messages | `rate_limited` |
//! | 429 otherwise (the bot's global per-second limit) | retry, after `Retry-After` (else 1 s) |
//! | 5xx, no answer, timeout | retry |
//! | 401 (username or API key refused) | `unauthorized` |
//! | 403 (the user has not chatted with the bot, or blocked it), 404 (no such user) | `user_unavailable` |
//! | 400, 413 (a message Kik does not take, too many messages) | `invalid_request` |
//! | anything else | `platform_error` |
//!
//! [`profile`] reads a user's name and picture (`GET <base>/v1/user/<username>`; the user must
//! have chatted with the bot).

use std::time::Duration;

use patchbay_contract::content::{Button, Media, QuickReply};
use patchbay_contract::{Content, OutboundJob, Platform, PlatformUser};
use patchbay_platform::{Capabilities, Limits, OutboundAdapter, SendError, Sent, Target, degrade};
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Digest;

use crate::KikCredentials;
use crate::capabilities::CAPABILITIES;

/// Kik's API.
pub const DEFAULT_BASE_URL: &str = "https://api.kik.com";
/// Sending messages.
pub const MESSAGE_PATH: &str = "/v1/message";
/// User profiles: `<USER_PATH>/<username>`.
pub const USER_PATH: &str = "/v1/user";
/// Messages per request.
pub const MAX_PER_REQUEST: usize = 25;
/// Messages to one user per request.
pub const MAX_PER_USER: usize = 5;
/// The wait after a 429 without `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How much of an error body is quoted.
const QUOTE_MAX: usize = 300;

/// Sends through Kik's message API.
#[derive(Debug, Clone)]
pub struct KikSender {
    http: reqwest::Client,
    base_url: String,
    limits: Limits,
}

impl KikSender {
    /// A sender with `base_url` as default API, `timeout` per call and the given pace.
    pub fn new(base_url: &str, timeout: Duration, limits: Limits) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: patchbay_platform::http::client_builder(timeout).build()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            limits,
        })
    }
}

fn invalid(message: impl Into<String>) -> SendError {
    SendError::permanent("invalid_request", message, None)
}

fn unsupported(message: impl Into<String>) -> SendError {
    SendError::permanent("unsupported_content", message, None)
}

fn text(body: &str) -> Value {
    json!({"type": "text", "body": body})
}

fn caption(m: &Media) -> Option<&str> {
    m.caption.as_deref().filter(|c| !c.trim().is_empty())
}

fn url_of<'a>(m: &'a Media, kind: &str) -> Result<&'a str, SendError> {
    m.url.as_deref().ok_or_else(|| {
        unsupported(format!(
            "Kik sends {kind}s by URL only and has no media ids: this one has no url"
        ))
    })
}

/// A picture or video followed by its caption.
fn captioned(kind: &str, field: &str, m: &Media) -> Result<Vec<Value>, SendError> {
    let mut out = vec![json!({"type": kind, field: url_of(m, kind)?})];
    out.extend(caption(m).map(text));
    Ok(out)
}

/// A file Kik cannot send, as a link to it.
fn link(kind: &str, m: &Media) -> Result<Vec<Value>, SendError> {
    let mut l = json!({"type": "link", "url": url_of(m, kind)?,
                       "title": m.filename.as_deref().unwrap_or(kind)});
    if let Some(c) = caption(m) {
        l["text"] = json!(c);
    }
    Ok(vec![l])
}

/// A suggested response: its title, and the payload Kik sends back as `metadata`.
fn response(title: &str, payload: Option<&str>) -> Value {
    let mut r = json!({"type": "text", "body": title});
    if let Some(p) = payload {
        r["metadata"] = json!(p);
    }
    r
}

/// A text with a suggested-response keyboard (none when there are no responses).
fn with_keyboard(body: &str, responses: Vec<Value>) -> Value {
    let mut m = text(body);
    if !responses.is_empty() {
        m["keyboards"] = json!([{"type": "suggested", "responses": responses}]);
    }
    m
}

/// Renders one (already degraded) content as Kik messages, in order (without `to` and `id`).
pub fn render(content: &Content) -> Result<Vec<Value>, SendError> {
    Ok(match content {
        Content::Text { text: t } => vec![text(t)],
        Content::Image(m) => captioned("picture", "picUrl", m)?,
        Content::Video(m) => captioned("video", "videoUrl", m)?,
        Content::Audio(m) => link("audio", m)?,
        Content::Voice(m) => link("voice message", m)?,
        Content::File(m) => link("file", m)?,
        Content::Buttons { text: t, buttons } => {
            let mut body = t.clone();
            let mut responses = Vec::new();
            for b in buttons {
                match b {
                    Button::Url { title, url, .. } => body.push_str(&format!("\n{title}: {url}")),
                    Button::Postback { title, payload } => {
                        responses.push(response(title, Some(payload)));
                    }
                    Button::Reply { title } => responses.push(response(title, None)),
                }
            }
            vec![with_keyboard(&body, responses)]
        }
        Content::QuickReplies { text: t, replies } => {
            let responses = replies
                .iter()
                .map(|QuickReply { title, payload }| response(title, payload.as_deref()))
                .collect();
            vec![with_keyboard(t, responses)]
        }
        other => {
            return Err(unsupported(format!(
                "Kik cannot show {} messages",
                other.kind()
            )));
        }
    })
}

/// The Kik id of part `index` of the Patchbay message `message_id`: a name-based UUID (the
/// version 5 layout over SHA-1), the same every time.
pub fn kik_message_id(message_id: &str, index: usize) -> String {
    let digest = sha1::Sha1::digest(format!("patchbay:kik:{message_id}:{index}").as_bytes());
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

/// The rendered messages of the Patchbay message `message_id`, each addressed `to` the user
/// and given its id.
pub fn address(to: &str, message_id: &str, rendered: Vec<Value>) -> Vec<Value> {
    rendered
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            if let Some(o) = m.as_object_mut() {
                o.insert("to".into(), json!(to));
                o.insert("id".into(), json!(kik_message_id(message_id, i)));
            }
            m
        })
        .collect()
}

/// Cuts `messages` (each with its `to`) into requests Kik takes: at most [`MAX_PER_REQUEST`]
/// messages, and at most [`MAX_PER_USER`] to any one user, the order kept across requests.
pub fn batches(messages: Vec<Value>) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    let mut current: Vec<Value> = Vec::new();
    for m in messages {
        let to = m.get("to").and_then(Value::as_str).unwrap_or_default();
        let to_same = current
            .iter()
            .filter(|c| c.get("to").and_then(Value::as_str).unwrap_or_default() == to)
            .count();
        if current.len() >= MAX_PER_REQUEST || to_same >= MAX_PER_USER {
            out.push(std::mem::take(&mut current));
        }
        current.push(m);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Kik's error body, as far as it can be read: `{"error": ..., "message": ...}`, else text.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    message: Option<Value>,
}

fn describe(status: u16, body: &[u8]) -> String {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let parts: Vec<String> = parsed
        .iter()
        .flat_map(|e| [&e.error, &e.message])
        .flatten()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .filter(|s| !s.is_empty())
        .collect();
    let said = if parts.is_empty() {
        String::from_utf8_lossy(body).trim().to_owned()
    } else {
        parts.join(": ")
    };
    let said: String = said.chars().take(QUOTE_MAX).collect();
    if said.is_empty() {
        format!("Kik answered HTTP {status}")
    } else {
        format!("Kik answered HTTP {status}: {said}")
    }
}

/// Whether an error text speaks of the user's message bank rather than the bot's global rate.
fn names_the_user_bank(description: &str) -> bool {
    let d = description.to_ascii_lowercase();
    ["bank", "user rate limit", "per-user", "per user"]
        .iter()
        .any(|w| d.contains(w))
}

/// Classifies Kik's refusal of a request: its HTTP status, `Retry-After` and body.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
    let description = describe(status, body);
    let code = Some(i64::from(status));
    let permanent = |patchbay: &str, why: &str| {
        SendError::permanent(patchbay, format!("{why} ({description})"), code)
    };
    match status {
        429 if names_the_user_bank(&description) => permanent(
            "rate_limited",
            "Kik allows a bot 20 messages per user, refilled one by one by the user's own \
             messages: the bank is empty until the user writes again",
        ),
        429 => SendError::Retryable {
            reason: description,
            after: Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
        },
        500..=599 => SendError::Retryable {
            reason: description,
            after: None,
        },
        401 => permanent("unauthorized", "Kik refused the bot's username or API key"),
        403 => permanent(
            "user_unavailable",
            "the user has not chatted with the bot (or blocked it); Kik bots can only answer",
        ),
        404 => permanent("user_unavailable", "Kik knows no such user"),
        400 | 413 => permanent("invalid_request", "Kik refused the message"),
        _ => permanent("platform_error", "Kik refused the request"),
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
            format!("the Kik API base URL {base:?} is not a URL: {e}"),
            None,
        )
    })
}

/// Makes one authenticated call and reads Kik's answer: the body of a 2xx, else its
/// classification.
pub(crate) async fn call(
    request: reqwest::RequestBuilder,
    creds: &KikCredentials,
    what: &str,
) -> Result<Vec<u8>, SendError> {
    let response = request
        .basic_auth(&creds.username, Some(&creds.api_key))
        .headers(patchbay_platform::http::trace_headers())
        .send()
        .await
        .map_err(|e| SendError::Retryable {
            reason: format!("Kik unreachable ({what}): {}", e.without_url()),
            after: None,
        })?;
    let status = response.status();
    let after = retry_after(response.headers());
    let body = response.bytes().await.map_err(|e| SendError::Retryable {
        reason: format!("reading Kik's answer ({what}): {}", e.without_url()),
        after: None,
    })?;
    if status.is_success() {
        Ok(body.to_vec())
    } else {
        Err(classify(status.as_u16(), after, &body))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    profile_pic_url: Option<String>,
}

/// Reads `username`'s name and picture (`GET <base>/v1/user/<username>`): `None` when Kik has
/// none or refuses (the user never chatted with the bot) or cannot be reached. Never fails the
/// caller.
pub async fn profile(
    http: &reqwest::Client,
    base_url: &str,
    creds: &KikCredentials,
    username: &str,
) -> Option<PlatformUser> {
    let mut url = api_url(base_url, USER_PATH).ok()?;
    url.path_segments_mut().ok()?.push(username);
    let body = call(http.get(url), creds, "user profile")
        .await
        .map_err(|e| tracing::info!(error = %e, "Kik profile not available"))
        .ok()?;
    let p: Profile = serde_json::from_slice(&body).ok()?;
    let name = [p.first_name.as_deref(), p.last_name.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let display_name = (!name.is_empty()).then_some(name);
    let avatar_url = p.profile_pic_url.filter(|u| !u.is_empty());
    (display_name.is_some() || avatar_url.is_some()).then(|| PlatformUser {
        platform_user_id: username.to_owned(),
        display_name,
        username: Some(username.to_owned()),
        locale: None,
        avatar_url,
        email: None,
        phone: None,
    })
}

impl OutboundAdapter for KikSender {
    const PLATFORM: Platform = Platform::Kik;
    type Credentials = KikCredentials;

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    fn default_base_url(&self) -> &str {
        &self.base_url
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn send(
        &self,
        target: Target<'_, KikCredentials>,
        job: &OutboundJob,
    ) -> Result<Sent, SendError> {
        if job.address.is_empty() {
            return Err(invalid(
                "a Kik message needs the user's username as address",
            ));
        }
        let parts = degrade(&job.content, &CAPABILITIES, "Kik").map_err(SendError::Permanent)?;
        let mut rendered = Vec::new();
        for p in &parts {
            rendered.extend(render(p)?);
        }
        let messages = address(&job.address, &job.message_id, rendered);
        let first = messages
            .first()
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let url = api_url(target.base_url, MESSAGE_PATH)?;
        for batch in batches(messages) {
            let request = self
                .http
                .post(url.clone())
                .json(&json!({ "messages": batch }));
            call(request, target.credentials, "message").await?;
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
    use patchbay_contract::content::{Card, Location};
    use patchbay_contract::{ChannelRef, SendSource, V1};
    use patchbay_testkit::kik::{Failure, FakeKik};

    fn code_of(e: &SendError) -> (&str, Option<i64>) {
        match e {
            SendError::Permanent(d) => (d.code.as_str(), d.platform_code),
            SendError::Retryable { .. } => ("retry", None),
        }
    }

    #[test]
    fn every_answer_is_classified_as_the_table_says() {
        let bank =
            br#"{"error": "RateLimitExceeded", "message": "the message bank of ana is empty"}"#;
        let global = br#"{"error": "RateLimitExceeded", "message": "too many requests"}"#;
        let cases: Vec<(u16, Option<u64>, &[u8], &str)> = vec![
            (429, None, bank, "rate_limited"),
            (
                429,
                None,
                br#"{"message": "user rate limit exceeded"}"#,
                "rate_limited",
            ),
            (429, Some(7), global, "retry"),
            (429, None, b"", "retry"),
            (500, None, b"oops", "retry"),
            (502, None, b"", "retry"),
            (503, None, b"", "retry"),
            (401, None, br#"{"error": "Unauthorized"}"#, "unauthorized"),
            (403, None, br#"{"error": "Forbidden"}"#, "user_unavailable"),
            (404, None, b"", "user_unavailable"),
            (
                400,
                None,
                br#"{"error": "BadRequest", "message": "bad type"}"#,
                "invalid_request",
            ),
            (413, None, b"", "invalid_request"),
            (415, None, b"", "platform_error"),
            (409, None, b"", "platform_error"),
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
            classify(429, Some(Duration::from_secs(7)), global),
            SendError::Retryable {
                reason: "Kik answered HTTP 429: RateLimitExceeded: too many requests".into(),
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

    #[test]
    fn renders_the_content_model_as_kik_messages() {
        let cases: Vec<(Content, Value)> = vec![
            (
                Content::Text { text: "hi".into() },
                json!([{"type": "text", "body": "hi"}]),
            ),
            (
                Content::Image(url_media(Some("https://i/p.png"), Some("Look"), None)),
                json!([{"type": "picture", "picUrl": "https://i/p.png"},
                       {"type": "text", "body": "Look"}]),
            ),
            (
                Content::Video(url_media(Some("https://v/v.mp4"), None, None)),
                json!([{"type": "video", "videoUrl": "https://v/v.mp4"}]),
            ),
            (
                Content::File(url_media(
                    Some("https://f/r.pdf"),
                    Some("Your receipt"),
                    Some("r.pdf"),
                )),
                json!([{"type": "link", "url": "https://f/r.pdf", "title": "r.pdf", "text": "Your receipt"}]),
            ),
            (
                Content::Audio(url_media(Some("https://a/s.mp3"), None, None)),
                json!([{"type": "link", "url": "https://a/s.mp3", "title": "audio"}]),
            ),
            (
                Content::Buttons {
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
                },
                json!([{"type": "text", "body": "Pick\nSite: https://x.test",
                        "keyboards": [{"type": "suggested", "responses": [
                            {"type": "text", "body": "Yes", "metadata": "YES"},
                            {"type": "text", "body": "Maybe"}]}]}]),
            ),
            (
                Content::Buttons {
                    text: "Read".into(),
                    buttons: vec![Button::Url {
                        title: "Docs".into(),
                        url: "https://d".into(),
                        reuse_seconds: None,
                    }],
                },
                json!([{"type": "text", "body": "Read\nDocs: https://d"}]),
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
                json!([{"type": "text", "body": "Colour?",
                        "keyboards": [{"type": "suggested", "responses": [
                            {"type": "text", "body": "Red", "metadata": "RED"},
                            {"type": "text", "body": "Blue"}]}]}]),
            ),
        ];
        for (content, expected) in cases {
            assert_eq!(json!(render(&content).unwrap()), expected, "{content:?}");
        }
        for refused in [
            Content::Sticker { id: "s".into() },
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
        ] {
            let e = render(&refused).unwrap_err();
            assert_eq!(code_of(&e).0, "unsupported_content", "{refused:?}");
        }
    }

    #[test]
    fn degraded_content_becomes_several_messages() {
        let carousel = Content::Carousel {
            cards: vec![
                Card {
                    title: "A".into(),
                    subtitle: Some("a".into()),
                    image_url: Some("https://i/a.png".into()),
                    buttons: vec![],
                },
                Card {
                    title: "B".into(),
                    subtitle: None,
                    image_url: None,
                    buttons: vec![Button::Postback {
                        title: "Buy".into(),
                        payload: "B".into(),
                    }],
                },
            ],
        };
        let parts = degrade(&carousel, &CAPABILITIES, "Kik").unwrap();
        let rendered: Vec<Value> = parts.iter().flat_map(|p| render(p).unwrap()).collect();
        assert_eq!(
            json!(rendered),
            json!([{"type": "picture", "picUrl": "https://i/a.png"},
                   {"type": "text", "body": "A\na"},
                   {"type": "text", "body": "B", "keyboards": [{"type": "suggested",
                       "responses": [{"type": "text", "body": "Buy", "metadata": "B"}]}]}])
        );
        let place = Content::Location(Location {
            latitude: 38.5,
            longitude: -9.25,
            name: Some("Rossio".into()),
            address: None,
        });
        let parts = degrade(&place, &CAPABILITIES, "Kik").unwrap();
        assert_eq!(
            render(&parts[0]).unwrap(),
            vec![text(
                "Rossio\nhttps://www.openstreetmap.org/?mlat=38.5&mlon=-9.25"
            )]
        );
        let e = degrade(&Content::Sticker { id: "s".into() }, &CAPABILITIES, "Kik").unwrap_err();
        assert_eq!(e.code, "unsupported_content");
    }

    #[test]
    fn ids_are_uuids_derived_from_the_message_and_the_part() {
        let a = kik_message_id("msg_01JH00000000000000000000AB", 0);
        assert_eq!(a, kik_message_id("msg_01JH00000000000000000000AB", 0));
        assert_ne!(a, kik_message_id("msg_01JH00000000000000000000AB", 1));
        assert_ne!(a, kik_message_id("msg_01JH00000000000000000000AC", 0));
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&a[14..15], "5", "version 5 layout");
        assert!(
            matches!(&a[19..20], "8" | "9" | "a" | "b"),
            "RFC 4122 variant"
        );
        let addressed = address("ana", "msg_1", vec![text("x"), text("y")]);
        assert_eq!(
            json!(addressed),
            json!([{"type": "text", "body": "x", "to": "ana", "id": kik_message_id("msg_1", 0)},
                   {"type": "text", "body": "y", "to": "ana", "id": kik_message_id("msg_1", 1)}])
        );
    }

    fn to(user: &str, n: usize) -> Value {
        json!({"type": "text", "to": user, "body": n.to_string()})
    }

    fn shape(batches: &[Vec<Value>]) -> Vec<Vec<String>> {
        batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|m| {
                        format!(
                            "{}{}",
                            m["to"].as_str().unwrap(),
                            m["body"].as_str().unwrap()
                        )
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn batches_hold_at_most_25_messages_and_5_per_user_in_order() {
        let seven: Vec<Value> = (0..7).map(|i| to("a", i)).collect();
        assert_eq!(
            shape(&batches(seven)),
            [vec!["a0", "a1", "a2", "a3", "a4"], vec!["a5", "a6"]]
        );
        assert_eq!(shape(&batches(vec![to("a", 0)])), [vec!["a0"]]);
        assert!(batches(vec![]).is_empty());
        // Six users, five each: the 25-message cap cuts before the sixth user's messages.
        let thirty: Vec<Value> = (0..30).map(|i| to(&format!("u{}", i / 5), i % 5)).collect();
        let cut = batches(thirty.clone());
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [25, 5]);
        assert_eq!(cut.concat(), thirty, "the order is kept");
        // Interleaved users: each request keeps every user at five or fewer.
        let mixed: Vec<Value> = (0..12)
            .map(|i| to(if i % 3 == 0 { "b" } else { "a" }, i))
            .collect();
        let cut = batches(mixed.clone());
        for b in &cut {
            for user in ["a", "b"] {
                assert!(b.iter().filter(|m| m["to"] == user).count() <= MAX_PER_USER);
            }
        }
        assert_eq!(cut.concat(), mixed);
    }

    fn creds() -> KikCredentials {
        KikCredentials {
            username: fx::BOT.into(),
            api_key: fx::API_KEY.into(),
        }
    }

    fn job(content: Content) -> OutboundJob {
        OutboundJob {
            v: V1,
            message_id: "msg_01JH0000000000000000000001".into(),
            bot_id: "bot_1".into(),
            channel: ChannelRef {
                id: "ch_1".into(),
                platform: Platform::Kik,
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

    async fn fake() -> FakeKik {
        let kik = FakeKik::start().await;
        kik.add_bot(fx::BOT, fx::API_KEY);
        kik.add_user(fx::BOT, fx::USER);
        kik
    }

    fn sender() -> KikSender {
        let limits = Limits {
            per_channel_per_second: 100,
            per_conversation_per_second: 100,
            per_conversation_burst: 100,
        };
        KikSender::new(DEFAULT_BASE_URL, Duration::from_secs(5), limits).unwrap()
    }

    async fn send(
        kik: &FakeKik,
        creds: &KikCredentials,
        content: Content,
    ) -> Result<Sent, SendError> {
        let base = kik.base_url();
        let target = Target {
            credentials: creds,
            base_url: &base,
        };
        sender().send(target, &job(content)).await
    }

    #[tokio::test]
    async fn a_reply_goes_out_with_basic_auth_and_reports_the_id_it_chose() {
        let kik = fake().await;
        let sent = send(
            &kik,
            &creds(),
            Content::Text {
                text: "hello".into(),
            },
        )
        .await
        .unwrap();
        let id = kik_message_id("msg_01JH0000000000000000000001", 0);
        assert_eq!(sent.platform_message_id.as_deref(), Some(id.as_str()));
        let calls = kik.calls_to(MESSAGE_PATH);
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].status, calls[0].authorized), (200, true));
        assert_eq!(calls[0].username.as_deref(), Some(fx::BOT));
        assert_eq!(
            calls[0].body,
            json!({"messages": [{"type": "text", "body": "hello", "to": fx::USER, "id": id}]})
        );
    }

    #[tokio::test]
    async fn seven_cards_go_out_in_requests_of_five_and_two() {
        let kik = fake().await;
        let cards = (0..7)
            .map(|i| Card {
                title: format!("Card {i}"),
                subtitle: None,
                image_url: None,
                buttons: vec![],
            })
            .collect();
        send(&kik, &creds(), Content::Carousel { cards })
            .await
            .unwrap();
        let calls = kik.calls_to(MESSAGE_PATH);
        let sizes: Vec<usize> = calls
            .iter()
            .map(|c| c.body["messages"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [5, 2]);
        let bodies: Vec<String> = kik
            .messages()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            bodies,
            (0..7).map(|i| format!("Card {i}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn refusals_and_failures_are_classified() {
        let kik = fake().await;
        let hi = || Content::Text { text: "hi".into() };
        let wrong = KikCredentials {
            username: fx::BOT.into(),
            api_key: "not-the-key".into(),
        };
        assert_eq!(
            code_of(&send(&kik, &wrong, hi()).await.unwrap_err()).0,
            "unauthorized"
        );
        kik.fail_next(MESSAGE_PATH, [Failure::ServerError]);
        assert_eq!(
            code_of(&send(&kik, &creds(), hi()).await.unwrap_err()).0,
            "retry"
        );
        kik.fail_next(
            MESSAGE_PATH,
            [Failure::TooManyRequests {
                retry_after: Some(3),
            }],
        );
        let SendError::Retryable { after, .. } = send(&kik, &creds(), hi()).await.unwrap_err()
        else {
            panic!("retry expected");
        };
        assert_eq!(after, Some(Duration::from_secs(3)));
        kik.set_bank(fx::BOT, fx::USER, 0);
        assert_eq!(
            code_of(&send(&kik, &creds(), hi()).await.unwrap_err()),
            ("rate_limited", Some(429))
        );
        kik.block_user(fx::BOT, fx::USER);
        assert_eq!(
            code_of(&send(&kik, &creds(), hi()).await.unwrap_err()),
            ("user_unavailable", Some(403))
        );
        let unreachable = Target {
            credentials: &creds(),
            base_url: "http://127.0.0.1:9",
        };
        let e = sender().send(unreachable, &job(hi())).await.unwrap_err();
        assert_eq!(code_of(&e).0, "retry");
        assert!(!e.to_string().contains(fx::API_KEY));
    }

    #[tokio::test]
    async fn profiles_of_subscribers_and_strangers() {
        let kik = fake().await;
        kik.set_profile(
            fx::USER,
            json!({"firstName": "Ana", "lastName": "Lima", "profilePicUrl": "https://p/a.jpg",
                   "profilePicLastModified": 1458657367, "timezone": "America/Toronto"}),
        );
        let http = patchbay_platform::http::client_builder(Duration::from_secs(5))
            .build()
            .unwrap();
        let base = kik.base_url();
        let ana = profile(&http, &base, &creds(), fx::USER).await.unwrap();
        assert_eq!(ana.display_name.as_deref(), Some("Ana Lima"));
        assert_eq!(ana.avatar_url.as_deref(), Some("https://p/a.jpg"));
        assert_eq!(ana.username.as_deref(), Some(fx::USER));
        assert_eq!(profile(&http, &base, &creds(), "stranger").await, None);
        let calls = kik.calls_to("/v1/user/");
        assert_eq!(
            calls.iter().map(|c| c.status).collect::<Vec<_>>(),
            [200, 404]
        );
    }
}
