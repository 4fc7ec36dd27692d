//! BotDistrikt's webchat API ("Other Channels"), spoken by a custom channel of the
//! `botdistrikt` flavour, so an app written for BotDistrikt talks to Patchbay unchanged
//! (`docs/compat.md`, "BotDistrikt"):
//!
//! * `POST /api/webchat_apps/{webchat_app_id}/user` with `domain` (the channel's domain key:
//!   BotDistrikt's "custom domain", a password), an optional `webchat_id` and an optional
//!   `user`: registers the user (a new `webchat_id` is generated when none is given) or finds
//!   them, and answers the `bot_user`;
//! * `POST /api/webchat_apps/{webchat_app_id}/message` with `Authorization: <webchat_id>` (the
//!   raw id: the user's credential) and `domain`, `user`, `message`: sends as the user and
//!   answers the bot's responses;
//! * the channel's event webhook gets `X-BotDistrikt-Source` (`bot`, `human`, `broadcast`) and
//!   `X-BotDistrikt-Source-Id` beside Patchbay's own headers.
//!
//! The `webchat_app_id` is the channel's id. BotDistrikt accepts JSON and form-encoded bodies;
//! so does Patchbay (form fields `domain`, `webchat_id`, `user[first_name]`,
//! `user[last_name]`, `message[text]`, `message[payload]`).

use chrono::{DateTime, Utc};
use patchbay_contract::{Content, CustomReply};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// BotDistrikt's `X-BotDistrikt-Source` on the event webhook.
pub const SOURCE_HEADER: &str = "x-botdistrikt-source";
/// BotDistrikt's `X-BotDistrikt-Source-Id`.
pub const SOURCE_ID_HEADER: &str = "x-botdistrikt-source-id";

/// Body of `POST /api/webchat_apps/{webchat_app_id}/user`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserRequest {
    /// The channel's domain key (BotDistrikt's custom domain).
    #[serde(default)]
    pub domain: String,
    /// The user's id: the credential of their messages, so unguessable. Generated when absent.
    #[serde(default)]
    pub webchat_id: Option<String>,
    /// What is known of the user (BotDistrikt's `bot_user`; other fields are ignored).
    #[serde(default)]
    pub user: Option<UserFields>,
}

/// The fields of a `bot_user` Patchbay keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserFields {
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Locale.
    #[serde(default)]
    pub locale: Option<String>,
}

/// A user as BotDistrikt answers it (`bot_user`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BotUser {
    /// The user's id and credential.
    pub webchat_id: String,
    /// First name (`Webchat Guest <n>` when none was given).
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Always true: the user can write.
    pub active: bool,
    /// Always false: a webchat user is one person.
    pub is_group: bool,
    /// Always `web`.
    pub channel: String,
    /// Patchbay's id of the user (`usr_…`), as events name them.
    pub user_id: String,
}

impl BotUser {
    /// The `bot_user` of `webchat_id`, Patchbay's `user_id`, with the names given (or a guest's
    /// name derived from the id).
    pub fn new(webchat_id: &str, user_id: &str, fields: Option<&UserFields>) -> Self {
        let given = |f: fn(&UserFields) -> &Option<String>| {
            fields
                .and_then(|u| f(u).as_deref())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        BotUser {
            webchat_id: webchat_id.to_owned(),
            first_name: given(|u| &u.first_name).unwrap_or_else(|| guest_name(webchat_id)),
            last_name: given(|u| &u.last_name).unwrap_or_default(),
            active: true,
            is_group: false,
            channel: "web".into(),
            user_id: user_id.to_owned(),
        }
    }

    /// The name events carry.
    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
            .trim()
            .to_owned()
    }
}

/// `Webchat Guest <5 digits>`, stable for a `webchat_id`, as BotDistrikt names guests.
fn guest_name(webchat_id: &str) -> String {
    let n = webchat_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("Webchat Guest {}", 10_000 + n % 90_000)
}

/// Body of `POST /api/webchat_apps/{webchat_app_id}/message`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageRequest {
    /// The channel's domain key.
    #[serde(default)]
    pub domain: String,
    /// The sender as BotDistrikt passes it (not needed: `Authorization` names the user).
    #[serde(default)]
    pub user: Option<serde_json::Value>,
    /// What the user sends.
    #[serde(default)]
    pub message: UserMessage,
}

