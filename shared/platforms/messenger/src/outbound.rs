//! Outbound Messenger: the content model rendered for the Send API
//! (`POST <base>/<page_id>/messages` with the Page access token as Bearer), and its answers
//! classified (`reference/platforms.md` §2.3, §2.4, §2.7).
//!
//! Every request carries `recipient.id` (the PSID) and `messaging_type: RESPONSE`; messages a
//! human agent sends (`source: human`, or a job the router tagged because the 24-hour window
//! has closed) go as `MESSAGE_TAG` with `tag: HUMAN_AGENT`, which Meta
//! allows up to 7 days after the user's last message.
//!
//! | content | request(s) |
//! |---|---|
//! | text | `message.text`, cut into pieces of at most 2000 characters |
//! | image / audio / voice / video / file | `message.attachment` `{type, payload: {url, is_reusable}}` or `{attachment_id}` (voice as `audio`); a caption follows as a text |
//! | location | a text with name, address and map link (`degrade`) |
//! | buttons | button template: text ≤ 640, postback / `web_url` buttons (reply buttons post back their title), in templates of at most 3 |
//! | quick replies | `message.quick_replies` (`content_type: text`, payload or title) |
//! | carousel | generic template, one element per card (≤ 3 buttons each) |
//! | sticker, template | refused: `unsupported_content` |
//!
//! Button and quick-reply titles over 20 characters, card buttons over 3 and template texts
//! over 640 characters are refused with `invalid_request` (Meta would refuse them too).
//!
//! | Graph error (code / subcode) | Patchbay |
//! |---|---|
//! | 4, 17, 32, 613 (incl. 613/2534040, 613/2018338) | retry, after `estimated_time_to_regain_access` when given |
//! | 1, 2, HTTP 5xx, no answer | retry |
//! | 10/2018278, 10/2534022 | `outside_window` |
//! | 551, 200/1545041, 10/2018108, 1545041 | `user_unavailable` |
//! | 100/2018001 | `unknown_recipient` |
//! | 10/2018065, 10/1893063 | `page_restricted` |
//! | 2018300, 2018321 (another app or Meta's flow controls the thread) | `thread_controlled` |
//! | 100/2018008, 100/2018047, 100/2018109, 100/2018294 | `media_unavailable` |
//! | 190, 200, 10 (other) | `unauthorized` |
//! | 100 (other, incl. the retired tags) | `invalid_request` |
//! | anything else | `platform_error` |
//!
//! [`profile`] reads a user's name and picture from the Graph user profile API.

use std::time::Duration;

use patchbay_contract::content::{Button, Card, Media, QuickReply};
use patchbay_contract::{Content, MessageTag, OutboundJob, Platform, PlatformUser, SendSource};
use patchbay_platform::meta::{graph_error, post_each, retry_after};
use patchbay_platform::{Capabilities, Limits, OutboundAdapter, SendError, Sent, Target, degrade};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::MessengerCredentials;

/// The Graph API version this adapter speaks.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com/v25.0";

const TEXT_MAX: usize = 2000;
const TEMPLATE_TEXT_MAX: usize = 640;
const TITLE_MAX: usize = 20;

/// Sends through the Send API.
#[derive(Debug, Clone)]
pub struct MessengerSender {
    http: reqwest::Client,
    base_url: String,
    caps: Capabilities,
    limits: Limits,
}

impl MessengerSender {
    /// A sender with `base_url` as default API, `timeout` per call and the given pace.
    pub fn new(base_url: &str, timeout: Duration, limits: Limits) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: patchbay_platform::http::client_builder(timeout).build()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            caps: crate::capabilities::capabilities(),
            limits,
        })
    }
}

fn invalid(message: impl Into<String>) -> SendError {
    SendError::permanent("invalid_request", message, None)
}

fn title(t: &str) -> Result<&str, SendError> {
    if t.chars().count() > TITLE_MAX {
        return Err(invalid(format!(
            "Messenger button and quick-reply titles are limited to {TITLE_MAX} characters: {t:?}"
        )));
    }
    Ok(t)
}

