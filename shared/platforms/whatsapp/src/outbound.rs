//! Outbound WhatsApp: the content model rendered as Cloud API messages
//! (`POST <base>/<phone_number_id>/messages`, `Authorization: Bearer`), and the answers
//! classified (`reference/platforms.md` §3.3, §3.6).
//!
//! Every message carries `messaging_product: whatsapp`, `recipient_type: individual` and
//! `to` (a phone number) or `recipient` (a business-scoped user id, for users without one).
//!
//! | content | message |
//! |---|---|
//! | text | `text` (`preview_url` when it holds a link) |
//! | image / video / file | `image` / `video` / `document` by media `id` or `link`, with caption (and file name) |
//! | audio / voice | `audio` by `id` or `link`; a caption follows as a text |
//! | sticker | `sticker` by media `id` (or `link` when the id is a URL) |
//! | location | `location` |
//! | buttons: only postback / reply, ≤ 3 | `interactive` `button` (reply buttons: id = payload or title) |
//! | buttons: only postback / reply, ≤ 10 | `interactive` `list` (one section) |
//! | buttons: one URL button | `interactive` `cta_url` |
//! | other buttons | a numbered text (`degrade`) |
//! | quick replies | as postback buttons: reply buttons (≤ 3), a list (≤ 10), else a numbered text |
//! | carousel | card by card (`degrade`) |
//! | template | `template` with name, language and header / body / button parameters |
//!
//! Titles longer than WhatsApp allows (buttons 20, list rows 24 characters) and texts above
//! reply buttons over 1024 characters are refused with `invalid_request`.
//!
//! | Cloud API error code | Patchbay |
//! |---|---|
//! | 130429, 131056, 131057, 80007, 4 | retry (rate limits) |
//! | 1, 2, HTTP 5xx, no answer | retry |
//! | 131047 | `outside_window` |
//! | 131026 | `user_unavailable` |
//! | 131048 | `rate_limited` (spam rate limit: retrying soon does not help) |
//! | 131049 | `marketing_limit` |
//! | 368 | `policy_restricted` |
//! | 131031 | `account_locked` |
//! | 132000–132999 | `template_error` |
//! | 190, 10, 200 | `unauthorized` |
//! | 100 | `invalid_request` |
//! | anything else | `platform_error` |
//!
//! Most delivery failures come later as `failed` statuses; the normaliser classifies their
//! errors with [`classify_code`] too.

use std::time::Duration;

use patchbay_contract::content::{Button, Media};
use patchbay_contract::{Content, OutboundJob, Platform};
use patchbay_platform::meta::{graph_error, post_each, retry_after};
use patchbay_platform::{
    Capabilities, Limits, MediaReferences, OutboundAdapter, SendError, Sent, Support, Target,
    degrade,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::WhatsappCredentials;

/// The Graph API version this adapter speaks.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com/v25.0";

/// Sends through the Cloud API.
#[derive(Debug, Clone)]
pub struct WhatsappSender {
    http: reqwest::Client,
    base_url: String,
    caps: Capabilities,
    limits: Limits,
}

impl WhatsappSender {
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

fn limited<'a>(what: &str, t: &'a str, max: usize) -> Result<&'a str, SendError> {
    if t.chars().count() > max {
        return Err(invalid(format!(
            "WhatsApp {what} are limited to {max} characters: {t:?}"
        )));
    }
    Ok(t)
}

fn media_object(m: &Media) -> Value {
    let mut o = match (&m.file_id, &m.url) {
        (Some(id), _) => json!({"id": id}),
        (None, url) => json!({"link": url}),
    };
    if let Some(c) = &m.caption {
        o["caption"] = json!(c);
    }
    o
}

