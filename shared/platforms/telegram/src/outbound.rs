//! Outbound Telegram: the content model rendered as Bot API calls, and the API's answers
//! classified (`reference/platforms.md` §1.3, §1.5).
//!
//! | content | call |
//! |---|---|
//! | text | `sendMessage` |
//! | image / audio / voice / video / file | `sendPhoto` / `sendAudio` / `sendVoice` / `sendVideo` / `sendDocument` (URL or file id) |
//! | location (with name and address: a venue) | `sendLocation` / `sendVenue` |
//! | sticker | `sendSticker` |
//! | buttons | `sendMessage` with an inline keyboard, one button per row; `reply` buttons among others become postbacks carrying their title; only `reply` buttons: a one-time reply keyboard |
//! | quick replies | `sendMessage` with a one-time reply keyboard (the tap arrives as text) |
//! | carousel | one message per card (degraded) |
//! | template | refused: `unsupported_content` |

use std::time::Duration;

use patchbay_contract::content::{Button, Media};
use patchbay_contract::{Content, OutboundJob, Platform};
use patchbay_platform::{
    Capabilities, Limits, MediaReferences, OutboundAdapter, SendError, Sent, Target, degrade,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::TelegramCredentials;

/// Sends through the Bot API.
#[derive(Debug, Clone)]
pub struct TelegramSender {
    http: reqwest::Client,
    base_url: String,
    caps: Capabilities,
    limits: Limits,
}

/// How long the `file_id` Telegram gave an upload is reused (Telegram keeps them valid far
/// longer; uploads live 30 days).
const FILE_ID_REUSE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The `file_id` of the file a media message carried, from the sent message (the largest
/// size of a photo).
pub fn sent_file_id(result: &Value) -> Option<&str> {
    if let Some(sizes) = result.get("photo").and_then(Value::as_array) {
        return sizes.last()?.get("file_id")?.as_str();
    }
    [
        "video",
        "audio",
        "voice",
        "document",
        "animation",
        "sticker",
    ]
    .iter()
    .find_map(|k| result.get(*k)?.get("file_id")?.as_str())
}

impl TelegramSender {
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

/// One Bot API call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// The method, e.g. `sendMessage`.
    pub method: &'static str,
    /// Its JSON body.
    pub body: Value,
}

fn media_source(m: &Media) -> Value {
    json!(m.file_id.as_ref().or(m.url.as_ref()))
}

fn inline_keyboard(buttons: &[Button]) -> Result<Value, SendError> {
    let rows = buttons
        .iter()
        .map(|b| {
            let button = match b {
                Button::Url { title, url, .. } => json!({"text": title, "url": url}),
                Button::Postback { title, payload } => {
                    if payload.len() > 64 {
                        return Err(SendError::permanent(
                            "invalid_request",
                            "Telegram button payloads are limited to 64 bytes",
                            None,
                        ));
                    }
                    json!({"text": title, "callback_data": payload})
                }
                Button::Reply { title } => {
                    let data: String = title.chars().take(64).collect();
                    json!({"text": title, "callback_data": data})
                }
            };
            Ok(json!([button]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"inline_keyboard": rows}))
}

fn reply_keyboard<'a>(titles: impl Iterator<Item = &'a str>) -> Value {
    let rows: Vec<Value> = titles.map(|t| json!([{"text": t}])).collect();
    json!({"keyboard": rows, "one_time_keyboard": true, "resize_keyboard": true})
}

/// Renders one (already degraded) content for `chat_id`.
pub fn render(chat_id: &str, content: &Content) -> Result<ApiCall, SendError> {
    let chat: Value = chat_id
        .parse::<i64>()
        .map_or_else(|_| json!(chat_id), |n| json!(n));
    let with_media = |method, field: &str, m: &Media| {
        let mut body = json!({"chat_id": chat, field: media_source(m)});
        if let Some(c) = &m.caption {
            body["caption"] = json!(c);
        }
        ApiCall { method, body }
    };
    Ok(match content {
        Content::Text { text } => ApiCall {
            method: "sendMessage",
            body: json!({"chat_id": chat, "text": text}),
        },
        Content::Image(m) => with_media("sendPhoto", "photo", m),
        Content::Audio(m) => with_media("sendAudio", "audio", m),
        Content::Voice(m) => with_media("sendVoice", "voice", m),
        Content::Video(m) => with_media("sendVideo", "video", m),
        Content::File(m) => with_media("sendDocument", "document", m),
        Content::Sticker { id } => ApiCall {
            method: "sendSticker",
            body: json!({"chat_id": chat, "sticker": id}),
        },
        Content::Location(l) => match (&l.name, &l.address) {
            (Some(name), Some(address)) => ApiCall {
                method: "sendVenue",
                body: json!({"chat_id": chat, "latitude": l.latitude, "longitude": l.longitude,
                             "title": name, "address": address}),
            },
            _ => ApiCall {
                method: "sendLocation",
                body: json!({"chat_id": chat, "latitude": l.latitude, "longitude": l.longitude}),
            },
        },
        Content::Buttons { text, buttons } => {
            let markup = if buttons.iter().all(|b| matches!(b, Button::Reply { .. })) {
                reply_keyboard(buttons.iter().map(Button::title))
            } else {
                inline_keyboard(buttons)?
            };
            ApiCall {
                method: "sendMessage",
                body: json!({"chat_id": chat, "text": text, "reply_markup": markup}),
            }
        }
        Content::QuickReplies { text, replies } => ApiCall {
            method: "sendMessage",
            body: json!({"chat_id": chat, "text": text,
                         "reply_markup": reply_keyboard(replies.iter().map(|r| r.title.as_str()))}),
        },
        other => {
            return Err(SendError::permanent(
                "unsupported_content",
                format!("Telegram cannot show {} messages", other.kind()),
                None,
            ));
        }
    })
}

#[derive(Debug, Deserialize)]
struct ApiAnswer {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Debug, Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

/// Classifies a Bot API answer: the sent message's id, or why it failed.
pub fn classify(status: u16, body: &[u8]) -> Result<Option<String>, SendError> {
    let answer: Option<ApiAnswer> = serde_json::from_slice(body).ok();
    if let Some(a) = &answer
        && a.ok
    {
        return Ok(a
            .result
            .as_ref()
            .and_then(|r| r.get("message_id"))
            .map(|id| id.to_string()));
    }
    let description = answer
        .as_ref()
        .and_then(|a| a.description.clone())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let code = answer
        .as_ref()
        .and_then(|a| a.error_code)
        .or(Some(i64::from(status)));
    let params = answer.as_ref().and_then(|a| a.parameters.as_ref());
    match status {
        429 => Err(SendError::Retryable {
            reason: description,
            after: Some(Duration::from_secs(
                params.and_then(|p| p.retry_after).unwrap_or(1),
            )),
        }),
        500..=599 => Err(SendError::Retryable {
            reason: description,
            after: None,
        }),
        401 | 404 => Err(SendError::permanent("unauthorized", description, code)),
        403 => Err(SendError::permanent("blocked", description, code)),
        400 if params.and_then(|p| p.migrate_to_chat_id).is_some() => Err(SendError::permanent(
            "chat_migrated",
            format!(
                "{description} (new chat id {})",
                params
                    .and_then(|p| p.migrate_to_chat_id)
                    .unwrap_or_default()
            ),
            code,
        )),
        _ => Err(SendError::permanent("invalid_request", description, code)),
    }
}

impl OutboundAdapter for TelegramSender {
    const PLATFORM: Platform = Platform::Telegram;
    type Credentials = TelegramCredentials;

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// An upload goes by URL once; Telegram's `file_id` from then on.
    const MEDIA_REFERENCES: MediaReferences = MediaReferences::Learned(FILE_ID_REUSE);

    fn default_base_url(&self) -> &str {
        &self.base_url
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn send(
        &self,
        target: Target<'_, TelegramCredentials>,
        job: &OutboundJob,
    ) -> Result<Sent, SendError> {
        // An upload (`media_id`) sent by its URL: Telegram names the file in its answer, and
        // the sender gives that `file_id` in later sends of it (`MediaReferences::Learned`).
        let learn =
            Media::of(&job.content).is_some_and(|m| m.media_id.is_some() && m.file_id.is_none());
        let parts = degrade(&job.content, &self.caps, "Telegram").map_err(SendError::Permanent)?;
        let calls = parts
            .iter()
            .map(|c| render(&job.address, c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut first_id = None;
        let mut media_reference = None;
        for call in calls {
            let url = format!(
                "{}/bot{}/{}",
                target.base_url.trim_end_matches('/'),
                target.credentials.bot_token,
                call.method
            );
            let response = self
                .http
                .post(&url)
                .headers(patchbay_platform::http::trace_headers())
                .json(&call.body)
                .send()
                .await
                .map_err(|e| SendError::Retryable {
                    // Never log the URL: it carries the bot token.
                    reason: format!("Telegram unreachable: {}", e.without_url()),
                    after: None,
                })?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(|e| SendError::Retryable {
                reason: format!("reading Telegram's answer: {}", e.without_url()),
                after: None,
            })?;
            let id = classify(status, &body)?;
            first_id = first_id.or(id);
            if learn
                && media_reference.is_none()
                && let Ok(answer) = serde_json::from_slice::<Value>(&body)
            {
                media_reference = sent_file_id(&answer["result"]).map(str::to_owned);
            }
        }
        Ok(Sent {
            platform_message_id: first_id,
            media_reference,
        })
    }

    /// The bot's name and descriptions ([`crate::profile`]).
    async fn profile(
        &self,
        target: Target<'_, TelegramCredentials>,
        change: Option<&serde_json::Map<String, Value>>,
        _: patchbay_platform::media::Context<'_>,
    ) -> Result<serde_json::Map<String, Value>, SendError> {
        crate::profile::profile(
            &self.http,
            target.base_url,
            &target.credentials.bot_token,
            change,
        )
        .await
    }

    /// `getFile` for the file's path, then `<base>/file/bot<token>/<file_path>` (the Bot API
    /// serves files up to 20 MB this way).
    async fn fetch_media(
        &self,
        target: Target<'_, TelegramCredentials>,
        media: &Media,
        ctx: patchbay_platform::media::Context<'_>,
    ) -> Result<patchbay_platform::media::Fetched, SendError> {
        let Some(file_id) = media.file_id.as_deref() else {
            return Err(SendError::permanent(
                "not_found",
                "the media has no Telegram file_id",
                None,
            ));
        };
        let base = target.base_url.trim_end_matches('/');
        let token = &target.credentials.bot_token;
        let unreachable = |e: reqwest::Error| SendError::Retryable {
            // Never log the URL: it carries the bot token.
            reason: format!("Telegram unreachable: {}", e.without_url()),
            after: None,
        };
        let response = self
            .http
            .post(format!("{base}/bot{token}/getFile"))
            .json(&serde_json::json!({ "file_id": file_id }))
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unreachable)?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        if !answer["ok"].as_bool().unwrap_or(false) {
            return Err(match classify(status, &body) {
                Err(SendError::Permanent(e)) if status == 400 => {
                    SendError::permanent("not_found", e.message, e.platform_code)
                }
                Err(e) => e,
                Ok(_) => SendError::permanent("platform_error", "getFile failed", None),
            });
        }
        let Some(path) = answer["result"]["file_path"].as_str() else {
            return Err(SendError::permanent(
                "not_found",
                "Telegram gave no file_path (files over 20 MB cannot be downloaded by bots)",
                None,
            ));
        };
        if answer["result"]["file_size"]
            .as_u64()
            .is_some_and(|n| n > ctx.max_bytes)
        {
            return Err(patchbay_platform::media::too_large(ctx.max_bytes));
        }
        let response = self
            .http
            .get(format!("{base}/file/bot{token}/{path}"))
            .send()
            .await
            .map_err(unreachable)?;
        patchbay_platform::media::check_status(&response, "Telegram")?;
        patchbay_platform::media::read_limited(response, ctx.max_bytes, "Telegram").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_contract::content::QuickReply;

    #[test]
    fn renders_text_and_buttons_as_the_bot_api_expects() {
        let call = render("4242", &Content::Text { text: "hi".into() }).unwrap();
        assert_eq!(call.method, "sendMessage");
        assert_eq!(call.body, json!({"chat_id": 4242, "text": "hi"}));
        let call = render(
            "4242",
            &Content::Buttons {
                text: "Pick one".into(),
                buttons: vec![
                    Button::Postback {
                        title: "Yes".into(),
                        payload: "y".into(),
                    },
                    Button::Url {
                        title: "Docs".into(),
                        url: "https://x.test".into(),
                        reuse_seconds: None,
                    },
                ],
            },
        )
        .unwrap();
        assert_eq!(
            call.body["reply_markup"],
            json!({"inline_keyboard": [
            [{"text": "Yes", "callback_data": "y"}], [{"text": "Docs", "url": "https://x.test"}]]})
        );
        let call = render(
            "4242",
            &Content::QuickReplies {
                text: "Size?".into(),
                replies: vec![QuickReply {
                    title: "S".into(),
                    payload: None,
                }],
            },
        )
        .unwrap();
        assert_eq!(
            call.body["reply_markup"]["keyboard"],
            json!([[{"text": "S"}]])
        );
        assert_eq!(call.body["reply_markup"]["one_time_keyboard"], json!(true));
    }

    #[test]
    fn long_postback_payloads_are_refused() {
        let e = render(
            "1",
            &Content::Buttons {
                text: "t".into(),
                buttons: vec![Button::Postback {
                    title: "x".into(),
                    payload: "p".repeat(65),
                }],
            },
        )
        .unwrap_err();
        assert!(matches!(e, SendError::Permanent(d) if d.code == "invalid_request"));
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(
                200,
                br#"{"ok":true,"result":{"message_id":17,"chat":{"id":1}}}"#
            ),
            Ok(Some("17".into()))
        );
        assert_eq!(
            classify(429, br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#),
            Err(SendError::Retryable { reason: "Too Many Requests: retry after 7".into(), after: Some(Duration::from_secs(7)) })
        );
        assert!(matches!(
            classify(502, b"<html>"),
            Err(SendError::Retryable { after: None, .. })
        ));
        let blocked = classify(403, br#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#);
        assert!(
            matches!(blocked, Err(SendError::Permanent(ref d)) if d.code == "blocked" && d.platform_code == Some(403))
        );
        assert!(
            matches!(classify(401, br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#), Err(SendError::Permanent(d)) if d.code == "unauthorized")
        );
        assert!(
            matches!(classify(400, br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#), Err(SendError::Permanent(d)) if d.code == "invalid_request")
        );
        assert!(
            matches!(classify(400, br#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded","parameters":{"migrate_to_chat_id":-100}}"#), Err(SendError::Permanent(d)) if d.code == "chat_migrated")
        );
    }
}
