//! Inbound custom-channel envelopes. `ingress-custom` has already authenticated the app (the
//! domain key) or the user (their token), so an envelope's body is Patchbay's own
//! [`CustomBody`]; the normaliser turns it into one event.
//!
//! | body | event |
//! |---|---|
//! | `register` | `user.subscribed`, with the profile the app gave |
//! | `message` | `message.received` |

use chrono::{DateTime, Utc};
use patchbay_contract::ids::{derive_id, prefix};
use patchbay_contract::{
    ChannelRef, Content, EventType, InboundEvent, InboundMessage, IngressEnvelope, Platform,
    PlatformUser, V1,
};
use patchbay_platform::NormaliseError;
use serde::{Deserialize, Serialize};

/// A user as the app describes them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppUser {
    /// The user's id within the channel (the app's own, or one Patchbay generated).
    pub platform_user_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Language or locale code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// E-mail address (lowercase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number, E.164.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// The body of a custom channel's envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CustomBody {
    /// The app registered (or re-registered) a user.
    Register {
        /// The user.
        user: AppUser,
        /// When.
        at: DateTime<Utc>,
    },
    /// A user sent a message.
    Message {
        /// The sender (only `platform_user_id` is set).
        user: AppUser,
        /// The message's id: the app's idempotency key, or one Patchbay generated.
        message_id: String,
        /// What the user sent (boxed: it is most of the variant).
        content: Box<Content>,
        /// When Patchbay received it.
        at: DateTime<Utc>,
    },
}

/// Turns a custom channel's envelope into its event.
pub fn normalise(env: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError> {
    let body: CustomBody = serde_json::from_value(env.body.clone())
        .map_err(|e| NormaliseError(format!("not a custom-channel envelope: {e}")))?;
    let (event_type, user, occurred_at, message) = match body {
        CustomBody::Register { user, at } => (EventType::UserSubscribed, user, at, None),
        CustomBody::Message {
            user,
            message_id,
            content,
            at,
        } => {
            content
                .validate()
                .map_err(|e| NormaliseError(format!("content: {e}")))?;
            (
                EventType::MessageReceived,
                user,
                at,
                Some(InboundMessage {
                    platform_message_id: message_id,
                    content: *content,
                }),
            )
        }
    };
    if !crate::token::valid_user_id(&user.platform_user_id) {
        return Err(NormaliseError(format!(
            "invalid user id {:?}",
            user.platform_user_id
        )));
    }
    Ok(vec![InboundEvent {
        v: V1,
        id: derive_id(prefix::EVENT, &env.id, 0),
        event_type,
        bot_id: env.bot_id.clone(),
        channel: ChannelRef {
            id: env.channel_id.clone(),
            platform: Platform::Custom,
        },
        occurred_at,
        address: user.platform_user_id.clone(),
        chat: None,
        sender: PlatformUser {
            platform_user_id: user.platform_user_id,
            display_name: user.display_name,
            username: None,
            locale: user.locale,
            avatar_url: user.avatar_url,
            email: user.email,
            phone: user.phone,
        },
        dedupe_key: format!("{}:0", env.dedupe_key),
        message,
        referral: None,
        resubscribed: false,
        receipt: None,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(body: serde_json::Value) -> IngressEnvelope {
        IngressEnvelope {
            v: V1,
            id: "env_01JD5W2Q8Y3T9K6V1M4N7P0R2S".into(),
            platform: Platform::Custom,
            channel_id: "ch_1".into(),
            bot_id: "bot_1".into(),
            received_at: Utc::now(),
            dedupe_key: "custom:ch_1:m1".into(),
            body,
            order_key: Some("cu_1".into()),
        }
    }

    #[test]
    fn registrations_and_messages_become_events() {
        let reg = normalise(&envelope(json!({
            "kind": "register", "at": "2026-11-21T10:00:00Z",
            "user": {"platform_user_id": "cu_1", "display_name": "Ada", "email": "ada@example.com"}
        })))
        .unwrap();
        assert_eq!(reg[0].event_type, EventType::UserSubscribed);
        assert_eq!(reg[0].sender.email.as_deref(), Some("ada@example.com"));
        assert_eq!(reg[0].address, "cu_1");
        let msg = normalise(&envelope(json!({
            "kind": "message", "at": "2026-11-21T10:00:01Z", "message_id": "m1",
            "user": {"platform_user_id": "cu_1"},
            "content": {"type": "text", "text": "hello"}
        })))
        .unwrap();
        assert_eq!(msg[0].event_type, EventType::MessageReceived);
        let m = msg[0].message.as_ref().unwrap();
        assert_eq!(m.platform_message_id, "m1");
        assert_eq!(
            m.content,
            Content::Text {
                text: "hello".into()
            }
        );
        assert_eq!(msg[0].dedupe_key, "custom:ch_1:m1:0");
    }

    #[test]
    fn unreadable_bodies_are_errors_with_a_reason() {
        let e = normalise(&envelope(json!({"kind": "dance"}))).unwrap_err();
        assert!(e.0.contains("not a custom-channel envelope"), "{e}");
        let e = normalise(&envelope(json!({
            "kind": "message", "at": "2026-11-21T10:00:01Z", "message_id": "m1",
            "user": {"platform_user_id": "cu_1"}, "content": {"type": "text", "text": ""}
        })))
        .unwrap_err();
        assert!(e.0.starts_with("content: "), "{e}");
    }
}
