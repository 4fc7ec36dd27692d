//! BrandChat compatibility: the wire shapes of BrandChat's API and callbacks, and their mapping
//! to Patchbay's, so that a bot with flavour `brandchat` works with clients written for
//! BrandChat (`reference/seed-systems.md` §1). Pure data; the signature (`X-Chat-Signature`,
//! hex HMAC-SHA1 with the API key) is computed where the bytes are.
//!
//! * **User ids** are 64-bit integers in BrandChat. Patchbay's `usr_…` id maps to
//!   [`numeric_user_id`]: the first 52 bits of its SHA-256, so it is stable, needs no table,
//!   and survives JavaScript clients (below 2^53). The router stores the same number (a
//!   generated column) to find the user again.
//! * **Callbacks**: `subscribe`, `unsubscribe`, `message` (`text`, `image`, `voice`, `video`,
//!   `location`) with `type` and `timestamp` ([`callback_body`]); other events (sent, delivered,
//!   read, failed) are not sent to
//!   BrandChat clients.
//! * **Messages** from BrandChat clients (`send/messages`, inline replies): `text` (at most 1000
//!   characters, optional `buttons`), `image`, `voice`, `video`, `audio` with a `url` or the
//!   `fileId` of an upload ([`BrandchatMessage`]); at most 10 per call, all valid or none sent.
//! * **Uploads** (`file/upload`): one file of BrandChat's types and sizes ([`upload_kind`]),
//!   kept in the `<p>_files` object store and served at `/brandchat/files/<bot>/<fileId>`
//!   ([`file_url`]), which is the URL the platforms fetch.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Content;
use crate::content::{Button, FieldError, Media};
use crate::wire::{EventType, Platform, TenantEvent, UserProfile};

/// At most this many messages per `send/messages` call or inline reply.
pub const MAX_MESSAGES: usize = 10;
/// At most this many characters in a text message.
pub const MAX_TEXT: usize = 1000;

/// The owner (associated data) an API key is sealed under, so a sealed key cannot pass for the
/// bot's webhook secret or the other way round.
pub fn key_owner(bot_id: &str) -> String {
    format!("{bot_id}/api-key")
}

/// What BrandChat accepts in `file/upload` (1 kB = 1024 B): the message type a content type is
/// for, and its size limit; `None` for other content types.
pub fn upload_kind(content_type: &str) -> Option<(&'static str, usize)> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "image/jpg" | "image/jpeg" | "image/png" => Some(("image", 128 * 1024)),
        "audio/amr" => Some(("voice", 256 * 1024)),
        "video/mp4" => Some(("video", 1024 * 1024)),
        _ => None,
    }
}

/// Where an uploaded file is served: `<public_url>/brandchat/files/<bot_id>/<file_id>`.
pub fn file_url(public_url: &str, bot_id: &str, file_id: i64) -> String {
    format!(
        "{}/brandchat/files/{bot_id}/{file_id}",
        public_url.trim_end_matches('/')
    )
}

/// BrandChat's 64-bit user id of a Patchbay user: the first 52 bits of SHA-256 of the id.
pub fn numeric_user_id(user_id: &str) -> i64 {
    let digest = Sha256::digest(user_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::try_from(u64::from_be_bytes(first) >> 12).unwrap_or(i64::MAX)
}

/// The `platform` values BrandChat knows; others are named as Patchbay names them.
fn platform_name(p: Platform) -> &'static str {
    match p {
        Platform::Messenger => "facebook",
        other => other.as_str(),
    }
}

/// BrandChat's profile object (`user/profile`, `code/claim`, the `profile` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrandchatProfile {
    /// The user's id.
    pub user_id: i64,
    /// `telegram`, `facebook`, `wechat`, `kik`, …
    pub platform: String,
    /// Display name, `""` when unknown.
    pub display_name: String,
    /// Avatar URL, `""` when unknown.
    pub profile_image_url: String,
    /// 0 unspecified, 1 man, 2 woman.
    pub gender: u8,
    /// ISO 3166-1 alpha-2, `""` when unknown.
    pub country: String,
    /// `""` when unknown.
    pub province: String,
    /// `""` when unknown.
    pub city: String,
    /// Whether the user receives messages from the bot.
    pub is_subscribed: bool,
    /// When the user last subscribed, UNIX seconds (0 if never known).
    pub last_subscribe_timestamp: i64,
    /// The platform's id of the user in the bot's context.
    pub platform_identifier: String,
}

impl From<&UserProfile> for BrandchatProfile {
    fn from(p: &UserProfile) -> Self {
        Self {
            user_id: numeric_user_id(&p.id),
            platform: platform_name(p.channel.platform).to_owned(),
            display_name: p.display_name.clone().unwrap_or_default(),
            profile_image_url: p.avatar_url.clone().unwrap_or_default(),
            gender: 0,
            country: String::new(),
            province: String::new(),
            city: String::new(),
            is_subscribed: p.subscribed,
            last_subscribe_timestamp: 0,
            platform_identifier: p.platform_user_id.clone(),
        }
    }
}

