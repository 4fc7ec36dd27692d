//! UChat's API chat channel on custom channels of the `uchat` flavour, so a partner's system
//! written for UChat talks to Patchbay unchanged (`docs/compat.md`, "UChat").
//!
//! * The partner sets the channel's webhook through UChat's partner API (served by `api`); the
//!   URL answers UChat's challenge, a form `POST` of `hub_mode`, `hub_verify_token` and
//!   `hub_challenge`.
//! * Its system sends as its users to the `bot_url` (`POST /api/apichat/{channel_id}`, served
//!   by `ingress-custom`) with a bot API key (UChat's "flow API key"): [`ApiChatMessage`].
//! * The bot's and agents' messages to those users reach the webhook as [`webhook_body`],
//!   signed `X-Uchat-Signature: sha256=<hex HMAC-SHA256 of the body>` with the verification
//!   key ([`signature`]).
//!
//! UChat's published page lost its request and payload bodies (they were images); the shapes
//! here are Patchbay's reading of its field names (`user_ns`, `msg_type`, `mid`), documented
//! in `docs/compat.md`.

use patchbay_contract::content::{Button, Card, Media, QuickReply};
use patchbay_contract::{Content, CustomReply};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// The header carrying the signature of a webhook request.
pub const SIGNATURE_HEADER: &str = "x-uchat-signature";

/// A message the partner's system sends as one of its users (`POST <bot_url>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
pub struct ApiChatMessage {
    /// The user in the partner's system (1 to 128 characters of `A-Z a-z 0-9 _ - : @ .`);
    /// `user_ns` and `sender_id` are taken too.
    #[serde(alias = "user_ns", alias = "sender_id")]
    pub user_id: String,
    /// Their name, kept on the user's first message.
    #[serde(default, alias = "name", alias = "first_name")]
    pub user_name: Option<String>,
    /// `text` (the default), `payload` (a button's), `image`, `audio`, `video` or `file`;
    /// `msg_type` is taken too.
    #[serde(default, rename = "type", alias = "msg_type")]
    pub kind: Option<String>,
    /// The text; a payload's title.
    #[serde(default)]
    pub text: Option<String>,
    /// A button's payload.
    #[serde(default)]
    pub payload: Option<String>,
    /// A file's URL (`file_url`, `image_url`, `audio_url`, `video_url` taken too).
    #[serde(
        default,
        alias = "file_url",
        alias = "image_url",
        alias = "audio_url",
        alias = "video_url"
    )]
    pub url: Option<String>,
    /// The message's id in the partner's system: a repeat within two minutes is not
    /// delivered again (`mid` taken too).
    #[serde(default, alias = "mid")]
    pub id: Option<String>,
}

impl ApiChatMessage {
    /// What the user sends; the error names the field.
    pub fn content(&self) -> Result<Content, (&'static str, String)> {
        let kind = self.kind.as_deref().unwrap_or("text");
        let text = self.text.clone().filter(|t| !t.is_empty());
        let media = |url: &Option<String>| -> Result<Media, (&'static str, String)> {
            let url = url
                .clone()
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .ok_or(("url", format!("a {kind} message needs its http(s) url")))?;
            Ok(Media {
                url: Some(url),
                caption: text.clone(),
                ..Media::default()
            })
        };
        Ok(match kind {
            "text" => Content::Text {
                text: text.ok_or(("text", "a text message needs its text".to_owned()))?,
            },
            "payload" | "postback" | "button" => Content::Postback {
                payload: self
                    .payload
                    .clone()
                    .filter(|p| !p.is_empty())
                    .ok_or(("payload", "a payload message needs its payload".to_owned()))?,
                title: text,
            },
            "image" => Content::Image(media(&self.url)?),
            "audio" => Content::Audio(media(&self.url)?),
            "video" => Content::Video(media(&self.url)?),
            "file" => Content::File(media(&self.url)?),
            other => {
                return Err((
                    "type",
                    format!("{other:?}: text, payload, image, audio, video or file"),
                ));
            }
        })
    }
}

