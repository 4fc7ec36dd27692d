//! The HTTP bodies of a custom channel's API (`ingress-custom`), with JSON Schemas for the
//! OpenAPI document.

use chrono::{DateTime, Utc};
use patchbay_contract::{Content, CustomReply};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/custom/{channel_id}/users` (`Authorization: Bearer <domain key>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUser {
    /// The app's own id for the user (1–128 characters of `A-Z a-z 0-9 _ - : @ .`); the same
    /// id always gets the same user. Generated when absent. An id that already has a user is
    /// registered again only with `X-Patchbay-Registration` from the app's back end.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Language or locale code.
    #[serde(default)]
    pub locale: Option<String>,
    /// Avatar URL.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// E-mail address (`POST /v1/conversations` finds the user by it).
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number in E.164, e.g. `+31612345678`.
    #[serde(default)]
    pub phone: Option<String>,
}

/// Answer of `POST /v1/custom/{channel_id}/users` and `POST /v1/custom/{channel_id}/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RegisteredUser {
    /// Patchbay's id of the user (`usr_…`), as events and `/v1/users` name them.
    pub user_id: String,
    /// The user's id within the channel (`external_id`, or the generated one).
    pub platform_user_id: String,
    /// The user's token: `Authorization: Bearer <token>` to send as the user. Keep it secret.
    pub token: String,
    /// When the token expires (the channel's `token_ttl_seconds` after it was issued); get a
    /// new one before with `POST /v1/custom/{channel_id}/token`.
    pub expires_at: DateTime<Utc>,
}

/// Answer of `POST /v1/users/{user_id}/tokens/revoke` and
/// `POST /v1/channels/{channel_id}/tokens/revoke` (tenant API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevokedTokens {
    /// Every token of the user (or the channel) issued at or before this time is refused
    /// from now on; tokens issued later work.
    pub tokens_revoked_at: DateTime<Utc>,
}

/// Body of `POST /v1/custom/{channel_id}/messages` (`Authorization: Bearer <user token>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendAsUser {
    /// Idempotency key (1–200 characters): a repeat within two minutes is not delivered
    /// again.
    #[serde(default)]
    pub id: Option<String>,
    /// What the user sends: text, image, audio, voice, video, file, location, sticker or
    /// postback.
    pub content: Content,
    /// How long to wait for the bot's replies, at most `PATCHBAY_CUSTOM_REPLY_WAIT_MS`
    /// (the default); 0 answers at once.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// Answer of `POST /v1/custom/{channel_id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SentAsUser {
    /// The event the message became (`webhook-id` of the tenant's callback).
    pub event_id: String,
    /// Patchbay's id of the user's message.
    pub message_id: String,
    /// The bot's messages to the user that arrived while the request waited, in order.
    pub replies: Vec<CustomReply>,
    /// The tenant answered, and every message of its inline reply is in `replies`. When
    /// false, later replies still reach the channel's event webhook.
    pub complete: bool,
    /// The idempotency key was seen before: nothing was sent again, nothing waited for.
    pub duplicate: bool,
}