/// Postback-like choices (id, title) as reply buttons or a list; `None` when there are more
/// than ten.
fn choices(text: &str, items: &[(String, String)]) -> Result<Option<Value>, SendError> {
    if items.len() <= 3 {
        if text.chars().count() > 1024 {
            return Err(invalid(
                "WhatsApp texts above reply buttons are limited to 1024 characters",
            ));
        }
        let buttons = items
            .iter()
            .map(|(id, title)| {
                Ok(json!({"type": "reply", "reply": {
                    "id": limited("button ids", id, 256)?, "title": limited("button titles", title, 20)?}}))
            })
            .collect::<Result<Vec<_>, SendError>>()?;
        return Ok(Some(json!({"type": "interactive", "interactive": {
            "type": "button", "body": {"text": text}, "action": {"buttons": buttons}}})));
    }
    if items.len() <= 10 {
        let rows = items
            .iter()
            .map(|(id, title)| {
                Ok(json!({"id": limited("list row ids", id, 200)?,
                          "title": limited("list row titles", title, 24)?}))
            })
            .collect::<Result<Vec<_>, SendError>>()?;
        return Ok(Some(json!({"type": "interactive", "interactive": {
            "type": "list", "body": {"text": text},
            "action": {"button": "Choose", "sections": [{"title": "Options", "rows": rows}]}}})));
    }
    Ok(None)
}

/// Renders one (already degraded) content as the type-specific part of Cloud API messages
/// (`type` and the object named after it), in order.
pub fn render(content: &Content) -> Result<Vec<Value>, SendError> {
    Ok(match content {
        Content::Text { text } => {
            let preview = text.contains("https://") || text.contains("http://");
            vec![json!({"type": "text", "text": {"body": text, "preview_url": preview}})]
        }
        Content::Image(m) => vec![json!({"type": "image", "image": media_object(m)})],
        Content::Video(m) => vec![json!({"type": "video", "video": media_object(m)})],
        Content::File(m) => {
            let mut o = media_object(m);
            if let Some(f) = &m.filename {
                o["filename"] = json!(f);
            }
            vec![json!({"type": "document", "document": o})]
        }
        Content::Audio(m) | Content::Voice(m) => {
            let mut audio = media_object(m);
            let caption = audio
                .as_object_mut()
                .and_then(|o| o.remove("caption"))
                .and_then(|c| c.as_str().map(str::to_owned));
            let mut out = vec![json!({"type": "audio", "audio": audio})];
            if let Some(c) = caption {
                out.push(json!({"type": "text", "text": {"body": c, "preview_url": false}}));
            }
            out
        }
        Content::Sticker { id } => {
            let sticker = if id.starts_with("https://") || id.starts_with("http://") {
                json!({"link": id})
            } else {
                json!({"id": id})
            };
            vec![json!({"type": "sticker", "sticker": sticker})]
        }
        Content::Location(l) => {
            let mut o = json!({"latitude": l.latitude, "longitude": l.longitude});
            if let Some(n) = &l.name {
                o["name"] = json!(n);
            }
            if let Some(a) = &l.address {
                o["address"] = json!(a);
            }
            vec![json!({"type": "location", "location": o})]
        }
        Content::Buttons { text, buttons } => {
            if let [Button::Url { title, url, .. }] = buttons.as_slice() {
                return Ok(vec![json!({"type": "interactive", "interactive": {
                    "type": "cta_url", "body": {"text": text},
                    "action": {"name": "cta_url", "parameters": {
                        "display_text": limited("button titles", title, 20)?, "url": url}}}})]);
            }
            let items: Option<Vec<(String, String)>> = buttons
                .iter()
                .map(|b| match b {
                    Button::Postback { title, payload } => Some((payload.clone(), title.clone())),
                    Button::Reply { title } => Some((title.clone(), title.clone())),
                    Button::Url { .. } => None,
                })
                .collect();
            match items.map(|i| choices(text, &i)).transpose()?.flatten() {
                Some(m) => vec![m],
                None => numbered(content)?,
            }
        }
        Content::QuickReplies { text, replies } => {
            let items: Vec<(String, String)> = replies
                .iter()
                .map(|r| {
                    (
                        r.payload.clone().unwrap_or_else(|| r.title.clone()),
                        r.title.clone(),
                    )
                })
                .collect();
            match choices(text, &items)? {
                Some(m) => vec![m],
                None => numbered(content)?,
            }
        }
        Content::Template(t) => {
            let t = t.inline().map_err(|e| {
                SendError::permanent("invalid_request", format!("template: {e}"), None)
            })?;
            // The contract's template is shaped like the Cloud API's, except that a button's
            // `index` is a number there and a string here.
            let mut components = serde_json::to_value(&t.components).map_err(|e| {
                SendError::permanent("invalid_request", format!("template: {e}"), None)
            })?;
            if let Some(list) = components.as_array_mut() {
                for c in list {
                    if let Some(i) = c.get("index").and_then(Value::as_u64) {
                        c["index"] = json!(i.to_string());
                    }
                }
            }
            let mut template = json!({"name": t.name, "language": {"code": t.language}});
            if components.as_array().is_some_and(|c| !c.is_empty()) {
                template["components"] = components;
            }
            vec![json!({"type": "template", "template": template})]
        }
        other => {
            return Err(SendError::permanent(
                "unsupported_content",
                format!("WhatsApp cannot show {} messages", other.kind()),
                None,
            ));
        }
    })
}