fn button(b: &Button) -> Result<Value, SendError> {
    Ok(match b {
        Button::Postback { title: t, payload } => {
            json!({"type": "postback", "title": title(t)?, "payload": payload})
        }
        Button::Url { title: t, url, .. } => {
            json!({"type": "web_url", "title": title(t)?, "url": url})
        }
        Button::Reply { title: t } => json!({"type": "postback", "title": title(t)?, "payload": t}),
    })
}

fn attachment(kind: &str, m: &Media) -> Value {
    let payload = match (&m.file_id, &m.url) {
        (Some(id), _) => json!({"attachment_id": id}),
        (None, url) => json!({"url": url, "is_reusable": true}),
    };
    json!({"attachment": {"type": kind, "payload": payload}})
}

fn card(c: &Card) -> Result<Value, SendError> {
    if c.buttons.len() > 3 {
        return Err(invalid("Messenger cards hold at most 3 buttons"));
    }
    let mut e = json!({"title": c.title});
    if let Some(s) = &c.subtitle {
        e["subtitle"] = json!(s);
    }
    if let Some(u) = &c.image_url {
        e["image_url"] = json!(u);
    }
    if !c.buttons.is_empty() {
        e["buttons"] = Value::Array(c.buttons.iter().map(button).collect::<Result<_, _>>()?);
    }
    Ok(e)
}

fn chunks(text: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(max).map(|c| c.iter().collect()).collect()
}

/// Renders one (already degraded) content as the `message` objects to send, in order.
pub fn render(content: &Content) -> Result<Vec<Value>, SendError> {
    let with_caption = |kind: &str, m: &Media| {
        let mut out = vec![attachment(kind, m)];
        if let Some(c) = m.caption.as_ref().filter(|c| !c.is_empty()) {
            out.extend(chunks(c, TEXT_MAX).into_iter().map(|t| json!({"text": t})));
        }
        out
    };
    Ok(match content {
        Content::Text { text } => chunks(text, TEXT_MAX)
            .into_iter()
            .map(|t| json!({"text": t}))
            .collect(),
        Content::Image(m) => with_caption("image", m),
        Content::Audio(m) | Content::Voice(m) => with_caption("audio", m),
        Content::Video(m) => with_caption("video", m),
        Content::File(m) => with_caption("file", m),
        Content::Buttons { text, buttons } => {
            if text.chars().count() > TEMPLATE_TEXT_MAX {
                return Err(invalid(format!(
                    "Messenger button texts are limited to {TEMPLATE_TEXT_MAX} characters"
                )));
            }
            buttons
                .chunks(3)
                .enumerate()
                .map(|(i, group)| {
                    let text = if i == 0 { text.as_str() } else { "…" };
                    Ok(json!({"attachment": {"type": "template", "payload": {
                        "template_type": "button", "text": text,
                        "buttons": group.iter().map(button).collect::<Result<Vec<_>, _>>()?}}}))
                })
                .collect::<Result<Vec<_>, SendError>>()?
        }
        Content::QuickReplies { text, replies } => {
            let replies = replies
                .iter()
                .map(|QuickReply { title: t, payload }| {
                    Ok(json!({"content_type": "text", "title": title(t)?,
                              "payload": payload.as_deref().unwrap_or(t)}))
                })
                .collect::<Result<Vec<_>, SendError>>()?;
            let mut parts = chunks(text, TEXT_MAX);
            let last = parts.pop().unwrap_or_default();
            let mut out: Vec<Value> = parts.into_iter().map(|t| json!({"text": t})).collect();
            out.push(json!({"text": last, "quick_replies": replies}));
            out
        }
        Content::Carousel { cards } => vec![json!({"attachment": {"type": "template", "payload": {
            "template_type": "generic",
            "elements": cards.iter().map(card).collect::<Result<Vec<_>, _>>()?}}})],
        other => {
            return Err(SendError::permanent(
                "unsupported_content",
                format!("Messenger cannot show {} messages", other.kind()),
                None,
            ));
        }
    })
}

/// Whether a job goes with the `HUMAN_AGENT` tag: the router set it (the 24-hour window has
/// closed), or a human agent wrote it.
pub fn human_agent(job: &OutboundJob) -> bool {
    job.tag == Some(MessageTag::HumanAgent) || job.source == SendSource::Human
}