/// A button on a BrandChat text message: a postback (`label`, `value`) or a link (`label`,
/// `url`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrandchatButton {
    /// The label.
    pub label: String,
    /// What the bot gets back when it is pressed.
    #[serde(default)]
    pub value: Option<String>,
    /// The link it opens.
    #[serde(default)]
    pub url: Option<String>,
}

/// A message as BrandChat clients send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrandchatMessage {
    /// `text`, `image`, `voice`, `video` or `audio`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The recipient (for `send/messages`; inline replies go to the event's user).
    #[serde(default)]
    pub user_id: Option<i64>,
    /// The text (`text`).
    #[serde(default)]
    pub text: Option<String>,
    /// Buttons under the text (`text`).
    #[serde(default)]
    pub buttons: Option<Vec<BrandchatButton>>,
    /// The media's URL (`image`, `voice`, `video`, `audio`).
    #[serde(default)]
    pub url: Option<String>,
    /// An uploaded file (`file/upload`), instead of `url`.
    #[serde(default)]
    pub file_id: Option<i64>,
}

impl BrandchatMessage {
    /// Patchbay's content for this message, or the field at fault. `files` turns a `fileId`
    /// into the URL its upload is served at ([`file_url`] without the id).
    pub fn to_content(&self, files: &dyn Fn(i64) -> String) -> Result<Content, FieldError> {
        let media = || -> Result<Media, FieldError> {
            let url = match (&self.url, self.file_id) {
                (Some(u), None) => u.clone(),
                (None, Some(id)) => files(id),
                _ => {
                    return Err(FieldError::new("url", "give exactly one of url and fileId"));
                }
            };
            Ok(Media {
                url: Some(url),
                file_id: None,
                caption: None,
                filename: None,
                mime_type: None,
                media_id: None,
                download_url: None,
                preview_url: None,
                duration_ms: None,
                size_bytes: None,
            })
        };
        let content = match self.kind.as_str() {
            "text" => {
                let text = self
                    .text
                    .clone()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| FieldError::new("text", "required"))?;
                if text.chars().count() > MAX_TEXT {
                    return Err(FieldError::new(
                        "text",
                        format!("at most {MAX_TEXT} characters"),
                    ));
                }
                match self.buttons.as_deref() {
                    None | Some([]) => Content::Text { text },
                    Some(buttons) => Content::Buttons {
                        text,
                        buttons: buttons
                            .iter()
                            .enumerate()
                            .map(|(i, b)| match (&b.value, &b.url) {
                                (Some(value), None) => Ok(Button::Postback {
                                    title: b.label.clone(),
                                    payload: value.clone(),
                                }),
                                (None, Some(url)) => Ok(Button::Url {
                                    title: b.label.clone(),
                                    url: url.clone(),
                                    reuse_seconds: None,
                                }),
                                _ => Err(FieldError::new(
                                    format!("buttons[{i}]"),
                                    "give either value or url",
                                )),
                            })
                            .collect::<Result<_, _>>()?,
                    },
                }
            }
            "image" => Content::Image(media()?),
            "voice" => Content::Voice(media()?),
            "video" => Content::Video(media()?),
            "audio" => Content::Audio(media()?),
            other => {
                return Err(FieldError::new(
                    "type",
                    format!("{other:?} is not a message type (text, image, voice, video, audio)"),
                ));
            }
        };
        content.validate()?;
        Ok(content)
    }
}

/// Checks a list of BrandChat messages all-or-nothing: 1 to 10, each valid (and, for
/// `send/messages`, each with a `userId`). Returns their contents in order, or the field at
/// fault (`[i].text`, …).
pub fn contents(
    messages: &[BrandchatMessage],
    need_user: bool,
    files: &dyn Fn(i64) -> String,
) -> Result<Vec<Content>, FieldError> {
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(FieldError::new(
            "messages",
            format!("send 1 to {MAX_MESSAGES} messages"),
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if need_user && m.user_id.is_none() {
                return Err(FieldError::new(format!("[{i}].userId"), "required"));
            }
            m.to_content(files).map_err(|e| e.within(&format!("[{i}]")))
        })
        .collect()
}