/// Buttons or replies WhatsApp cannot show as such: the numbered text of `degrade`.
fn numbered(content: &Content) -> Result<Vec<Value>, SendError> {
    let caps = Capabilities {
        media: |_| Support::Native,
        buttons: Support::Degraded,
        quick_replies: Support::Degraded,
        carousel: Support::Degraded,
        template: Support::Native,
    };
    let parts = degrade(content, &caps, "WhatsApp").map_err(SendError::Permanent)?;
    let mut out = Vec::new();
    for p in &parts {
        out.extend(render(p)?);
    }
    Ok(out)
}

/// The full request body of one rendered message to `address`: a phone number goes in `to`,
/// a business-scoped user id (`CC.…`) in `recipient`.
pub fn request(address: &str, message: Value) -> Value {
    let mut body = json!({"messaging_product": "whatsapp", "recipient_type": "individual"});
    let phone = address.trim_start_matches('+');
    if !phone.is_empty() && phone.chars().all(|c| c.is_ascii_digit()) {
        body["to"] = json!(phone);
    } else {
        body["recipient"] = json!(address);
    }
    if let (Some(b), Some(m)) = (body.as_object_mut(), message.as_object()) {
        b.extend(m.clone());
    }
    body
}

/// Classifies a Cloud API error code (from a send answer or a `failed` status).
pub fn classify_code(code: i64, http_status: u16, message: String) -> SendError {
    let permanent = |c: &str| SendError::permanent(c, message.clone(), Some(code));
    match code {
        130429 | 131056 | 131057 | 80007 | 4 => SendError::Retryable {
            reason: format!("WhatsApp rate limit ({code}): {message}"),
            after: None,
        },
        1 | 2 => SendError::Retryable {
            reason: format!("WhatsApp transient error ({code}): {message}"),
            after: None,
        },
        131047 => permanent("outside_window"),
        131026 => permanent("user_unavailable"),
        131048 => permanent("rate_limited"),
        131049 => permanent("marketing_limit"),
        368 => permanent("policy_restricted"),
        131031 => permanent("account_locked"),
        132000..=132999 => permanent("template_error"),
        190 | 10 | 200 => permanent("unauthorized"),
        100 => permanent("invalid_request"),
        _ if http_status >= 500 => SendError::Retryable {
            reason: format!("WhatsApp error {code}: {message}"),
            after: None,
        },
        _ => permanent("platform_error"),
    }
}

#[derive(Debug, Deserialize)]
struct Accepted {
    #[serde(default)]
    messages: Vec<AcceptedMessage>,
}

#[derive(Debug, Deserialize)]
struct AcceptedMessage {
    id: String,
}