/// The request body for one `message` to `psid`, tagged `HUMAN_AGENT` when `human_agent`.
pub fn request(psid: &str, human_agent: bool, message: Value) -> Value {
    let mut body = json!({"recipient": {"id": psid}, "message": message});
    if human_agent {
        body["messaging_type"] = json!("MESSAGE_TAG");
        body["tag"] = json!("HUMAN_AGENT");
    } else {
        body["messaging_type"] = json!("RESPONSE");
    }
    body
}

#[derive(Debug, Deserialize)]
struct Accepted {
    message_id: String,
}

/// Classifies a Send API answer: the message id, or why it failed.
pub fn classify(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<Option<String>, SendError> {
    if (200..300).contains(&status) {
        return Ok(serde_json::from_slice::<Accepted>(body)
            .ok()
            .map(|a| a.message_id));
    }
    let Some(e) = graph_error(body) else {
        return Err(if status == 429 || status >= 500 {
            SendError::Retryable {
                reason: format!("Messenger answered HTTP {status}"),
                after: retry_after(headers),
            }
        } else {
            SendError::permanent(
                "platform_error",
                format!("Messenger answered HTTP {status}"),
                None,
            )
        });
    };
    let code = Some(e.code);
    let sub = e.error_subcode;
    let message = e.describe();
    let permanent = |c: &str| Err(SendError::permanent(c, message.clone(), code));
    let is = |c: i64, s: i64| e.code == c && sub == Some(s);
    match (e.code, sub) {
        (4 | 17 | 32 | 613, _) => Err(SendError::Retryable {
            reason: format!("Messenger rate limit ({}): {message}", e.code),
            after: retry_after(headers),
        }),
        (1 | 2, _) => Err(SendError::Retryable {
            reason: format!("Messenger transient error ({}): {message}", e.code),
            after: None,
        }),
        _ if is(10, 2018278) || is(10, 2534022) => permanent("outside_window"),
        _ if e.code == 551 || e.code == 1545041 || sub == Some(1545041) || is(10, 2018108) => {
            permanent("user_unavailable")
        }
        _ if is(100, 2018001) => permanent("unknown_recipient"),
        _ if is(10, 2018065) || is(10, 1893063) => permanent("page_restricted"),
        _ if matches!(e.code, 2018300 | 2018321) || matches!(sub, Some(2018300 | 2018321)) => {
            permanent("thread_controlled")
        }
        (100, Some(2018008 | 2018047 | 2018109 | 2018294)) => permanent("media_unavailable"),
        (190 | 200 | 10, _) => permanent("unauthorized"),
        (100, _) => permanent("invalid_request"),
        _ if status >= 500 => Err(SendError::Retryable {
            reason: format!("Messenger error {}: {message}", e.code),
            after: None,
        }),
        _ => permanent("platform_error"),
    }
}

#[derive(Debug, Deserialize)]
struct Profile {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    profile_pic: Option<String>,
    #[serde(default)]
    locale: Option<String>,
}

/// Reads `psid`'s name and picture (`GET <base>/<psid>?fields=first_name,last_name,profile_pic`
/// with the Page token): `None` when Meta does not share them (no opt-in, no Advanced Access,
/// phone-number accounts) or cannot be reached. Never fails the caller.
pub async fn profile(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    psid: &str,
) -> Option<PlatformUser> {
    let url = format!(
        "{}/{psid}?fields=first_name,last_name,profile_pic",
        base_url.trim_end_matches('/')
    );
    let response = http
        .get(url)
        .headers(patchbay_platform::http::trace_headers())
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| tracing::info!(error = %e.without_url(), "Messenger profile unreachable"))
        .ok()?;
    if !response.status().is_success() {
        tracing::info!(
            status = response.status().as_u16(),
            "Messenger profile not available"
        );
        return None;
    }
    let p: Profile = response.json().await.ok()?;
    let display_name = match (&p.first_name, &p.last_name) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f.clone()),
        (None, Some(l)) => Some(l.clone()),
        (None, None) => p.name.clone(),
    };
    (display_name.is_some() || p.profile_pic.is_some()).then(|| PlatformUser {
        platform_user_id: psid.to_owned(),
        display_name,
        username: None,
        locale: p.locale,
        avatar_url: p.profile_pic,
        email: None,
        phone: None,
    })
}