/// The BrandChat callback body of a tenant event, or `None` when BrandChat has no such event
/// (deliveries and failures of sent messages, message kinds it does not know).
pub fn callback_body(event: &TenantEvent) -> Option<Value> {
    // BrandChat has no broadcast events.
    let user_id = numeric_user_id(&event.user.as_ref()?.id);
    let timestamp = event.created_at.timestamp();
    match event.event_type {
        EventType::UserSubscribed => Some(json!({
            "type": "subscribe", "timestamp": timestamp, "subscribe": {"userId": user_id}
        })),
        EventType::UserUnsubscribed => Some(json!({
            "type": "unsubscribe", "timestamp": timestamp, "unsubscribe": {"userId": user_id}
        })),
        EventType::MessageReceived => {
            let content = event.message.as_ref()?.content.as_ref()?;
            let message = match content {
                Content::Text { text } => json!({"type": "text", "userId": user_id, "text": text}),
                Content::Postback { payload, title } => json!({
                    "type": "text", "userId": user_id,
                    "text": title.clone().unwrap_or_else(|| payload.clone())
                }),
                Content::Image(m) | Content::Voice(m) | Content::Video(m) | Content::Audio(m) => {
                    let kind = match content {
                        Content::Image(_) => "image",
                        Content::Video(_) => "video",
                        _ => "voice",
                    };
                    json!({"type": kind, "userId": user_id,
                           "url": m.url.clone().unwrap_or_default(),
                           "contentType": m.mime_type.clone().unwrap_or_default(),
                           "size": 0})
                }
                Content::Location(l) => json!({
                    "type": "location", "userId": user_id,
                    "latitude": l.latitude, "longitude": l.longitude
                }),
                _ => return None,
            };
            Some(json!({"type": "message", "timestamp": timestamp, "message": message}))
        }
        EventType::MessageSent
        | EventType::MessageFailed
        | EventType::MessageDelivered
        | EventType::MessageRead
        | EventType::MessageUnsent
        | EventType::ConversationHandover
        | EventType::BroadcastProgress
        | EventType::BroadcastCompleted => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_limited_by_type_as_brandchat_limits_them() {
        assert_eq!(upload_kind("image/png"), Some(("image", 131072)));
        assert_eq!(
            upload_kind("IMAGE/JPG; charset=binary"),
            Some(("image", 131072))
        );
        assert_eq!(upload_kind("audio/amr"), Some(("voice", 262144)));
        assert_eq!(upload_kind("video/mp4"), Some(("video", 1048576)));
        assert_eq!(upload_kind("application/pdf"), None);
    }

    #[test]
    fn user_ids_are_stable_52_bit_integers() {
        let a = numeric_user_id("usr_01JD5W2Q8Y3T9K6V1M4N7P0R2S");
        assert_eq!(a, numeric_user_id("usr_01JD5W2Q8Y3T9K6V1M4N7P0R2S"));
        assert_ne!(a, numeric_user_id("usr_01JD5W2Q8Y3T9K6V1M4N7P0R2T"));
        assert!((0..1 << 52).contains(&a));
    }

    #[test]
    fn messages_map_to_contents_all_or_nothing() {
        let files = |id: i64| file_url("https://p.example/", "bot_1", id);
        let batch: Vec<BrandchatMessage> = serde_json::from_value(json!([
            {"type": "text", "userId": 1337, "text": "Hello"},
            {"type": "text", "userId": 1337, "text": "Pick",
             "buttons": [{"label": "A", "value": "a"}, {"label": "Site", "url": "https://x.example"}]},
            {"type": "image", "userId": 1337, "url": "https://x.example/a.png"}
        ]))
        .unwrap();
        let c = contents(&batch, true, &files).unwrap();
        assert_eq!(
            c[0],
            Content::Text {
                text: "Hello".into()
            }
        );
        assert!(matches!(&c[1], Content::Buttons { buttons, .. } if buttons.len() == 2));
        assert!(matches!(&c[2], Content::Image(_)));
        let bad: Vec<BrandchatMessage> = serde_json::from_value(json!([
            {"type": "text", "userId": 1, "text": "ok"},
            {"type": "text", "userId": 1, "text": "x".repeat(1001)}
        ]))
        .unwrap();
        assert_eq!(contents(&bad, true, &files).unwrap_err().field, "[1].text");
        let eleven = vec![batch[0].clone(); 11];
        assert_eq!(
            contents(&eleven, true, &files).unwrap_err().field,
            "messages"
        );
        let no_user: Vec<BrandchatMessage> =
            serde_json::from_value(json!([{"type": "text", "text": "hi"}])).unwrap();
        assert_eq!(
            contents(&no_user, true, &files).unwrap_err().field,
            "[0].userId"
        );
        assert!(
            contents(&no_user, false, &files).is_ok(),
            "inline replies need no userId"
        );
        let file: Vec<BrandchatMessage> =
            serde_json::from_value(json!([{"type": "image", "fileId": 7}])).unwrap();
        let c = contents(&file, false, &files).unwrap();
        assert!(
            matches!(&c[0], Content::Image(m) if m.url.as_deref() == Some("https://p.example/brandchat/files/bot_1/7"))
        );
        let both: Vec<BrandchatMessage> = serde_json::from_value(
            json!([{"type": "image", "fileId": 7, "url": "https://x.example/a.png"}]),
        )
        .unwrap();
        assert_eq!(contents(&both, false, &files).unwrap_err().field, "[0].url");
    }
}