fn buttons_json(buttons: &[Button]) -> Vec<Value> {
    buttons
        .iter()
        .map(|b| match b {
            Button::Postback { title, payload } => {
                json!({"type": "postback", "title": title, "payload": payload})
            }
            Button::Url { title, url, .. } => json!({"type": "url", "title": title, "url": url}),
            other => json!({"type": "postback", "title": other.title(), "payload": other.title()}),
        })
        .collect()
}

/// The message in UChat's shapes: `text` (with `quick_replies`), `buttons` (the button
/// template), `generic` (cards), `image`, `audio`, `video`, `file`; anything else as
/// `{"type": <kind>, "content": <Patchbay's content>}`.
pub fn message_json(content: &Content) -> Value {
    let media = |kind: &str, m: &Media| {
        json!({"type": kind, "url": m.download_url.clone().or_else(|| m.url.clone()),
               "caption": m.caption})
    };
    match content {
        Content::Text { text } => json!({"type": "text", "text": text}),
        Content::QuickReplies { text, replies } => json!({
            "type": "text",
            "text": text,
            "quick_replies": replies
                .iter()
                .map(|r: &QuickReply| json!({"title": r.title,
                                              "payload": r.payload.clone().unwrap_or_else(|| r.title.clone())}))
                .collect::<Vec<_>>(),
        }),
        Content::Buttons { text, buttons } => {
            json!({"type": "buttons", "text": text, "buttons": buttons_json(buttons)})
        }
        Content::Carousel { cards } => json!({
            "type": "generic",
            "elements": cards
                .iter()
                .map(|c: &Card| json!({"title": c.title, "subtitle": c.subtitle,
                                        "image_url": c.image_url,
                                        "buttons": buttons_json(&c.buttons)}))
                .collect::<Vec<_>>(),
        }),
        Content::Image(m) => media("image", m),
        Content::Audio(m) | Content::Voice(m) => media("audio", m),
        Content::Video(m) => media("video", m),
        Content::File(m) => media("file", m),
        other => json!({"type": other.kind(), "content": other}),
    }
}

/// The body posted to the webhook for a message to a user: `type` is `bot`, `agent` (a human
/// answered) or `broadcast`.
pub fn webhook_body(reply: &CustomReply) -> Value {
    let kind = match reply.source.as_str() {
        "human" => "agent",
        other => other,
    };
    json!({
        "type": kind,
        "user_id": reply.platform_user_id,
        "message_id": reply.id,
        "agent_id": (kind == "agent").then_some(&reply.source_id),
        "created_at": reply.created_at.timestamp(),
        "message": message_json(&reply.content),
    })
}

/// `sha256=<hex HMAC-SHA256 of body>` keyed with the verification key.
pub fn signature(verification_key: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        patchbay_platform::meta::signature_hex(verification_key, body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(v: Value) -> ApiChatMessage {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn each_kind_of_message_becomes_its_content_and_a_missing_part_is_named() {
        let text = message(json!({"user_ns": "u1", "text": "hi"}));
        assert_eq!(text.user_id, "u1");
        assert!(matches!(text.content(), Ok(Content::Text { text }) if text == "hi"));
        let payload = message(json!({"user_id": "u1", "type": "payload", "payload": "BUY",
                                      "text": "Buy"}));
        assert!(matches!(payload.content(),
            Ok(Content::Postback { payload, title: Some(t) }) if payload == "BUY" && t == "Buy"));
        let image = message(json!({"user_id": "u1", "msg_type": "image",
                                    "image_url": "https://x.example/a.png"}));
        assert!(matches!(image.content(), Ok(Content::Image(_))));
        for (v, field) in [
            (json!({"user_id": "u1"}), "text"),
            (json!({"user_id": "u1", "type": "payload"}), "payload"),
            (
                json!({"user_id": "u1", "type": "video", "url": "ftp://x"}),
                "url",
            ),
            (json!({"user_id": "u1", "type": "sticker"}), "type"),
        ] {
            assert_eq!(message(v.clone()).content().unwrap_err().0, field, "{v}");
        }
    }

    #[test]
    fn the_signature_is_hex_hmac_sha256_with_its_prefix() {
        // echo -n '{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", br#"{"a":1}"#),
            "sha256=88a67f24bbcdaed0e6c997404bb79a743baf44c6bab2f4c27328e3009d22e342"
        );
    }
}