impl OutboundAdapter for MessengerSender {
    const PLATFORM: Platform = Platform::Messenger;
    type Credentials = MessengerCredentials;

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn default_base_url(&self) -> &str {
        &self.base_url
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn send(
        &self,
        target: Target<'_, MessengerCredentials>,
        job: &OutboundJob,
    ) -> Result<Sent, SendError> {
        let parts = degrade(&job.content, &self.caps, "Messenger").map_err(SendError::Permanent)?;
        let mut messages = Vec::new();
        for p in &parts {
            messages.extend(render(p)?);
        }
        let url = format!(
            "{}/{}/messages",
            target.base_url.trim_end_matches('/'),
            target.credentials.page_id
        );
        let tagged = human_agent(job);
        post_each(
            &self.http,
            &url,
            &target.credentials.page_access_token,
            messages
                .into_iter()
                .map(|m| request(&job.address, tagged, m)),
            "Messenger",
            classify,
        )
        .await
    }

    /// The Page's Messenger profile ([`crate::profile`]).
    async fn profile(
        &self,
        target: Target<'_, MessengerCredentials>,
        change: Option<&serde_json::Map<String, serde_json::Value>>,
        _: patchbay_platform::media::Context<'_>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, SendError> {
        crate::profile::profile(&self.http, target.base_url, target.credentials, change).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: Value) -> SendError {
        classify(
            status,
            &reqwest::header::HeaderMap::new(),
            &serde_json::to_vec(&body).unwrap(),
        )
        .unwrap_err()
    }

    fn graph(code: i64, sub: Option<i64>) -> Value {
        json!({"error": {"message": "m", "type": "OAuthException", "code": code,
                         "error_subcode": sub, "fbtrace_id": "F"}})
    }

    #[test]
    fn messenger_every_documented_error_is_classified() {
        let permanent: &[(u16, i64, Option<i64>, &str)] = &[
            (400, 10, Some(2018278), "outside_window"),
            (400, 10, Some(2534022), "outside_window"),
            (400, 551, None, "user_unavailable"),
            (400, 200, Some(1545041), "user_unavailable"),
            (400, 1545041, None, "user_unavailable"),
            (400, 10, Some(2018108), "user_unavailable"),
            (400, 100, Some(2018001), "unknown_recipient"),
            (400, 10, Some(2018065), "page_restricted"),
            (400, 10, Some(1893063), "page_restricted"),
            (400, 2018300, None, "thread_controlled"),
            (400, 10, Some(2018321), "thread_controlled"),
            (400, 100, Some(2018008), "media_unavailable"),
            (400, 100, Some(2018047), "media_unavailable"),
            (400, 100, Some(2018109), "media_unavailable"),
            (400, 100, Some(2018294), "media_unavailable"),
            (401, 190, None, "unauthorized"),
            (403, 200, None, "unauthorized"),
            (403, 10, None, "unauthorized"),
            (400, 100, None, "invalid_request"),
            (400, 12345, None, "platform_error"),
        ];
        for (status, code, sub, expected) in permanent {
            match err(*status, graph(*code, *sub)) {
                SendError::Permanent(d) => {
                    assert_eq!(
                        (d.code.as_str(), d.platform_code),
                        (*expected, Some(*code)),
                        "{code}/{sub:?}"
                    )
                }
                other => panic!("{code}/{sub:?}: {other:?}"),
            }
        }
        for (status, code, sub) in [
            (400, 4, None),
            (400, 17, None),
            (400, 32, None),
            (400, 613, Some(2534040)),
            (400, 613, Some(2018338)),
            (500, 1, None),
            (503, 2, None),
        ] {
            assert!(
                matches!(err(status, graph(code, sub)), SendError::Retryable { .. }),
                "{code}"
            );
        }
        assert!(matches!(
            err(502, json!("<html>")),
            SendError::Retryable { .. }
        ));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-business-use-case-usage",
            r#"{"1":[{"estimated_time_to_regain_access":3}]}"#.parse().unwrap(),
        );
        assert_eq!(
            classify(400, &h, &serde_json::to_vec(&graph(613, None)).unwrap()),
            Err(SendError::Retryable {
                reason: "Messenger rate limit (613): m".into(),
                after: Some(Duration::from_secs(180))
            })
        );
        assert_eq!(
            classify(200, &h, br#"{"recipient_id":"1","message_id":"m_x"}"#),
            Ok(Some("m_x".into()))
        );
    }

    #[test]
    fn renders_the_content_model_for_the_send_api() {
        let check = |c: Content, expected: Value| {
            assert_eq!(Value::Array(render(&c).unwrap()), expected, "{c:?}")
        };
        check(Content::Text { text: "hi".into() }, json!([{"text": "hi"}]));
        check(
            Content::Text {
                text: "x".repeat(2001),
            },
            json!([{"text": "x".repeat(2000)}, {"text": "x"}]),
        );
        check(
            Content::Image(Media {
                url: Some("https://x.test/a.png".into()),
                file_id: None,
                caption: Some("cap".into()),
                filename: None,
                mime_type: None,
                media_id: None,
                download_url: None,
                preview_url: None,
                duration_ms: None,
                size_bytes: None,
            }),
            json!([{"attachment": {"type": "image", "payload": {"url": "https://x.test/a.png", "is_reusable": true}}}, {"text": "cap"}]),
        );
        check(
            Content::Voice(Media {
                url: None,
                file_id: Some("77".into()),
                caption: None,
                filename: None,
                mime_type: None,
                media_id: None,
                download_url: None,
                preview_url: None,
                duration_ms: None,
                size_bytes: None,
            }),
            json!([{"attachment": {"type": "audio", "payload": {"attachment_id": "77"}}}]),
        );
        check(
            Content::QuickReplies {
                text: "Pick a colour:".into(),
                replies: vec![
                    QuickReply {
                        title: "Red".into(),
                        payload: Some("COLOR_RED".into()),
                    },
                    QuickReply {
                        title: "Green".into(),
                        payload: None,
                    },
                ],
            },
            json!([{"text": "Pick a colour:", "quick_replies": [
                {"content_type": "text", "title": "Red", "payload": "COLOR_RED"},
                {"content_type": "text", "title": "Green", "payload": "Green"}]}]),
        );
        let b = |i: usize| Button::Postback {
            title: format!("B{i}"),
            payload: format!("p{i}"),
        };
        let out = render(&Content::Buttons {
            text: "Choose".into(),
            buttons: (0..4).map(b).collect(),
        })
        .unwrap();
        assert_eq!(out.len(), 2, "templates of at most 3 buttons");
        assert_eq!(
            out[0]["attachment"]["payload"]["buttons"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(out[0]["attachment"]["payload"]["text"], "Choose");
        check(
            Content::Buttons {
                text: "t".into(),
                buttons: vec![
                    Button::Url {
                        title: "Site".into(),
                        url: "https://x.test".into(),
                        reuse_seconds: None,
                    },
                    Button::Reply {
                        title: "Yes".into(),
                    },
                ],
            },
            json!([{"attachment": {"type": "template", "payload": {"template_type": "button", "text": "t", "buttons": [
                {"type": "web_url", "title": "Site", "url": "https://x.test"},
                {"type": "postback", "title": "Yes", "payload": "Yes"}]}}}]),
        );
        check(
            Content::Carousel {
                cards: vec![Card {
                    title: "A".into(),
                    subtitle: Some("a".into()),
                    image_url: Some("https://x.test/a.png".into()),
                    buttons: vec![b(1)],
                }],
            },
            json!([{"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": [
                {"title": "A", "subtitle": "a", "image_url": "https://x.test/a.png", "buttons": [{"type": "postback", "title": "B1", "payload": "p1"}]}]}}}]),
        );
        let long = render(&Content::QuickReplies {
            text: "t".into(),
            replies: vec![QuickReply {
                title: "x".repeat(21),
                payload: None,
            }],
        });
        assert!(matches!(long, Err(SendError::Permanent(d)) if d.code == "invalid_request"));
        let sticker = render(&Content::Sticker { id: "1".into() });
        assert!(matches!(sticker, Err(SendError::Permanent(d)) if d.code == "unsupported_content"));
    }

    #[test]
    fn human_agents_send_with_the_human_agent_tag() {
        assert_eq!(
            request("9", false, json!({"text": "a"})),
            json!({"recipient": {"id": "9"}, "messaging_type": "RESPONSE", "message": {"text": "a"}})
        );
        assert_eq!(
            request("9", true, json!({"text": "a"})),
            json!({"recipient": {"id": "9"}, "messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT", "message": {"text": "a"}})
        );
    }
}