/// A user's message (`bot_user_message`): text, or a button's payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserMessage {
    /// The app's id of the message: a repeat is not delivered again.
    #[serde(default)]
    pub id: Option<String>,
    /// The text the user wrote (or the tapped button's title, with `payload`).
    #[serde(default)]
    pub text: Option<String>,
    /// A tapped button's payload.
    #[serde(default)]
    pub payload: Option<String>,
}

impl UserMessage {
    /// The message as Patchbay content; `None` when it carries neither text nor payload.
    pub fn content(&self) -> Option<Content> {
        let text = self.text.clone().filter(|t| !t.trim().is_empty());
        match (self.payload.clone().filter(|p| !p.is_empty()), text) {
            (Some(payload), title) => Some(Content::Postback { payload, title }),
            (None, Some(text)) => Some(Content::Text { text }),
            (None, None) => None,
        }
    }
}

/// One of the bot's responses, as the message request answers them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BotResponse {
    /// Patchbay's id of the message.
    pub id: String,
    /// `text`, `buttons`, `image`, … (the content's type).
    pub message_type: String,
    /// Its text, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The whole content, as Patchbay's custom channels get it.
    pub content: Content,
    /// `bot`, `human` or `broadcast`.
    pub source: String,
    /// The bot's, agent's or broadcast's id.
    pub source_id: String,
    /// When the bot sent it.
    pub created_at: DateTime<Utc>,
}

impl From<&CustomReply> for BotResponse {
    fn from(r: &CustomReply) -> Self {
        let value = serde_json::to_value(&r.content).unwrap_or_default();
        BotResponse {
            id: r.id.clone(),
            message_type: r.content.kind().to_owned(),
            text: value["text"].as_str().map(str::to_owned),
            content: r.content.clone(),
            source: r.source.clone(),
            source_id: r.source_id.clone(),
            created_at: r.created_at,
        }
    }
}

/// A form-encoded body read into `T`'s fields (`user[first_name]` into `user.first_name`),
/// as BotDistrikt accepts forms as well as JSON.
pub fn from_form(pairs: &[(String, String)]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (key, value) in pairs {
        match key.split_once('[') {
            Some((outer, rest)) if rest.ends_with(']') => {
                let inner = &rest[..rest.len() - 1];
                let entry = out
                    .entry(outer.to_owned())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if let Some(obj) = entry.as_object_mut() {
                    obj.insert(inner.to_owned(), value.clone().into());
                }
            }
            _ => {
                out.insert(key.clone(), value.clone().into());
            }
        }
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_keeps_one_name_and_given_names_win() {
        let a = BotUser::new("webchat.zbqr0d", "usr_1", None);
        assert_eq!(
            a.first_name,
            BotUser::new("webchat.zbqr0d", "usr_1", None).first_name
        );
        assert!(a.first_name.starts_with("Webchat Guest "), "{a:?}");
        let named = UserFields {
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            ..UserFields::default()
        };
        let b = BotUser::new("w", "usr_2", Some(&named));
        assert_eq!(b.display_name(), "Ada Lovelace");
        assert_eq!(
            (b.channel.as_str(), b.active, b.is_group),
            ("web", true, false)
        );
    }

    #[test]
    fn forms_read_like_json() {
        let pairs = vec![
            ("domain".to_owned(), "https://a9sn38h.app.link".to_owned()),
            ("user[first_name]".to_owned(), "Ada".to_owned()),
            ("message[text]".to_owned(), "hi".to_owned()),
        ];
        let v = from_form(&pairs);
        let m: MessageRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(
            m.message.content(),
            Some(Content::Text { text: "hi".into() })
        );
        let u: UserRequest = serde_json::from_value(v).unwrap();
        assert_eq!(u.user.unwrap().first_name.as_deref(), Some("Ada"));
    }

    #[test]
    fn a_payload_is_a_postback() {
        let m = UserMessage {
            text: Some("Yes".into()),
            payload: Some("YES".into()),
            ..UserMessage::default()
        };
        assert_eq!(
            m.content(),
            Some(Content::Postback {
                payload: "YES".into(),
                title: Some("Yes".into())
            })
        );
        assert_eq!(UserMessage::default().content(), None);
    }
}