/// Classifies a Cloud API answer: the `wamid`, or why it failed.
pub fn classify(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<Option<String>, SendError> {
    if (200..300).contains(&status) {
        return Ok(serde_json::from_slice::<Accepted>(body)
            .ok()
            .and_then(|a| a.messages.into_iter().next())
            .map(|m| m.id));
    }
    let Some(e) = graph_error(body) else {
        return Err(if status == 429 || status >= 500 {
            SendError::Retryable {
                reason: format!("WhatsApp answered HTTP {status}"),
                after: retry_after(headers),
            }
        } else {
            SendError::permanent(
                "platform_error",
                format!("WhatsApp answered HTTP {status}"),
                None,
            )
        });
    };
    Err(match classify_code(e.code, status, e.describe()) {
        SendError::Retryable { reason, after } => SendError::Retryable {
            reason,
            after: after.or_else(|| retry_after(headers)),
        },
        p => p,
    })
}

impl OutboundAdapter for WhatsappSender {
    const PLATFORM: Platform = Platform::Whatsapp;
    type Credentials = WhatsappCredentials;

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
        target: Target<'_, WhatsappCredentials>,
        job: &OutboundJob,
    ) -> Result<Sent, SendError> {
        let parts = degrade(&job.content, &self.caps, "WhatsApp").map_err(SendError::Permanent)?;
        let mut messages = Vec::new();
        for p in &parts {
            messages.extend(render(p)?);
        }
        let url = format!(
            "{}/{}/messages",
            target.base_url.trim_end_matches('/'),
            target.credentials.phone_number_id
        );
        post_each(
            &self.http,
            &url,
            &target.credentials.access_token,
            messages.into_iter().map(|m| request(&job.address, m)),
            "WhatsApp",
            classify,
        )
        .await
    }

    /// The business profile ([`crate::profile`]).
    async fn profile(
        &self,
        target: Target<'_, WhatsappCredentials>,
        change: Option<&serde_json::Map<String, Value>>,
        ctx: patchbay_platform::media::Context<'_>,
    ) -> Result<serde_json::Map<String, Value>, SendError> {
        crate::profile::profile(&self.http, target.base_url, target.credentials, change, ctx).await
    }

    /// Uploaded media lasts 30 days.
    const MEDIA_REFERENCES: MediaReferences =
        MediaReferences::Uploaded(Duration::from_secs(30 * 24 * 3600));

    /// `POST /<PHONE_NUMBER_ID>/media` (multipart: `messaging_product`, `type`, `file`): the
    /// media id sends give as `{"id": …}` (WhatsApp's preferred form over a link).
    async fn upload_media(
        &self,
        target: Target<'_, WhatsappCredentials>,
        file: &patchbay_platform::media::Fetched,
        _kind: patchbay_platform::spec::MediaKind,
        filename: Option<&str>,
    ) -> Result<Option<String>, SendError> {
        let (content_type, body) = patchbay_platform::http::multipart(
            &[
                ("messaging_product", "whatsapp"),
                ("type", file.content_type.as_str()),
            ],
            "file",
            filename.unwrap_or("media"),
            &file.content_type,
            &file.bytes,
        );
        let unreachable = |e: reqwest::Error| SendError::Retryable {
            reason: format!("WhatsApp unreachable: {}", e.without_url()),
            after: None,
        };
        let response = self
            .http
            .post(format!(
                "{}/{}/media",
                target.base_url.trim_end_matches('/'),
                target.credentials.phone_number_id
            ))
            .bearer_auth(&target.credentials.access_token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unreachable)?;
        if !(200..300).contains(&status) {
            classify(status, &headers, &body)?;
        }
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        answer["id"]
            .as_str()
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| {
                SendError::permanent("platform_error", "WhatsApp's upload answer has no id", None)
            })
    }

    /// `GET /<media id>` for the media's short-lived URL, then that URL, both with the access
    /// token (WhatsApp keeps a user's media 30 days).
    async fn fetch_media(
        &self,
        target: Target<'_, WhatsappCredentials>,
        media: &Media,
        ctx: patchbay_platform::media::Context<'_>,
    ) -> Result<patchbay_platform::media::Fetched, SendError> {
        let Some(id) = media.file_id.as_deref() else {
            return Err(SendError::permanent(
                "not_found",
                "the media has no WhatsApp media id",
                None,
            ));
        };
        let token = &target.credentials.access_token;
        let unreachable = |e: reqwest::Error| SendError::Retryable {
            reason: format!("WhatsApp unreachable: {}", e.without_url()),
            after: None,
        };
        let response = self
            .http
            .get(format!("{}/{id}", target.base_url.trim_end_matches('/')))
            .bearer_auth(token)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unreachable)?;
        if !(200..300).contains(&status) {
            return Err(match classify(status, &headers, &body) {
                // Graph's "does not exist" for an id it no longer has.
                Err(SendError::Permanent(e)) if e.platform_code == Some(100) => {
                    SendError::permanent("not_found", e.message, e.platform_code)
                }
                Err(e) => e,
                Ok(_) => SendError::permanent("platform_error", "media lookup failed", None),
            });
        }
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        if answer["file_size"]
            .as_u64()
            .is_some_and(|n| n > ctx.max_bytes)
        {
            return Err(patchbay_platform::media::too_large(ctx.max_bytes));
        }
        let Some(url) = answer["url"].as_str() else {
            return Err(SendError::permanent(
                "platform_error",
                "WhatsApp gave no URL for the media",
                None,
            ));
        };
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(unreachable)?;
        patchbay_platform::media::check_status(&response, "WhatsApp")?;
        let mut fetched =
            patchbay_platform::media::read_limited(response, ctx.max_bytes, "WhatsApp").await?;
        if let Some(mime) = answer["mime_type"].as_str() {
            mime.clone_into(&mut fetched.content_type);
        }
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_contract::content::{QuickReply, Template, TemplateComponent};

    fn err(status: u16, code: i64) -> SendError {
        let body = json!({"error": {"message": "m", "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": "d"}, "fbtrace_id": "F"}});
        classify(
            status,
            &reqwest::header::HeaderMap::new(),
            &serde_json::to_vec(&body).unwrap(),
        )
        .unwrap_err()
    }

    #[test]
    fn whatsapp_every_documented_error_is_classified() {
        for (code, expected) in [
            (131047, "outside_window"),
            (131026, "user_unavailable"),
            (131048, "rate_limited"),
            (131049, "marketing_limit"),
            (368, "policy_restricted"),
            (131031, "account_locked"),
            (132000, "template_error"),
            (132001, "template_error"),
            (190, "unauthorized"),
            (10, "unauthorized"),
            (200, "unauthorized"),
            (100, "invalid_request"),
            (999, "platform_error"),
        ] {
            match err(400, code) {
                SendError::Permanent(d) => {
                    assert_eq!((d.code.as_str(), d.platform_code), (expected, Some(code)));
                    assert_eq!(d.message, "m (d)");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        for code in [130429, 131056, 131057, 80007, 4, 1, 2] {
            assert!(
                matches!(err(400, code), SendError::Retryable { .. }),
                "{code}"
            );
        }
        assert!(matches!(err(500, 999), SendError::Retryable { .. }));
        let h = reqwest::header::HeaderMap::new();
        assert!(matches!(
            classify(503, &h, b"down"),
            Err(SendError::Retryable { .. })
        ));
        assert_eq!(
            classify(200, &h, br#"{"messaging_product":"whatsapp","contacts":[{"input":"351910000000","wa_id":"351910000000"}],"messages":[{"id":"wamid.OUT1"}]}"#),
            Ok(Some("wamid.OUT1".into()))
        );
    }

    #[test]
    fn renders_the_content_model_as_cloud_api_messages() {
        let check = |c: Content, expected: Value| {
            assert_eq!(Value::Array(render(&c).unwrap()), expected, "{c:?}")
        };
        check(
            Content::Text { text: "hi".into() },
            json!([{"type": "text", "text": {"body": "hi", "preview_url": false}}]),
        );
        check(
            Content::Image(Media {
                url: None,
                file_id: Some("MEDIA_1".into()),
                caption: Some("c".into()),
                filename: None,
                mime_type: None,
                media_id: None,
                download_url: None,
                preview_url: None,
                duration_ms: None,
                size_bytes: None,
            }),
            json!([{"type": "image", "image": {"id": "MEDIA_1", "caption": "c"}}]),
        );
        check(
            Content::File(Media {
                url: Some("https://x.test/i.pdf".into()),
                file_id: None,
                caption: None,
                filename: Some("i.pdf".into()),
                mime_type: None,
                media_id: None,
                download_url: None,
                preview_url: None,
                duration_ms: None,
                size_bytes: None,
            }),
            json!([{"type": "document", "document": {"link": "https://x.test/i.pdf", "filename": "i.pdf"}}]),
        );
        check(
            Content::Voice(Media {
                url: Some("https://x.test/v.ogg".into()),
                file_id: None,
                caption: Some("listen".into()),
                filename: None,
                mime_type: None,
                media_id: None,
                download_url: None,
                preview_url: None,
                duration_ms: None,
                size_bytes: None,
            }),
            json!([{"type": "audio", "audio": {"link": "https://x.test/v.ogg"}}, {"type": "text", "text": {"body": "listen", "preview_url": false}}]),
        );
        check(
            Content::Sticker { id: "M4".into() },
            json!([{"type": "sticker", "sticker": {"id": "M4"}}]),
        );
        check(
            Content::Location(patchbay_contract::content::Location {
                latitude: 1.5,
                longitude: 2.5,
                name: Some("n".into()),
                address: None,
            }),
            json!([{"type": "location", "location": {"latitude": 1.5, "longitude": 2.5, "name": "n"}}]),
        );
        check(
            Content::Buttons {
                text: "Confirm?".into(),
                buttons: vec![
                    Button::Postback {
                        title: "Confirm".into(),
                        payload: "confirm".into(),
                    },
                    Button::Reply { title: "No".into() },
                ],
            },
            json!([{"type": "interactive", "interactive": {"type": "button", "body": {"text": "Confirm?"}, "action": {"buttons": [
                {"type": "reply", "reply": {"id": "confirm", "title": "Confirm"}},
                {"type": "reply", "reply": {"id": "No", "title": "No"}}]}}}]),
        );
        check(
            Content::Buttons {
                text: "Docs".into(),
                buttons: vec![Button::Url {
                    title: "Open".into(),
                    url: "https://x.test".into(),
                    reuse_seconds: None,
                }],
            },
            json!([{"type": "interactive", "interactive": {"type": "cta_url", "body": {"text": "Docs"},
                "action": {"name": "cta_url", "parameters": {"display_text": "Open", "url": "https://x.test"}}}}]),
        );
        let replies: Vec<QuickReply> = (0..5)
            .map(|i| QuickReply {
                title: format!("R{i}"),
                payload: None,
            })
            .collect();
        let out = render(&Content::QuickReplies {
            text: "Pick".into(),
            replies,
        })
        .unwrap();
        assert_eq!(out[0]["interactive"]["type"], "list");
        assert_eq!(
            out[0]["interactive"]["action"]["sections"][0]["rows"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        let mixed = render(&Content::Buttons {
            text: "t".into(),
            buttons: vec![
                Button::Url {
                    title: "Site".into(),
                    url: "https://x.test".into(),
                    reuse_seconds: None,
                },
                Button::Reply { title: "Ok".into() },
            ],
        })
        .unwrap();
        assert_eq!(
            mixed,
            vec![
                json!({"type": "text", "text": {"body": "t\n1. Site: https://x.test\n2. Ok", "preview_url": true}})
            ]
        );
        let long = render(&Content::Buttons {
            text: "t".into(),
            buttons: vec![Button::Reply {
                title: "x".repeat(21),
            }],
        });
        assert!(matches!(long, Err(SendError::Permanent(d)) if d.code == "invalid_request"));
        let long = render(&Content::Buttons {
            text: "t".repeat(1025),
            buttons: vec![Button::Reply { title: "x".into() }],
        });
        assert!(
            matches!(long, Err(SendError::Permanent(d)) if d.code == "invalid_request" && d.message.contains("1024"))
        );
    }

    #[test]
    fn templates_render_with_their_parameters() {
        let t: Template = serde_json::from_value(json!({"name": "order_ready", "language": "en_US", "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x.test/h.png"}}]},
            {"type": "body", "parameters": [{"type": "text", "parameter_name": "order_no", "text": "A-17"},
                {"type": "currency", "currency": {"fallback_value": "$10", "code": "USD", "amount_1000": 10000}}]},
            {"type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [{"type": "payload", "payload": "TRACK"}]}]}))
            .unwrap();
        let _: &TemplateComponent = &t.components[0];
        let out = render(&Content::Template(t.into())).unwrap();
        assert_eq!(
            out,
            vec![
                json!({"type": "template", "template": {"name": "order_ready", "language": {"code": "en_US"}, "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x.test/h.png"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "A-17", "parameter_name": "order_no"},
                {"type": "currency", "currency": {"fallback_value": "$10", "code": "USD", "amount_1000": 10000}}]},
            {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "TRACK"}]}]}})
            ]
        );
    }

    #[test]
    fn phone_numbers_go_in_to_and_user_ids_in_recipient() {
        let m = json!({"type": "text", "text": {"body": "a"}});
        assert_eq!(
            request("351910000000", m.clone()),
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
            "to": "351910000000", "type": "text", "text": {"body": "a"}})
        );
        assert_eq!(request("US.998877", m)["recipient"], "US.998877");
    }
}
