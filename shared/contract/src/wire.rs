//! Versioned wire types: every payload that crosses NATS (streams, key-value buckets and
//! request/reply), and the event body tenants receive. Each carries `"v": 1`; a breaking change
//! gets a new type with `"v": 2`, never an edit in place. Frozen by the schema snapshot test.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::content::{Content, Media};

/// The version marker `"v": 1`. Deserialising any other number fails with a clear message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V1;

impl Serialize for V1 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for V1 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == 1 {
            Ok(V1)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported payload version {v}; this build reads version 1"
            )))
        }
    }
}

impl JsonSchema for V1 {
    fn schema_name() -> Cow<'static, str> {
        "V1".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "const": 1, "description": "Payload version."})
    }
}

/// A messenger.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Telegram Bot API.
    Telegram,
    /// Facebook Messenger.
    Messenger,
    /// WhatsApp Business Cloud API.
    Whatsapp,
    /// WeChat Official Accounts.
    Wechat,
    /// Kik.
    Kik,
    /// LINE Messaging API.
    Line,
    /// Viber REST bot API.
    Viber,
    /// A custom channel (mobile app, device, own web chat).
    Custom,
}

impl Platform {
    /// The lowercase name used in subjects, paths and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Telegram => "telegram",
            Platform::Messenger => "messenger",
            Platform::Whatsapp => "whatsapp",
            Platform::Wechat => "wechat",
            Platform::Kik => "kik",
            Platform::Line => "line",
            Platform::Viber => "viber",
            Platform::Custom => "custom",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown platform {s:?}"))
    }
}

/// Kinds of events tenants receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    /// A user sent a message (text, media, location, a button press as `postback`, ...).
    #[serde(rename = "message.received")]
    MessageReceived,
    /// A user started or unblocked the bot.
    #[serde(rename = "user.subscribed")]
    UserSubscribed,
    /// A user blocked the bot.
    #[serde(rename = "user.unsubscribed")]
    UserUnsubscribed,
    /// The platform accepted a message the bot sent.
    #[serde(rename = "message.sent")]
    MessageSent,
    /// A message the bot sent could not be delivered.
    #[serde(rename = "message.failed")]
    MessageFailed,
    /// The platform reports a message the bot sent as delivered to the user's device.
    #[serde(rename = "message.delivered")]
    MessageDelivered,
    /// The platform reports a message the bot sent as read (or played) by the user.
    #[serde(rename = "message.read")]
    MessageRead,
    /// A user withdrew a message they had sent (LINE's `unsend`): the event names the
    /// Patchbay message, which the bot should stop showing.
    #[serde(rename = "message.unsent")]
    MessageUnsent,
    /// A conversation passed from the bot to a human agent or back (`handover` says who and
    /// why).
    #[serde(rename = "conversation.handover")]
    ConversationHandover,
    /// A broadcast's counts moved (at most every `PATCHBAY_BROADCAST_PROGRESS_EVERY`; the
    /// event's `broadcast` has them).
    #[serde(rename = "broadcast.progress")]
    BroadcastProgress,
    /// A broadcast finished: every recipient has an outcome, or it was cancelled and what
    /// was on its way has one (`broadcast.state` says which; the counts are final).
    #[serde(rename = "broadcast.completed")]
    BroadcastCompleted,
}

impl EventType {
    /// Every event type.
    pub const ALL: &[EventType] = &[
        EventType::MessageReceived,
        EventType::UserSubscribed,
        EventType::UserUnsubscribed,
        EventType::MessageSent,
        EventType::MessageFailed,
        EventType::MessageDelivered,
        EventType::MessageRead,
        EventType::MessageUnsent,
        EventType::ConversationHandover,
        EventType::BroadcastProgress,
        EventType::BroadcastCompleted,
    ];

    /// The dotted name, e.g. `message.received`. (Adding a variant: add it to [`Self::ALL`]
    /// too; `all_lists_every_type` checks.)
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageReceived => "message.received",
            EventType::UserSubscribed => "user.subscribed",
            EventType::UserUnsubscribed => "user.unsubscribed",
            EventType::MessageSent => "message.sent",
            EventType::MessageFailed => "message.failed",
            EventType::MessageDelivered => "message.delivered",
            EventType::MessageRead => "message.read",
            EventType::MessageUnsent => "message.unsent",
            EventType::ConversationHandover => "conversation.handover",
            EventType::BroadcastProgress => "broadcast.progress",
            EventType::BroadcastCompleted => "broadcast.completed",
        }
    }
}

/// Who answers a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandledBy {
    /// The bot (its callback and the API).
    Bot,
    /// A human agent: the bot's inline replies and API sends are held back (`suppressed`).
    Human,
}

impl HandledBy {
    /// `bot` or `human`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            HandledBy::Bot => "bot",
            HandledBy::Human => "human",
        }
    }

    /// From its stored name (anything but `human` is the bot).
    pub fn from_stored(s: &str) -> Self {
        if s == "human" {
            HandledBy::Human
        } else {
            HandledBy::Bot
        }
    }
}

/// A conversation passing between the bot and a human (`conversation.handover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Handover {
    /// Who answers it now.
    pub to: HandledBy,
    /// The agent who took it (to `human`), or who had it (back to `bot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `requested` (`POST /v1/conversations/{id}/handover` or the console) or `idle` (no
    /// agent message for the bot's hand-back time).
    pub reason: String,
}

/// How long a conversation stays with a human agent without an agent message, by default.
pub const HANDOVER_IDLE_DEFAULT_SECS: u64 = 30 * 60;

/// The code of a bot's send held back while a human agent answers the conversation.
pub const HUMAN_HANDOVER: &str = "human_handover";

/// A channel as events name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelRef {
    /// Patchbay's channel id (`ch_…`).
    pub id: String,
    /// Its messenger.
    pub platform: Platform,
}

// ---------------------------------------------------------------------------------------------
// <p>.ingress.<platform>.<channel>

/// A platform webhook exactly as received, after its signature was checked.
/// Subject `<p>.ingress.<platform>.<channel>`; `Nats-Msg-Id` is [`IngressEnvelope::dedupe_key`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IngressEnvelope {
    /// Payload version.
    pub v: V1,
    /// Envelope id (`env_…`, a ULID); events derived from it reuse its time and randomness.
    pub id: String,
    /// The messenger.
    pub platform: Platform,
    /// The channel whose webhook received it.
    pub channel_id: String,
    /// The bot that owns the channel.
    pub bot_id: String,
    /// When the ingress received it.
    pub received_at: DateTime<Utc>,
    /// The platform's own event id, scoped by platform and channel (e.g.
    /// `telegram:ch_…:90001`); platform retries carry the same key.
    pub dedupe_key: String,
    /// The request body: the JSON document as received, or a string for non-JSON platforms.
    pub body: serde_json::Value,
    /// The conversation on the platform (Telegram: the chat id), when the ingress could tell:
    /// envelopes with the same key are normalised in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_key: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// <p>.inbound.<bot>

/// The sender of an inbound event, as the platform describes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlatformUser {
    /// The platform's user id (scoped to the channel; never assumed global).
    pub platform_user_id: String,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// A user name or handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Language or locale code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// E-mail address, where the platform or the app gave one (custom channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number in E.164 (WhatsApp, custom channels), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// What kind of chat with several members a conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// A group (LINE `group`, Telegram `group` and `supergroup`).
    Group,
    /// A LINE room (a chat of several users without a name).
    Room,
}

impl ChatKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Group => "group",
            ChatKind::Room => "room",
        }
    }

    /// The kind of a stored name.
    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "group" => Some(ChatKind::Group),
            "room" => Some(ChatKind::Room),
            _ => None,
        }
    }
}

/// The chat with several members an inbound event happened in, when one of its members acted:
/// the chat, not the member, is the conversation (its id is the event's `address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlatformChat {
    /// Group or room.
    pub kind: ChatKind,
    /// Its name, where the platform gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A message inside an inbound event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundMessage {
    /// The platform's message id.
    pub platform_message_id: String,
    /// What the user sent.
    pub content: Content,
}

/// A canonical inbound event, before the router resolved user and conversation.
/// Subject `<p>.inbound.<bot>`; `Nats-Msg-Id` is the event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundEvent {
    /// Payload version.
    pub v: V1,
    /// Event id (`evt_…`), derived from the envelope id.
    pub id: String,
    /// Kind of event.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The bot.
    pub bot_id: String,
    /// The channel it came through.
    pub channel: ChannelRef,
    /// When the user acted, by the platform's clock.
    pub occurred_at: DateTime<Utc>,
    /// The sender.
    pub sender: PlatformUser,
    /// Where to reply on the platform (Telegram: the chat id).
    pub address: String,
    /// The group or room `address` names, on events in one. When `sender` is one of its
    /// members ([`InboundEvent::member_chat`]), the router keeps the chat as the conversation
    /// and the member as the sender (whose own address is their `platform_user_id`); events of
    /// the chat itself (the bot added to a group or removed) name the chat as their sender.
    /// Absent on one-to-one chats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<PlatformChat>,
    /// Unique per platform event; the router keeps it to drop platform retries that arrive after
    /// the stream's duplicate window.
    pub dedupe_key: String,
    /// The message, for `message.received`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<InboundMessage>,
    /// Deep-link or referral parameter of a subscription (Telegram `/start <ref>`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub referral: Option<String>,
    /// For `user.subscribed`: the user had blocked the bot before and came back (LINE's
    /// `follow.isUnblocked`), rather than subscribing for the first time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resubscribed: bool,
    /// For `message.delivered`, `message.read` and `message.failed` reported by the platform
    /// after the send: which of the bot's messages the report is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

impl InboundEvent {
    /// The group or room a member acted in: [`InboundEvent::chat`], unless the sender is the
    /// chat itself.
    pub fn member_chat(&self) -> Option<&PlatformChat> {
        self.chat
            .as_ref()
            .filter(|_| self.sender.platform_user_id != self.address)
    }
}

/// A platform's report about messages the bot sent, as the platform names them. The router
/// finds them by the platform message id its senders reported (`message.sent`). For
/// `message.unsent`, the message the user withdrew (one of theirs, found by its platform id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// The platform's ids of the messages concerned (WhatsApp `wamid`, Messenger `mid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_message_ids: Vec<String>,
    /// Every message sent to this user up to this time is concerned (Messenger watermarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<DateTime<Utc>>,
    /// Why delivery failed, for `message.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
}

// ---------------------------------------------------------------------------------------------
// <p>.send.<bot>

/// Who a send command is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Recipient {
    /// A user Patchbay knows, by id.
    User {
        /// The user's id (`usr_…`).
        user_id: String,
    },
    /// A platform address (Telegram chat id, WhatsApp phone number, ...).
    Address {
        /// The messenger.
        platform: Platform,
        /// The address on that messenger.
        address: String,
        /// The channel to send through, when the bot has several on that platform.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_id: Option<String>,
    },
}

/// Where a send command came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SendSource {
    /// `POST /v1/messages` and other API calls.
    Api,
    /// A tenant's inline reply to a callback.
    Inline,
    /// Any NATS client inside the installation.
    #[default]
    Internal,
    /// A human agent.
    Human,
    /// A broadcast.
    Broadcast,
}

impl SendSource {
    /// The stored name (the wire name).
    pub fn as_str(self) -> &'static str {
        match self {
            SendSource::Api => "api",
            SendSource::Inline => "inline",
            SendSource::Internal => "internal",
            SendSource::Human => "human",
            SendSource::Broadcast => "broadcast",
        }
    }

    /// The source of a stored name.
    pub fn from_stored(s: &str) -> Option<Self> {
        [
            SendSource::Api,
            SendSource::Inline,
            SendSource::Internal,
            SendSource::Human,
            SendSource::Broadcast,
        ]
        .into_iter()
        .find(|source| source.as_str() == s)
    }
}

/// A request to send messages to one user. Subject `<p>.send.<bot>`. Any NATS client may
/// publish it; set `Nats-Msg-Id` to `id` to make retries of the publish idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendCommand {
    /// Payload version.
    pub v: V1,
    /// Idempotency key. Message ids are derived from it; when absent the router uses the
    /// command's stream sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The recipient: `user_id`, or `platform` + `address`.
    #[serde(flatten)]
    pub to: Recipient,
    /// One to ten messages, sent in order.
    pub messages: Vec<Content>,
    /// Where the command came from.
    #[serde(default)]
    pub source: SendSource,
    /// Who within the source: the human agent's or the broadcast's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The event this answers, for inline replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// The recipient as the router named them in the event an inline reply answers (set by the
    /// dispatcher, never from a tenant's input): the router sends to them without looking the
    /// user up, when the reply comes soon after the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_recipient: Option<KnownRecipient>,
    /// More users of a broadcast's command (`source` `broadcast`; set by the broadcast driver,
    /// never from a tenant's input): each gets the messages as if sent a command of their own,
    /// with the id the driver derives for them, and the router sends the same message to many
    /// of them with the platform's bulk call where it has one. Ignored for other sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_to: Vec<String>,
}

/// A send command's recipient as the event it answers named them (see
/// [`SendCommand::known_recipient`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KnownRecipient {
    /// The user (the command's `user_id`).
    pub user_id: String,
    /// Their channel.
    pub channel: ChannelRef,
    /// Their platform address.
    pub address: String,
    /// Their conversation.
    pub conversation_id: String,
    /// When the user's event opened their messaging window: the window's start is this or
    /// later.
    pub window_from: DateTime<Utc>,
    /// Who answered the conversation at the event: a reply to an event a human's
    /// conversation had is held back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<HandledBy>,
}

// ---------------------------------------------------------------------------------------------
// <p>.outbound.<platform>.<channel>

/// One message for one platform. Subject `<p>.outbound.<platform>.<channel>`; `Nats-Msg-Id` is
/// the message id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboundJob {
    /// Payload version.
    pub v: V1,
    /// Message id (`msg_…`).
    pub message_id: String,
    /// The bot.
    pub bot_id: String,
    /// The channel to send through.
    pub channel: ChannelRef,
    /// The recipient's Patchbay id.
    pub user_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The platform address (Telegram chat id).
    pub address: String,
    /// What to send.
    pub content: Content,
    /// Where the message came from.
    pub source: SendSource,
    /// Who within the source: the human agent's or the broadcast's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The event this message answers (inline replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// A message tag the sender must send it with: set by the router when the platform's
    /// standard window is closed but the tag allows the message (Messenger: `HUMAN_AGENT`,
    /// `messaging_type: MESSAGE_TAG`). Absent: an ordinary message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<MessageTag>,
    /// When the router accepted it.
    pub created_at: DateTime<Utc>,
    /// Set by the router when it stored this message just now, so no copy of it was published
    /// before: on its first delivery the sender need not look it up among sent messages.
    /// Absent or `false` (a redelivered or repeated command, or an older router): it may have
    /// been sent already, and the sender checks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
    /// More recipients of the same message, together with the job's own: a broadcast's
    /// message the router found identical for them. On a platform with a bulk call (LINE's
    /// multicast, Viber's `broadcast_message`) they go out in one call; elsewhere the sender
    /// sends them one by one, at the channel's pace, in one handling of the job. Each has its
    /// own message id and gets its own status. Empty for every other message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<BulkMember>,
}

/// Another recipient of an [`OutboundJob`] (see [`OutboundJob::also`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BulkMember {
    /// Their message id (`msg_…`).
    pub message_id: String,
    /// Their Patchbay id.
    pub user_id: String,
    /// Their conversation.
    pub conversation_id: String,
    /// Their platform address.
    pub address: String,
    /// As [`OutboundJob::fresh`], for their message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

impl OutboundJob {
    /// The id of a job for many recipients, derived from all their message ids: the router
    /// stores the job under it (one formed otherwise after a redelivery is another job), and
    /// the sender gives it to the platform's bulk call as the batch's id (a retry of the job
    /// is the same batch).
    pub fn batch_id(&self) -> String {
        let ids: Vec<&str> = std::iter::once(self.message_id.as_str())
            .chain(self.also.iter().map(|m| m.message_id.as_str()))
            .collect();
        crate::ids::hashed_id(crate::ids::prefix::MESSAGE, &ids)
    }

    /// Recipient `m`'s message of this job (one of [`OutboundJob::members`]) as a job of its
    /// own.
    pub fn for_member(&self, m: &BulkMember) -> OutboundJob {
        OutboundJob {
            v: V1,
            message_id: m.message_id.clone(),
            bot_id: self.bot_id.clone(),
            channel: self.channel.clone(),
            user_id: m.user_id.clone(),
            conversation_id: m.conversation_id.clone(),
            address: m.address.clone(),
            content: self.content.clone(),
            source: self.source,
            source_id: self.source_id.clone(),
            in_reply_to: self.in_reply_to.clone(),
            tag: self.tag,
            created_at: self.created_at,
            fresh: m.fresh,
            also: Vec::new(),
        }
    }

    /// Every recipient of the job: its own first, then [`OutboundJob::also`].
    pub fn members(&self) -> Vec<BulkMember> {
        std::iter::once(BulkMember {
            message_id: self.message_id.clone(),
            user_id: self.user_id.clone(),
            conversation_id: self.conversation_id.clone(),
            address: self.address.clone(),
            fresh: self.fresh,
        })
        .chain(self.also.iter().cloned())
        .collect()
    }
}

/// A platform message tag that allows a message outside the standard window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageTag {
    /// Messenger: a human agent answers within 7 days of the user's last message.
    HumanAgent,
}

// ---------------------------------------------------------------------------------------------
// <p>.custom.replies.<channel>.<user> and <p>.custom.outcome.<event> (core NATS)

/// A message a custom channel delivers to its user: announced on
/// `<p>.custom.replies.<channel>.<user>` for a request waiting for replies, and the body
/// pushed to the channel's event webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomReply {
    /// Payload version.
    pub v: V1,
    /// Message id (`msg_…`); also the `webhook-id` of the push.
    pub id: String,
    /// The channel.
    pub channel_id: String,
    /// The recipient's Patchbay id.
    pub user_id: String,
    /// The recipient's id in the app (`platform_user_id`).
    pub platform_user_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// What to show.
    pub content: Content,
    /// Who sent it: `bot`, `human` or `broadcast` (`X-Patchbay-Source`).
    pub source: String,
    /// The bot's, agent's or broadcast's id (`X-Patchbay-Source-Id`).
    pub source_id: String,
    /// The event (the user's message) it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// When the bot sent it.
    pub created_at: DateTime<Utc>,
}

/// What became of a custom channel's event at the tenant, announced on
/// `<p>.custom.outcome.<event>` so a request waiting for replies knows how many to expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomOutcome {
    /// Payload version.
    pub v: V1,
    /// The event.
    pub event_id: String,
    /// The tenant answered 2xx.
    pub delivered: bool,
    /// How many messages its inline reply holds (0 when none, or not delivered).
    pub replies: u32,
}

// ---------------------------------------------------------------------------------------------
// <p>.status.<bot>

/// The outcome of a platform call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The platform accepted the message.
    Sent,
    /// The message cannot be delivered.
    Failed,
}

/// Why a message failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryError {
    /// Patchbay's code: `blocked`, `unauthorized`, `invalid_request`, `unsupported_content`,
    /// `unknown_recipient`, `rate_limited`, `platform_error`, ...
    pub code: String,
    /// A readable explanation (the platform's description where it gave one).
    pub message: String,
    /// The platform's own error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_code: Option<i64>,
}

/// The result of sending one message. Subject `<p>.status.<bot>`; `Nats-Msg-Id` is the id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusEvent {
    /// Payload version.
    pub v: V1,
    /// Event id (`evt_…`), derived from message id and status.
    pub id: String,
    /// The message.
    pub message_id: String,
    /// The bot.
    pub bot_id: String,
    /// The channel.
    pub channel: ChannelRef,
    /// Sent or failed.
    pub status: DeliveryStatus,
    /// The platform's id of the sent message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    /// When the outcome was known.
    pub at: DateTime<Utc>,
    /// Where the message's command came from (absent from statuses published before this
    /// field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SendSource>,
    /// The human agent's or the broadcast's id, when its command named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The outcomes of more messages of the same job ([`OutboundJob::also`]), reported
    /// together: the event's own fields are the first message's, its `id` is derived from
    /// every member's ([`StatusEvent::batch`]). Each member is its own status
    /// ([`StatusEvent::members`]). Empty for a message's status of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<MemberStatus>,
}

/// Another message's outcome reported with a [`StatusEvent`] (see [`StatusEvent::also`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberStatus {
    /// The message.
    pub message_id: String,
    /// Sent or failed.
    pub status: DeliveryStatus,
    /// The platform's id of the sent message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    /// When the outcome was known.
    pub at: DateTime<Utc>,
}

impl DeliveryStatus {
    /// `sent` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl StatusEvent {
    /// Statuses one event reports at most (itself and [`StatusEvent::also`]): a sender's
    /// event for a LINE multicast of 500 is five.
    pub const MAX_MEMBERS: usize = 100;

    /// The id of message `message_id`'s `status` (the same every time it is reported, so
    /// JetStream drops a second copy, and its tenant event keeps its id).
    pub fn id_of(message_id: &str, status: DeliveryStatus) -> String {
        crate::ids::hashed_id(crate::ids::prefix::EVENT, &[message_id, status.as_str()])
    }

    /// The statuses of one job's messages, all of `bot_id` through `channel` from one
    /// source, as one event (`statuses` not empty): the first's fields, the others in
    /// [`StatusEvent::also`], the id derived from all of theirs.
    pub fn batch(mut statuses: Vec<StatusEvent>) -> Option<StatusEvent> {
        if statuses.len() < 2 {
            return statuses.pop();
        }
        let ids: Vec<&str> = statuses.iter().map(|s| s.id.as_str()).collect();
        let id = crate::ids::hashed_id(crate::ids::prefix::EVENT, &ids);
        let mut rest = statuses.split_off(1);
        let mut first = statuses.pop()?;
        first.id = id;
        first.also = rest
            .drain(..)
            .map(|s| MemberStatus {
                message_id: s.message_id,
                status: s.status,
                platform_message_id: s.platform_message_id,
                error: s.error,
                at: s.at,
            })
            .collect();
        Some(first)
    }

    /// `statuses` (of one job, as for [`StatusEvent::batch`]) as events of up to
    /// [`StatusEvent::MAX_MEMBERS`] each.
    pub fn batches(statuses: Vec<StatusEvent>) -> Vec<StatusEvent> {
        let mut events = Vec::with_capacity(statuses.len().div_ceil(Self::MAX_MEMBERS));
        let mut rest = statuses.into_iter().peekable();
        while rest.peek().is_some() {
            let some: Vec<StatusEvent> = rest.by_ref().take(Self::MAX_MEMBERS).collect();
            events.extend(Self::batch(some));
        }
        events
    }

    /// Each message's status on its own: the event itself when it reports one message, else
    /// the first message's and each of [`StatusEvent::also`]'s, with their own ids.
    pub fn members(self) -> Vec<StatusEvent> {
        if self.also.is_empty() {
            return vec![self];
        }
        let mut first = self;
        let also = std::mem::take(&mut first.also);
        first.id = Self::id_of(&first.message_id, first.status);
        let mut out = Vec::with_capacity(also.len() + 1);
        for m in also {
            out.push(StatusEvent {
                v: V1,
                id: Self::id_of(&m.message_id, m.status),
                message_id: m.message_id,
                bot_id: first.bot_id.clone(),
                channel: first.channel.clone(),
                status: m.status,
                platform_message_id: m.platform_message_id,
                error: m.error,
                at: m.at,
                source: first.source,
                source_id: first.source_id.clone(),
                also: Vec::new(),
            });
        }
        out.insert(0, first);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// <p>.dispatch.<bot> and the tenant-facing event

/// The user as tenants see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventUser {
    /// Patchbay's stable id (`usr_…`).
    pub id: String,
    /// The platform's user id.
    pub platform_user_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// User name or handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Language or locale code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The bot's contact fields for the user (`PATCH /v1/users/{id}`, field messages).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: crate::fields::Fields,
}

/// A message as tenants see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventMessage {
    /// Patchbay's message id (`msg_…`).
    pub id: String,
    /// The platform's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    /// The content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// On events about a message the bot sent (`message.sent`, `.failed`, `.delivered`,
    /// `.read`): who sent it, `api`, `inline`, `internal`, `human` or `broadcast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SendSource>,
    /// With `source`: the human agent's or the broadcast's id, when the send named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

impl TenantEvent {
    /// A broadcast's event (`broadcast.progress`, `broadcast.completed`), now: no channel,
    /// user or conversation, the broadcast instead.
    pub fn of_broadcast(
        id: String,
        event_type: EventType,
        bot_id: &str,
        broadcast: crate::broadcasts::BroadcastSummary,
    ) -> Self {
        Self {
            id,
            event_type,
            created_at: Utc::now(),
            bot_id: bot_id.to_owned(),
            channel: None,
            user: None,
            conversation_id: None,
            chat: None,
            message: None,
            error: None,
            referral: None,
            resubscribed: false,
            installation: None,
            handled_by: None,
            handover: None,
            broadcast: Some(broadcast),
        }
    }

    /// The channel, user and conversation, on every event but a broadcast's.
    pub fn conversation(&self) -> Option<EventConversation<'_>> {
        Some(EventConversation {
            channel: self.channel.as_ref()?,
            user: self.user.as_ref()?,
            id: self.conversation_id.as_deref()?,
        })
    }

    /// Whom a reply to this event goes to: the group or room it happened in, else the user;
    /// `None` for a broadcast's event, which has no one to reply to.
    pub fn reply_to(&self) -> Option<&str> {
        match &self.chat {
            Some(c) => Some(&c.id),
            None => self.user.as_ref().map(|u| u.id.as_str()),
        }
    }
}

/// A group or room as tenants see it (see [`TenantEvent::chat`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventChat {
    /// Patchbay's id of the chat (`usr_…`): the conversation's owner, sent to like a user.
    pub id: String,
    /// The platform's id of the chat (LINE `groupId` or `roomId`, Telegram chat id).
    pub platform_chat_id: String,
    /// Group or room.
    pub kind: ChatKind,
    /// Its name, where the platform gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The body of a native callback: what happened, to whom, through which channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TenantEvent {
    /// Event id (`evt_…`); also the `webhook-id` header, stable across retries.
    pub id: String,
    /// Kind of event.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// The bot.
    pub bot_id: String,
    /// The channel; on every event but a broadcast's (`broadcast.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelRef>,
    /// The user: who acted (in a group, the member); on every event but a broadcast's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EventUser>,
    /// The conversation (`conv_…`): in a group, the group's; on every event but a
    /// broadcast's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The group or room the event happened in, when one of its members acted (LINE groups and
    /// rooms, Telegram groups). Replies go to the chat: an inline reply does, and
    /// `POST /v1/messages` with the chat's `id` as `user_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<EventChat>,
    /// The message, for message events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<EventMessage>,
    /// Why a message failed, for `message.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    /// Deep-link or referral parameter, for `user.subscribed`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub referral: Option<String>,
    /// For `user.subscribed`: the user had blocked the bot and came back (LINE's
    /// `follow.isUnblocked`); absent for a first subscription.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resubscribed: bool,
    /// On events delivered to a partner app: the installation they come through, naming the
    /// organisation that enabled it (absent on the bot's own webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<crate::partners::InstallationContext>,
    /// `human` while a human agent answers the conversation (the bot's replies are held
    /// back); absent while the bot does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<HandledBy>,
    /// On `conversation.handover`: to whom, by whom, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
    /// On `broadcast.progress` and `broadcast.completed`: the broadcast and its counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<crate::broadcasts::BroadcastSummary>,
}

/// What a conversation's event is about: the channel, the user and the conversation (every
/// event but a broadcast's has them).
#[derive(Debug, Clone, Copy)]
pub struct EventConversation<'a> {
    /// The channel.
    pub channel: &'a ChannelRef,
    /// The user.
    pub user: &'a EventUser,
    /// The conversation (`conv_…`).
    pub id: &'a str,
}

/// An event to deliver to a tenant. Subject `<p>.dispatch.<bot>`; `Nats-Msg-Id` is the event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchJob {
    /// Payload version.
    pub v: V1,
    /// The event.
    pub event: TenantEvent,
    /// The user's platform address, on events the user's own action caused (which opened
    /// their messaging window at the event's time): an inline reply to it carries the
    /// recipient the router needs ([`SendCommand::known_recipient`]). Absent on statuses and
    /// receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_address: Option<String>,
}

impl DispatchJob {
    /// Whom the job is delivered for: a partner app's installation (the event's copy for it),
    /// else the bot. The dispatcher keeps its delivery log, pace and circuit breaker per lane,
    /// so a partner's failing callback never holds up the bot's own webhook, nor the reverse.
    pub fn lane(&self) -> &str {
        self.event
            .installation
            .as_ref()
            .map_or(&self.event.bot_id, |i| &i.id)
    }

    /// The conversation within the lane, whose events are delivered in order: a broadcast's
    /// events are delivered in order by broadcast.
    pub fn lane_conversation(&self) -> String {
        let ordered_by = self
            .event
            .conversation_id
            .as_deref()
            .or(self.event.broadcast.as_ref().map(|b| b.id.as_str()))
            .unwrap_or(&self.event.id);
        match &self.event.installation {
            Some(i) => format!("{ordered_by}:{}", i.id),
            None => ordered_by.to_owned(),
        }
    }

    /// The recipient of an inline reply to this job's event, when the router named one.
    pub fn known_recipient(&self) -> Option<KnownRecipient> {
        let address = self.reply_address.clone()?;
        let conversation = self.event.conversation()?;
        Some(KnownRecipient {
            user_id: self.event.reply_to()?.to_owned(),
            channel: conversation.channel.clone(),
            address,
            conversation_id: conversation.id.to_owned(),
            window_from: self.event.created_at,
            handled_by: self.event.handled_by,
        })
    }
}

/// A tenant's inline reply: the body of a 2xx answer to a callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum InlineReply {
    /// `{"messages": [...]}`.
    Object {
        /// Messages to send to the event's user.
        messages: Vec<Content>,
    },
    /// A bare JSON array of messages.
    Array(Vec<Content>),
}

impl InlineReply {
    /// The messages, whichever form was used.
    pub fn into_messages(self) -> Vec<Content> {
        match self {
            InlineReply::Object { messages } | InlineReply::Array(messages) => messages,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration published by `auth` to the `<p>_config` bucket.

/// Keys of the config bucket.
pub mod config_keys {
    /// `bot.<id>` holds a [`super::BotRecord`].
    pub fn bot(id: &str) -> String {
        format!("bot.{id}")
    }
    /// `channel.<id>` holds a [`super::ChannelRecord`].
    pub fn channel(id: &str) -> String {
        format!("channel.{id}")
    }
    /// `apikey.<sha256 hex of the key>` holds an [`super::ApiKeyRecord`].
    pub fn api_key(hash_hex: &str) -> String {
        format!("apikey.{hash_hex}")
    }
}

/// How callbacks are shaped and signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFlavour {
    /// Standard Webhooks headers, native event body.
    #[default]
    Native,
    /// BrandChat's event shapes and `X-Chat-Signature`.
    Brandchat,
    /// chat-api's (WhatsApp) `{"messages": [...]}` and `{"ack": [...]}` ([`crate::chat_api`]).
    ChatApi,
    /// Web1on1's webhook body and event names, `X-Hub-Signature` ([`crate::web1on1`]).
    Web1on1,
}

/// How a new callback URL proves it wants the events before it is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Challenge {
    /// `GET ?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…`, answered with the
    /// challenge (Meta's form).
    #[default]
    Hub,
    /// `GET ?type=subscribe&challenge=…`, answered with the challenge (Web1on1's form).
    TypeSubscribe,
    /// `POST` of the form `hub_mode=subscribe&hub_verify_token=…&hub_challenge=…`, answered
    /// with the challenge as plain text (UChat's form).
    HubForm,
    /// None: the system it imitates never checked a URL (chat-api).
    None,
}

impl WebhookFlavour {
    /// How a URL of this flavour is checked.
    pub fn challenge(self) -> Challenge {
        match self {
            WebhookFlavour::Native | WebhookFlavour::Brandchat => Challenge::Hub,
            WebhookFlavour::Web1on1 => Challenge::TypeSubscribe,
            WebhookFlavour::ChatApi => Challenge::None,
        }
    }
}

/// A secret sealed with the installation's master key, with the end of its validity during a
/// rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedSecret {
    /// `v2.<key id>.<base64 of nonce and ciphertext>` (sealed before key ids: the base64
    /// alone).
    pub sealed: String,
    /// When it stops being valid (`None`: until rotated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A bot's callback settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookSettings {
    /// The callback URL (`None`: events are stored but not delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Event shapes and signing.
    #[serde(default)]
    pub flavour: WebhookFlavour,
    /// Event types delivered; `*` and `prefix.*` wildcards allowed.
    pub events: Vec<String>,
    /// Why the endpoint is disabled (it answered 410 Gone), if it is; events then go to the
    /// dead-letter stream until an operator re-enables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Platforms whose events are delivered; empty: every platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
}

impl WebhookSettings {
    /// Whether an event of `event_type` from `platform` is delivered: subscribed, and from a
    /// platform the filter lets through.
    /// A broadcast's events (`platform` `None`: a broadcast may span platforms) pass the
    /// platform filter.
    pub fn accepts(&self, event_type: EventType, platform: Option<Platform>) -> bool {
        self.subscribed(event_type)
            && platform.is_none_or(|p| self.platforms.is_empty() || self.platforms.contains(&p))
    }

    /// The subscriptions a new bot gets: everything users do, not delivery reports.
    pub fn default_events() -> Vec<String> {
        vec!["message.received".into(), "user.*".into()]
    }

    /// Whether `event_type` matches one of the subscriptions.
    pub fn subscribed(&self, event_type: EventType) -> bool {
        subscribed(&self.events, event_type)
    }
}

/// Whether `event_type` matches one of `patterns` (`*`, `message.*`, `message.received`).
pub fn subscribed(patterns: &[String], event_type: EventType) -> bool {
    let name = event_type.as_str();
    patterns.iter().any(|p| {
        p == "*"
            || p == name
            || p.strip_suffix(".*")
                .is_some_and(|pre| name.strip_prefix(pre).is_some_and(|r| r.starts_with('.')))
    })
}

/// A bot as every service sees it. Key `bot.<id>` of the config bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BotRecord {
    /// Payload version.
    pub v: V1,
    /// Bot id (`bot_…`).
    pub id: String,
    /// Owning tenant (`ten_…`).
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Disabled bots receive nothing and send nothing.
    pub enabled: bool,
    /// Callback settings.
    pub webhook: WebhookSettings,
    /// Webhook signing secrets (`whsec_…`, sealed); several during a rotation.
    pub webhook_secrets: Vec<SealedSecret>,
    /// Its own API request limit (the installation's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Its channels (enabled or not), oldest first.
    #[serde(default)]
    pub channels: Vec<ChannelRef>,
    /// Its working API keys, sealed (owner [`crate::brandchat::key_owner`]), oldest first:
    /// BrandChat signs with the key itself. Only for bots with the `brandchat` flavour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brandchat_keys: Vec<SealedSecret>,
    /// Per platform, the template sent instead of a free-form message that the platform's
    /// messaging window no longer allows (see `windows`); none: such sends are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fallback_templates: BTreeMap<Platform, FallbackTemplate>,
    /// Per platform, the bot's settings there (checked by the platform's crate, which says
    /// which it takes); a platform not named has the defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platform_settings: BTreeMap<Platform, PlatformSettings>,
    /// Partner apps enabled on the bot ([`crate::partners`]), with what the router and the
    /// dispatcher need to deliver their events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installations: Vec<crate::partners::InstallationRef>,
    /// Seconds a conversation stays with a human agent without an agent message before it
    /// returns to the bot; `None`: [`HANDOVER_IDLE_DEFAULT_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_idle_secs: Option<u64>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A bot's settings on one platform. Each platform's crate checks them
/// (`PlatformSpec::settings`) and refuses those it has no use for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformSettings {
    /// Send what the bot starts outside the platform's messaging window where the platform
    /// bills such messages instead of refusing them (Viber's 24-hour session); `false` (the
    /// default): they are refused with `outside_window`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub send_outside_window: bool,
    /// The message answered to a user who opens a chat with the bot, where the platform lets
    /// the webhook's response carry one (Viber's `conversation_started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<Content>,
}

/// A bot's fallback template for one platform: sent in place of a free-form message outside
/// the platform's messaging window. Either one of the bot's registry templates,
/// `{"template_id": "tpl_…"}`, rendered for the user in the platform's own form (its
/// variables can only be contact ones: a fallback has no `meta`), or the platform's approved
/// template by name, `{"name", "language", "body_parameters"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum FallbackTemplate {
    /// A registry template.
    Registered {
        /// `tpl_…`, a template of the bot.
        template_id: String,
    },
    /// The platform's template by name.
    Inline {
        /// The approved template's name.
        name: String,
        /// Its language code, e.g. `en_US`.
        language: String,
        /// Values of its body variables, in order (`{{1}}`, `{{2}}`, …).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        body_parameters: Vec<String>,
    },
}

impl FallbackTemplate {
    /// The template as message content (a registry one is rendered by the router).
    pub fn content(&self) -> Content {
        match self {
            FallbackTemplate::Registered { template_id } => Content::Template(
                crate::content::TemplateMessage::Registered(crate::content::TemplateRef {
                    id: template_id.clone(),
                    meta: BTreeMap::new(),
                }),
            ),
            FallbackTemplate::Inline {
                name,
                language,
                body_parameters,
            } => Content::Template(
                crate::content::Template::with_body(name, language, body_parameters).into(),
            ),
        }
    }

    /// Checks it as a fallback for the platform of `window`; the error names the field under
    /// `fallback_templates.<platform>`. (That a registry template exists and has the
    /// platform's form is checked by the API, which can ask.)
    pub fn validate(
        &self,
        window: &crate::windows::WindowPolicy,
    ) -> Result<(), crate::content::FieldError> {
        let platform = window.platform;
        let at = format!("fallback_templates.{platform}");
        if !window.templates_outside {
            let why = if window.window_secs.is_some() {
                format!(
                    "Patchbay sends no {platform} templates, so none can bridge {} (a \
                     fallback template would always fail)",
                    window.name
                )
            } else {
                format!("{platform} has no messaging window that a template could bridge")
            };
            return Err(crate::content::FieldError::new(at, why));
        }
        let (name, language, body_parameters) = match self {
            FallbackTemplate::Registered { template_id } => {
                return crate::content::TemplateRef {
                    id: template_id.clone(),
                    meta: BTreeMap::new(),
                }
                .validate()
                .map_err(|e| {
                    crate::content::FieldError::new(format!("{at}.template_id"), e.message)
                });
            }
            FallbackTemplate::Inline {
                name,
                language,
                body_parameters,
            } => (name, language, body_parameters),
        };
        crate::content::Template::with_body(name, language, &[])
            .validate()
            .map_err(|e| e.within(&at))?;
        if body_parameters.len() > 100 {
            return Err(crate::content::FieldError::new(
                format!("{at}.body_parameters"),
                "must have at most 100 entries",
            ));
        }
        for (i, p) in body_parameters.iter().enumerate() {
            if p.trim().is_empty() || p.chars().count() > 1024 {
                return Err(crate::content::FieldError::new(
                    format!("{at}.body_parameters[{i}]"),
                    "must be 1 to 1024 characters",
                ));
            }
        }
        Ok(())
    }
}

/// A channel as every service sees it. Key `channel.<id>` of the config bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelRecord {
    /// Payload version.
    pub v: V1,
    /// Channel id (`ch_…`).
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The messenger.
    pub platform: Platform,
    /// The platform credentials as a JSON object, sealed with the master key.
    pub credentials: SealedSecret,
    /// Operator-only override of the platform API's base URL (fakes, proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Disabled channels refuse webhooks and sends.
    pub enabled: bool,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// An API key, found by the SHA-256 of the key. Key `apikey.<hex>` of the config bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyRecord {
    /// Payload version.
    pub v: V1,
    /// The key's public id (`key_…`).
    pub key_id: String,
    /// The bot it authenticates.
    pub bot_id: String,
    /// When it stops working (`None`: until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// What it may do ([`crate::scopes`]); `None`: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// A partner's token: the installation it was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,
    /// The channels it sends through (a partner's token on an installation of some
    /// channels); `None`: every channel of the bot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// A human agent's invite: the agent's name. Its scopes are [`crate::scopes::AGENT`], its
    /// sends go out as the agent's (`source: human`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// An operation on a bot's human agents (`<p>.rpc.auth.agents`). An agent signs in to the
/// console with the invite the bot's developer created; the invite is a credential of the bot
/// with [`crate::scopes::AGENT`] only, whose sends go out as the agent's, kept until revoked
/// (key rotations leave it alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// What to do.
    pub op: AgentOp,
}

/// A bot's API chat channel (`<p>.rpc.auth.api_chat`): the custom channel of the `uchat`
/// flavour whose users an outside system plays (UChat's API chat channel): it sends as them
/// through the channel, and the bot's and agents' messages to them reach its webhook. Setting
/// the webhook creates the channel when the bot has none; the URL must answer UChat's
/// challenge (a form `POST` with `hub_verify_token` = the verification key) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiChatRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// What to do.
    pub op: ApiChatOp,
}

/// What [`ApiChatRequest`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiChatOp {
    /// The channel and its webhook (404 when the bot has no such channel).
    Get,
    /// Verifies the URL, then sets it (creating the channel when needed).
    Set {
        /// Where the bot's and agents' messages go.
        webhook_url: String,
        /// The challenge's token and the key the messages are signed with.
        verification_key: String,
    },
    /// The webhook removed; the channel and its users stay.
    Remove,
}

/// A bot's API chat channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiChat {
    /// The custom channel (`ch_…`).
    pub channel_id: String,
    /// Its webhook, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The key its challenge and signatures use, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
}

/// What [`AgentRequest`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AgentOp {
    /// A new agent: answers the [`Agent`] with its `invite`, shown this once.
    Invite {
        /// The agent's name as users and colleagues see it: 1 to 100 characters.
        name: String,
    },
    /// The bot's agents (no invites): answers a list of [`Agent`].
    List,
    /// The agent's invite stops working at once: answers `null` (404 for an unknown agent).
    Revoke {
        /// The agent (`agt_…`).
        agent_id: String,
    },
}

/// A bot's human agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Agent {
    /// `agt_…`.
    pub id: String,
    /// The agent's name.
    pub name: String,
    /// When the bot's developer invited the agent.
    pub created_at: DateTime<Utc>,
    /// The credential the agent signs in with (`pbag_…`): only in the answer that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

/// An access token a partner took for one of its installations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IssuedAccessToken {
    /// `pbat_…`: a Bearer of the installation's bot.
    pub access_token: String,
    /// Seconds it works.
    pub expires_in: u64,
    /// The bot.
    pub bot_id: String,
    /// The installation.
    pub installation_id: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// The channels it sends through; absent: every channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// Request/reply.

/// Every request/reply answer: `{"ok": ...}` or `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RpcReply<T> {
    /// Success.
    Ok(T),
    /// Failure.
    Error(RpcError),
}

/// A request/reply failure, shaped like the HTTP API's errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    /// Machine-readable code, e.g. `not_found`, `invalid_request`.
    pub code: String,
    /// What went wrong, fit for the caller.
    pub message: String,
    /// The HTTP status an HTTP edge should answer with.
    pub status: u16,
    /// When to try again, in seconds (an edge answers `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl RpcError {
    /// A failure with `status`, `code` and `message`.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            status,
            retry_after: None,
        }
    }

    /// The same, to be tried again after `seconds`.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

/// Operation names of the `auth` service (subject `<p>.rpc.auth.<op>`).
pub mod auth_ops {
    /// [`super::CreateBotRequest`] → [`super::CreatedBot`].
    pub const CREATE_BOT: &str = "create_bot";
    /// [`super::CreateChannelRequest`] → [`super::CreatedChannel`].
    pub const CREATE_CHANNEL: &str = "create_channel";
    /// [`super::WebhookStateRequest`] with a reason → `()`: the endpoint answered 410.
    pub const DISABLE_WEBHOOK: &str = "disable_webhook";
    /// [`super::WebhookStateRequest`] → `()`: an operator re-enables the endpoint.
    pub const ENABLE_WEBHOOK: &str = "enable_webhook";
    /// [`super::UpdateWebhookRequest`] → [`super::WebhookSettings`].
    pub const UPDATE_WEBHOOK: &str = "update_webhook";
    /// [`super::RotateRequest`] → [`super::RotatedKey`].
    pub const ROTATE_KEY: &str = "rotate_key";
    /// [`super::RotateRequest`] → [`super::RotatedSecret`].
    pub const ROTATE_SECRET: &str = "rotate_secret";
    /// [`super::RevokeKeyRequest`] → `()`.
    pub const REVOKE_KEY: &str = "revoke_key";
    /// [`super::BotStateRequest`] → `()`.
    pub const SET_BOT_STATE: &str = "set_bot_state";
    /// [`super::ChannelStateRequest`] → `()`.
    pub const SET_CHANNEL_STATE: &str = "set_channel_state";
    /// [`super::CreateTenantRequest`] → [`super::Tenant`].
    pub const CREATE_TENANT: &str = "create_tenant";
    /// `{}` → a list of [`super::Tenant`].
    pub const LIST_TENANTS: &str = "list_tenants";
    /// [`super::ListBotsRequest`] → a list of [`super::BotSummary`].
    pub const LIST_BOTS: &str = "list_bots";
    /// [`super::TokenRequest`] → [`super::IssuedTokens`].
    pub const ISSUE_TOKENS: &str = "issue_tokens";
    /// [`crate::partners::PartnerRequest`] → what its operation answers.
    pub const PARTNERS: &str = "partners";
    /// [`super::AgentRequest`] → what its operation answers.
    pub const AGENTS: &str = "agents";
    /// [`super::ApiChatRequest`] → [`super::ApiChat`] (`null` for remove).
    pub const API_CHAT: &str = "api_chat";
    /// Every operation.
    pub const ALL: &[&str] = &[
        ISSUE_TOKENS,
        PARTNERS,
        AGENTS,
        API_CHAT,
        CREATE_BOT,
        CREATE_CHANNEL,
        DISABLE_WEBHOOK,
        ENABLE_WEBHOOK,
        UPDATE_WEBHOOK,
        ROTATE_KEY,
        ROTATE_SECRET,
        REVOKE_KEY,
        SET_BOT_STATE,
        SET_CHANNEL_STATE,
        CREATE_TENANT,
        LIST_TENANTS,
        LIST_BOTS,
    ];
}

/// Operations `api` answers by request/reply (`<p>.rpc.api.<op>`).
pub mod api_ops {
    /// [`super::ApiCall`] → [`super::ApiAnswer`], sealed both ways: the console's requests.
    pub const HTTP: &str = "http";
    /// Every operation.
    pub const ALL: &[&str] = &[HTTP];
}

/// One request to the HTTP API made over NATS (`<p>.rpc.api.http`, sealed both ways): how the
/// console asks the API what its signed-in person asked, with that person's own credential, so
/// a console page can do exactly what its user's API allows and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiCall {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// The path and query, as under the public listener (`/v1/deliveries?status=failed`).
    pub path: String,
    /// The credential, sent as `Authorization: Bearer …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<String>,
    /// The JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// The `Idempotency-Key` header (a console form's own, so a resubmitted form sends once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The address of the person's browser, for the per-address limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<std::net::IpAddr>,
}

/// The API's answer to an [`ApiCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiAnswer {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The HTTP status.
    pub status: u16,
    /// The JSON body (`null` for none).
    #[serde(default)]
    pub body: serde_json::Value,
}

/// Operation names of the `webhook-dispatcher` service (subject `<p>.rpc.dispatcher.<op>`).
pub mod dispatcher_ops {
    /// [`super::ListDeliveriesRequest`] → [`super::DeliveryPage`].
    pub const LIST: &str = "list_deliveries";
    /// [`super::DeliveryRef`] → [`super::DeliveryDetail`].
    pub const GET: &str = "get_delivery";
    /// [`super::DeliveryRef`] → [`super::Delivery`]: deliver once more (same `webhook-id`).
    pub const RETRY: &str = "retry_delivery";
    /// [`super::ReplayRequest`] → [`super::Replayed`]: dead letters since a time, again.
    pub const REPLAY: &str = "replay_deliveries";
    /// [`super::VerifyEndpointRequest`] → `()`: the endpoint echoed the challenge.
    pub const VERIFY_ENDPOINT: &str = "verify_endpoint";
    /// Every operation.
    pub const ALL: &[&str] = &[LIST, GET, RETRY, REPLAY, VERIFY_ENDPOINT];
}

/// Where an event's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: in progress or waiting for a retry.
    Pending,
    /// The tenant answered 2xx.
    Delivered,
    /// Dead-lettered after the last attempt (or the endpoint was disabled).
    Failed,
}

/// One event's delivery to its bot's callback URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    /// The event id (also its `webhook-id`).
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// The conversation.
    pub conversation_id: String,
    /// Where it stands.
    pub status: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// HTTP status of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    /// Error of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the event was first handed to the dispatcher.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One attempt to deliver an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryAttempt {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The URL called.
    pub url: String,
    /// HTTP status, if a response came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// How long it took.
    pub duration_ms: u32,
    /// The first bytes of the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A delivery with its event and attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// The event as delivered (the callback body).
    pub event: TenantEvent,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<DeliveryAttempt>,
}

/// List a bot's deliveries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListDeliveriesRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// Only this status.
    #[serde(default)]
    pub status: Option<DeliveryState>,
    /// Only this event type.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Created at or after.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// From a previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Page size, 1–100 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A page of deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryPage {
    /// The deliveries, newest first.
    pub items: Vec<Delivery>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One delivery of one bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryRef {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// The event.
    pub event_id: String,
}

/// Deliver a bot's dead-lettered events again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplayRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// Failed deliveries created at or after this time.
    pub since: DateTime<Utc>,
    /// And before this time.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Only this event type.
    #[serde(default)]
    pub event_type: Option<String>,
    /// At most this many, the oldest first (the bot's replay budget bounds it too).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// How many deliveries a replay started again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Replayed {
    /// Count.
    pub replayed: u32,
    /// Whether failed deliveries of the window are left (replay again for the next ones).
    #[serde(default)]
    pub more: bool,
}

/// Operation names of the `bot-router` service (subject `<p>.rpc.router.<op>`).
pub mod router_ops {
    /// [`super::GetUserRequest`] → [`super::UserProfile`].
    pub const GET_USER: &str = "get_user";
    /// [`super::FindUserRequest`] → [`super::UserProfile`].
    pub const FIND_USER: &str = "find_user";
    /// [`super::SetUserFieldsRequest`] → [`super::UserProfile`].
    pub const SET_USER_FIELDS: &str = "set_user_fields";
    /// [`super::SearchUsersRequest`] → [`super::UserPage`].
    pub const SEARCH_USERS: &str = "search_users";
    /// [`super::TemplateRequest`] → [`crate::templates::StoredTemplate`] (a list for
    /// `List`, `()` for `Delete`).
    pub const TEMPLATES: &str = "templates";
    /// [`crate::broadcasts::BroadcastRequest`] → [`crate::broadcasts::Broadcast`] (a
    /// [`crate::broadcasts::BroadcastPage`] for `List`).
    pub const BROADCASTS: &str = "broadcasts";
    /// [`super::FindNumberedUserRequest`] → [`super::UserProfile`].
    pub const FIND_NUMBERED_USER: &str = "find_numbered_user";
    /// [`super::UpsertContactRequest`] → [`super::UpsertedContact`].
    pub const UPSERT_CONTACT: &str = "upsert_contact";
    /// [`super::HistoryRequest`] → [`super::HistoryPage`].
    pub const HISTORY: &str = "history";
    /// [`super::ResolveRecipientRequest`] → [`super::UserProfile`].
    pub const RESOLVE_RECIPIENT: &str = "resolve_recipient";
    /// [`super::MediaSourceRequest`] → [`super::MediaSource`].
    pub const MEDIA_SOURCE: &str = "media_source";
    /// [`super::HandoverRequest`] → [`super::ConversationState`].
    pub const HANDOVER: &str = "handover";
    /// [`super::JourneyRequest`] → [`super::JourneyRecord`].
    pub const JOURNEY: &str = "journey";
    /// [`super::InboxRequest`] → a list of [`super::InboxEntry`].
    pub const INBOX: &str = "inbox";
    /// Every operation.
    pub const ALL: &[&str] = &[
        INBOX,
        JOURNEY,
        HANDOVER,
        GET_USER,
        FIND_USER,
        FIND_NUMBERED_USER,
        UPSERT_CONTACT,
        HISTORY,
        RESOLVE_RECIPIENT,
        MEDIA_SOURCE,
    ];
}

/// Operations every platform sender answers on `<p>.rpc.outbound-<platform>.<op>`.
pub mod outbound_ops {
    /// [`super::FetchMediaRequest`] → [`super::FetchedMedia`].
    pub const FETCH_MEDIA: &str = "fetch_media";
    /// [`super::ChannelProfileRequest`] → [`super::ChannelProfile`].
    pub const CHANNEL_PROFILE: &str = "channel_profile";
    /// Every operation.
    pub const ALL: &[&str] = &[FETCH_MEDIA, CHANNEL_PROFILE];
}

/// Read (and first change, with `change`) a channel's profile at its platform
/// (`GET`/`PATCH /v1/channels/{id}/profile`), answered by the platform's sender, which holds
/// the channel's credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelProfileRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking: another bot's channel is not found.
    pub bot_id: String,
    /// The channel.
    pub channel_id: String,
    /// The keys to set, in the platform's profile shape (`null` removes one); none: read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A channel's profile as its platform has it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelProfile {
    /// The channel.
    pub channel_id: String,
    /// Its platform, which decides the profile's keys.
    pub platform: Platform,
    /// The profile: Telegram `name`, `description`, `short_description`; WhatsApp `about`,
    /// `address`, `description`, `email`, `vertical`, `websites`, `profile_picture_url`;
    /// Messenger `greeting`, `get_started`, `persistent_menu`, `ice_breakers`.
    pub profile: serde_json::Map<String, serde_json::Value>,
}

/// The media a user sent in message `message_id`, if it is the bot's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MediaSourceRequest {
    /// Payload version.
    pub v: V1,
    /// The asking bot.
    pub bot_id: String,
    /// The inbound message (`msg_…`).
    pub message_id: String,
}

/// Where a user's media came from: the channel it arrived on and the message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MediaSource {
    /// The channel.
    pub channel_id: String,
    /// Its messenger.
    pub platform: Platform,
    /// The message's content as stored (an image, audio, video or file).
    pub content: Content,
}

/// Asks a platform's sender to download `media` with `channel_id`'s credentials into the
/// media store under `object`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FetchMediaRequest {
    /// Payload version.
    pub v: V1,
    /// The channel the media arrived on.
    pub channel_id: String,
    /// The media as the platform described it.
    pub media: Media,
    /// The object's name in the media store.
    pub object: String,
    /// The bot it is stored for (the object's `bot_id` metadata).
    pub bot_id: String,
    /// Largest size accepted, in bytes.
    pub max_bytes: u64,
}

/// A file now in the media store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FetchedMedia {
    /// Its MIME type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Callback settings when creating a bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookInput {
    /// Callback URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Flavour; when absent, a new bot's is `native` and a change keeps the bot's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavour: Option<WebhookFlavour>,
    /// Subscriptions; defaults to `message.received` and `user.*`.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Platforms whose events are delivered; every platform when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<Platform>>,
    /// Sent as `hub.verify_token` when a new URL is verified, so the endpoint can tell the
    /// request comes from its own configuration (the bot id when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_token: Option<String>,
}

/// Change a bot's callback settings (`PUT /v1/webhook`). A new URL is verified first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpdateWebhookRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// The new settings (absent fields keep their current value).
    pub webhook: WebhookInput,
}

/// Rotate a bot's API key or webhook signing secret: a new one is issued and the current ones
/// keep working for the overlap, then stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RotateRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// How long the current key or secret stays valid (the configured default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_seconds: Option<u64>,
    /// A new key's scopes ([`crate::scopes`]); absent: every scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// Exchange a bot's API key, or a refresh token, for an access token and a refresh token
/// (`POST /v1/auth/token`): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// A working API key of the bot (`pbk_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// A refresh token from an earlier exchange (`pbrt_…`); it is used up, and a second use
    /// revokes every token of its family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// An access token and the refresh token for the next one, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IssuedTokens {
    /// Bearer for every `/v1` route, with the scopes of the API key it comes from (`pbat_…`).
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds the access token works.
    pub expires_in: u64,
    /// Exchange it for the next pair before it expires (`pbrt_…`); once only.
    pub refresh_token: String,
    /// Seconds the refresh token works.
    pub refresh_expires_in: u64,
    /// What the access token may do, wildcards expanded.
    pub scopes: Vec<String>,
}

/// A new API key, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RotatedKey {
    /// The new key's public id.
    pub key_id: String,
    /// The new key (Bearer token). Shown once; stored hashed.
    pub api_key: String,
    /// When the keys it replaces stop working.
    pub previous_expire_at: DateTime<Utc>,
    /// What the new key may do, wildcards expanded.
    pub scopes: Vec<String>,
}

/// A new webhook signing secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RotatedSecret {
    /// The new secret (`whsec_…`).
    pub webhook_secret: String,
    /// Until then callbacks carry a signature with the previous secret too.
    pub previous_expire_at: DateTime<Utc>,
}

/// Revoke one API key at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevokeKeyRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// The key's public id (`key_…`).
    pub key_id: String,
}

/// Create a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateTenantRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// Name.
    pub name: String,
}

/// A tenant: an organisation owning bots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tenant {
    /// Tenant id (`ten_…`).
    pub id: String,
    /// Name.
    pub name: String,
    /// Its bots.
    pub bots: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// List bots, of one tenant or all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListBotsRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// Only this tenant's bots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

/// A bot in a list (no secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BotSummary {
    /// Bot id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Whether it receives and sends.
    pub enabled: bool,
    /// Callback URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Channels connected.
    pub channels: u64,
    /// Fallback templates per platform (see [`BotRecord::fallback_templates`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fallback_templates: BTreeMap<Platform, FallbackTemplate>,
    /// Settings per platform (see [`BotRecord::platform_settings`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platform_settings: BTreeMap<Platform, PlatformSettings>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A bot's API request limit, for the whole installation (each `api` replica enforces its
/// share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests allowed at once before the sustained rate applies.
    pub burst: u32,
}

/// Pass a conversation to a human agent or back to the bot
/// (`POST /v1/conversations/{id}/handover`, the console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HandoverRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking: another bot's conversation is not found.
    pub bot_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Who answers it from now on.
    pub to: HandledBy,
    /// The agent taking it (to `human`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// A message of a bot, with what the router knows of its journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JourneyRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking: another bot's message is not found.
    pub bot_id: String,
    /// The message.
    pub message_id: String,
}

/// One message as the router keeps it, with the times of its stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JourneyMessage {
    /// `msg_…`.
    pub id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Its conversation.
    pub conversation_id: String,
    /// Its status now.
    pub status: String,
    /// The platform's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    /// Inbound: the event that carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Outbound: who sent it (`api`, `inline`, `human`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    /// Inbound: the platform's time of the user's message; outbound: when it was stored for
    /// its sender.
    pub created_at: DateTime<Utc>,
    /// Outbound: each later stage's time (`sent`, `failed`, `suppressed`, `delivered`,
    /// `read`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timeline: BTreeMap<String, DateTime<Utc>>,
}

/// What the router knows of a message's journey: the message, when it stored the event
/// (inbound), and the bot's inline replies to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JourneyRecord {
    /// The message.
    pub message: JourneyMessage,
    /// Inbound: when the router stored the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<DateTime<Utc>>,
    /// Inbound: the bot's inline replies to its event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replies: Vec<JourneyMessage>,
}

/// One stage of a message's journey (`GET /v1/messages/{id}/journey`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JourneyStage {
    /// `received` (the platform's time of the user's message), `stored` (Patchbay took the
    /// event), `callback` (one attempt to deliver it to the bot), `queued` (an outbound
    /// message stored for its platform's sender), `sent` / `failed` (the platform's answer),
    /// `suppressed` (held back: a human agent held the conversation), `delivered`, `read`
    /// (the platform's receipts).
    pub stage: String,
    /// When.
    pub at: DateTime<Utc>,
    /// `callback`: the attempt's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// `callback`: the HTTP status the bot answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// `callback`: how long the bot took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u32>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `sent`: the platform's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
}

/// A message's journey: every stage it passed, in time order, and the journeys of the bot's
/// inline replies to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Journey {
    /// The message.
    pub message_id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Its conversation.
    pub conversation_id: String,
    /// Its status now.
    pub status: String,
    /// The stages, oldest first.
    pub stages: Vec<JourneyStage>,
    /// Inbound: the bot's inline replies, each with its own journey.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replies: Vec<Journey>,
}

/// A bot's conversations as an agent's inbox (`GET /v1/conversations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InboxRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// Only those the bot, or a human, answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<HandledBy>,
    /// At most this many, 1 to 200.
    pub limit: u32,
}

/// One conversation of an inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboxEntry {
    /// The conversation.
    pub conversation_id: String,
    /// Its user.
    pub user: UserProfile,
    /// Who answers it.
    pub handled_by: HandledBy,
    /// The agent holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When it last changed hands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// A human holds it and the user wrote after the hand-over and the agent's last message.
    pub waiting: bool,
    /// When Patchbay received the user's last message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_wrote_at: Option<DateTime<Utc>>,
}

/// Who answers a conversation, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationState {
    /// The conversation.
    pub conversation_id: String,
    /// Who answers it.
    pub handled_by: HandledBy,
    /// The agent holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When it last changed hands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// Change a bot's state: enable or disable it, set its API request limit, its fallback
/// templates and its platform settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BotStateRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// Whether it receives and sends (unchanged when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Its API request limit (unchanged when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Fallback templates per platform: a template sets that platform's, `null` removes it;
    /// platforms not named keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_templates: Option<BTreeMap<Platform, Option<FallbackTemplate>>>,
    /// Settings per platform: settings replace that platform's, `null` removes them;
    /// platforms not named keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_settings: Option<BTreeMap<Platform, Option<PlatformSettings>>>,
    /// How long a conversation stays with a human agent without an agent message before it
    /// returns to the bot, in seconds (60 to 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_idle_secs: Option<u64>,
}

/// Enable or disable one of a bot's channels: a disabled channel receives nothing (its
/// webhooks answer 404) and sends nothing, and platforms whose webhook Patchbay registers
/// (Viber) have it removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelStateRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// The channel.
    pub channel_id: String,
    /// Whether it receives and sends.
    pub enabled: bool,
}

/// Check that a callback URL answers the subscription challenge (GET with `hub.mode`,
/// `hub.challenge`, `hub.verify_token`; the endpoint must echo the challenge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyEndpointRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The URL.
    pub url: String,
    /// The verify token to send.
    pub verify_token: String,
    /// The challenge it must answer ([`WebhookFlavour::challenge`] for a bot's webhook).
    #[serde(default)]
    pub challenge: Challenge,
}

/// Create a bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateBotRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// Name.
    pub name: String,
    /// Owning tenant; the default tenant when absent.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Callback settings.
    #[serde(default)]
    pub webhook: Option<WebhookInput>,
}

/// A new bot, with its secrets shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedBot {
    /// Bot id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// The API key (Bearer token for `/v1`). Shown once; stored hashed.
    pub api_key: String,
    /// The Standard Webhooks signing secret (`whsec_…`).
    pub webhook_secret: String,
    /// Callback settings.
    pub webhook: WebhookSettings,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Connect a bot to a messenger account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreateChannelRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// The messenger.
    pub platform: Platform,
    /// The platform's secrets, e.g. Telegram `{"bot_token", "secret_token"}`.
    pub credentials: serde_json::Value,
    /// Operator-only override of the platform API's base URL.
    #[serde(default)]
    pub api_base_url: Option<String>,
}

/// A new channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedChannel {
    /// Channel id.
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The messenger.
    pub platform: Platform,
    /// Where the platform must send webhooks, e.g. `/webhooks/telegram/ch_…` (custom
    /// channels: the base of their API, `/v1/custom/ch_…`).
    pub webhook_path: String,
    /// Credentials Patchbay generated for the channel (custom channels: `domain_key`,
    /// `event_webhook_secret`). Shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A channel as `GET /admin/v1/bots/{bot_id}/channels/{channel_id}` shows it (never its
/// credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelView {
    /// Channel id.
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The messenger.
    pub platform: Platform,
    /// Whether it receives and sends.
    pub enabled: bool,
    /// Where the platform must send webhooks (as in [`CreatedChannel::webhook_path`]).
    pub webhook_path: String,
    /// The operator's API base URL for this channel, when it has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Its setup at the platform, for platforms Patchbay configures itself (Kik); absent
    /// elsewhere, and until the sender's first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<ChannelSetup>,
    /// When its platform last reached Patchbay; absent until it first did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ChannelActivity>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// When a channel's platform last reached Patchbay (the `<p>_activity` bucket, written by the
/// platform's ingress at most every 30 seconds per replica; so to within that).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelActivity {
    /// Payload version.
    pub v: V1,
    /// The last webhook whose signature held, published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<DateTime<Utc>>,
    /// The last handshake answered (Meta's `hub.challenge`, WeChat's `echostr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_at: Option<DateTime<Utc>>,
}

/// How a platform's configuration of a channel stands (the `<p>_setup` bucket, written by the
/// platform's sender after each attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelSetup {
    /// Payload version.
    pub v: V1,
    /// The outcome of the last attempt.
    pub state: SetupState,
    /// What happened, in words (the platform's refusal, or what is being retried).
    pub detail: String,
    /// The configuration as the platform reads it back (Kik: `GET /v1/config`), when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_config: Option<serde_json::Value>,
    /// Attempts since the channel last changed.
    pub attempts: u32,
    /// When the last attempt ended.
    pub at: DateTime<Utc>,
}

/// [`ChannelSetup::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SetupState {
    /// The platform has what Patchbay needs (read back).
    Configured,
    /// The last attempt failed in a way the platform may get over; it is tried again.
    Retrying,
    /// The platform refused (wrong credentials): tried again only when the channel changes.
    Refused,
}

/// Disable or re-enable a bot's callback endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookStateRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// Why it is disabled (for `disable_webhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Look up one user of a bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GetUserRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// The user.
    pub user_id: String,
}

/// A user's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserProfile {
    /// Patchbay's id.
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// The channel the user is reached through.
    pub channel: ChannelRef,
    /// The platform's user id.
    pub platform_user_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Locale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// E-mail address, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number (E.164), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// `group` or `room` when this "user" is a chat with several members (a LINE group, a
    /// Telegram group): its conversation is the chat's, its members are users of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_kind: Option<ChatKind>,
    /// Whether the user currently receives messages from the bot.
    pub subscribed: bool,
    /// Whether the user gets the bot's broadcasts: `false` once the bot marked them opted out
    /// (`PATCH /v1/users/{id}` `{"broadcasts": false}`).
    #[serde(default = "crate::wire::yes")]
    pub broadcasts: bool,
    /// Last inbound activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When the user last wrote (or acted) by the platform's clock: the start of the
    /// platform's messaging window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// The bot's contact fields for the user (`licenseplate`, a CRM id, …).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: crate::fields::Fields,
    /// `human` while a human agent answers the user's conversation; absent while the bot does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<HandledBy>,
}

/// Look up the user a send is for (`user_id`, or `platform` + `address`), to check it before
/// the command is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResolveRecipientRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// The recipient.
    #[serde(flatten)]
    pub to: Recipient,
}

/// The template registry's operations (`/v1/templates`), always within the asking bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// What to do.
    pub op: TemplateOp,
}

/// One operation on a bot's templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TemplateOp {
    /// Store a new template (409 `name_taken` when the bot has one of that name).
    Create {
        /// The definition, checked.
        template: crate::templates::TemplateDef,
    },
    /// Every template of the bot, by name.
    List,
    /// One template.
    Get {
        /// `tpl_…`.
        id: String,
    },
    /// Replace a template's definition.
    Replace {
        /// `tpl_…`.
        id: String,
        /// The new definition, checked.
        template: crate::templates::TemplateDef,
    },
    /// Delete a template.
    Delete {
        /// `tpl_…`.
        id: String,
    },
}

/// Set or remove contact fields of a bot's user (`PATCH /v1/users/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SetUserFieldsRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// The user.
    pub user_id: String,
    /// Field name → new value; `null` removes the field.
    #[serde(default)]
    pub fields: crate::fields::FieldChanges,
    /// Whether the user gets the bot's broadcasts (`false`: opted out), when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcasts: Option<bool>,
}

/// `true`, a serde default.
pub(crate) fn yes() -> bool {
    true
}

/// A bot's users whose fields hold every given value (`GET /v1/users?field.<name>=<value>`),
/// oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SearchUsersRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// Field name → the value it must have (at least one).
    pub fields: crate::fields::Fields,
    /// Only users after this user id (the previous page's `next_cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size, 1–200.
    pub limit: u32,
}

/// A page of users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserPage {
    /// The users, by id.
    pub users: Vec<UserProfile>,
    /// The next page's `after`, when there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Look up a bot's user by the platform's user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FindUserRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// The platform.
    pub platform: Platform,
    /// The platform's user id (e.g. Telegram's `from.id`).
    pub platform_user_id: String,
}

/// Look up a bot's user by BrandChat's numeric user id
/// ([`crate::brandchat::numeric_user_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FindNumberedUserRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// The numeric id.
    pub number: i64,
}

/// A contact as `POST /v1/conversations` names them: a phone number or an e-mail address (at
/// least one), and a name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Phone number in E.164, e.g. `+31612345678`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The contact's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Whether `phone` is E.164: `+`, then 8 to 15 digits, the first not 0.
pub fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// A plausible e-mail address, lowercased: one `@`, a local part, a domain with a dot, no
/// spaces, at most 254 characters.
pub fn normalise_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = e.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(e)
}

impl Contact {
    /// The contact with its phone checked (E.164) and its e-mail checked and lowercased; at
    /// least one of them must be given. The error names the field.
    pub fn normalised(self) -> Result<Contact, crate::content::FieldError> {
        use crate::content::FieldError;
        let phone = self
            .phone
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty());
        let email = self
            .email
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty());
        if phone.is_none() && email.is_none() {
            return Err(FieldError::new(
                "contact",
                "give a phone number or an e-mail address",
            ));
        }
        if let Some(p) = &phone
            && !is_e164(p)
        {
            return Err(FieldError::new(
                "contact.phone",
                "must be E.164, e.g. +31612345678",
            ));
        }
        let email = match email {
            Some(e) => Some(
                normalise_email(&e)
                    .ok_or_else(|| FieldError::new("contact.email", "not an e-mail address"))?,
            ),
            None => None,
        };
        let name = self
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err(FieldError::new("contact.name", "at most 200 characters"));
        }
        Ok(Contact { phone, email, name })
    }
}

/// Find a bot's user by phone or e-mail, or create one on `channel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpsertContactRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot.
    pub bot_id: String,
    /// Who (phone already E.164, e-mail lowercase).
    pub contact: Contact,
    /// Where to create the user when the bot knows no one by that phone or e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelRef>,
    /// The new user's id on that channel (WhatsApp: the phone's digits; custom: the e-mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_user_id: Option<String>,
}

/// The user and conversation a contact upsert found or created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpsertedContact {
    /// The user.
    pub user: UserProfile,
    /// Their conversation with the bot.
    pub conversation_id: String,
    /// Created now (else it existed).
    pub created: bool,
}

/// A page of one conversation's messages, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryRequest {
    /// Payload version.
    #[serde(default)]
    pub v: V1,
    /// The bot asking.
    pub bot_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Only messages older than this message id (the previous page's `next_cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Page size, 1–200.
    pub limit: u32,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryMessage {
    /// Message id (`msg_…`).
    pub id: String,
    /// `inbound` (from the user) or `outbound` (to the user).
    pub direction: String,
    /// The content.
    pub content: Content,
    /// `received`, `queued`, `sent` or `failed`; a field message's is `applied`.
    pub status: String,
    /// Where an outbound message came from (`api`, `inline`, `human`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The platform's id of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    /// In a group's or room's conversation: the member who wrote this inbound message
    /// (`usr_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Answer of a history request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryPage {
    /// The conversation's user (`usr_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The messages, newest first.
    pub messages: Vec<HistoryMessage>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A Patchbay link that replaced a URL button containing `:code`. Key `<token>` of the links
/// bucket; opening `/go/<token>` mints a [`CodeRecord`] and redirects to `url` with the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LinkRecord {
    /// Payload version.
    pub v: V1,
    /// The bot that sent the button.
    pub bot_id: String,
    /// The recipient.
    pub user_id: String,
    /// The tenant's URL, still containing `:code`.
    pub url: String,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    /// How long after its first opening it still opens, on the first opener's device only;
    /// 0: once.
    #[serde(default = "default_link_reuse")]
    pub reuse_seconds: u32,
    /// When it was first opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// SHA-256 (hex) of the first opener's device token (a cookie only that browser has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opener: Option<String>,
    /// Codes minted from it so far (bounded: [`MAX_CODES_PER_LINK`]).
    #[serde(default)]
    pub codes_minted: u32,
}

fn default_link_reuse() -> u32 {
    crate::content::DEFAULT_LINK_REUSE_SECONDS
}

/// The most one-time codes one link mints (each opening mints one).
pub const MAX_CODES_PER_LINK: u32 = 20;

/// A one-time code for a web view. Key `<code>` of the codes bucket; claimed (deleted) once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CodeRecord {
    /// Payload version.
    pub v: V1,
    /// The bot that may claim it.
    pub bot_id: String,
    /// The user it identifies.
    pub user_id: String,
    /// When it stops being claimable.
    pub expires_at: DateTime<Utc>,
}

/// What a platform gave with an inbound event to answer that event once, for a short time
/// (LINE's reply token), kept by the ingress for the sender. Key `<event id>` of the replies
/// bucket; the sender that uses it deletes it first (compare-and-delete on its revision), so
/// two senders never both use it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplyContext {
    /// Payload version.
    pub v: V1,
    /// The channel whose webhook carried it (a sender uses it only for that channel).
    pub channel_id: String,
    /// The platform's token.
    pub token: String,
    /// When the platform says the event happened (its lifetime counts from then).
    pub issued_at: DateTime<Utc>,
}

impl std::fmt::Debug for ReplyContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyContext")
            .field("channel_id", &self.channel_id)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(message_id: &str, status: DeliveryStatus) -> StatusEvent {
        StatusEvent {
            v: V1,
            id: StatusEvent::id_of(message_id, status),
            message_id: message_id.into(),
            bot_id: "bot_1".into(),
            channel: ChannelRef {
                id: "chn_1".into(),
                platform: Platform::Telegram,
            },
            status,
            platform_message_id: (status == DeliveryStatus::Sent)
                .then(|| format!("p-{message_id}")),
            error: (status == DeliveryStatus::Failed).then(|| DeliveryError {
                code: "blocked".into(),
                message: "the user blocked the bot".into(),
                platform_code: Some(403),
            }),
            at: Utc::now(),
            source: Some(SendSource::Broadcast),
            source_id: Some("brd_1".into()),
            also: Vec::new(),
        }
    }

    /// Statuses reported together come apart as they went in, each with its own id (the id
    /// its tenant event derives from); the event carrying them has an id of its own, and one
    /// status stays as it is.
    #[test]
    fn statuses_reported_together_come_apart_as_each_message_s_own() {
        let each = vec![
            status("msg_1", DeliveryStatus::Sent),
            status("msg_2", DeliveryStatus::Failed),
            status("msg_3", DeliveryStatus::Sent),
        ];
        let together = StatusEvent::batch(each.clone()).unwrap();
        assert_eq!(together.also.len(), 2);
        assert!(each.iter().all(|s| s.id != together.id));
        let wire: StatusEvent =
            serde_json::from_slice(&serde_json::to_vec(&together).unwrap()).unwrap();
        assert_eq!(wire.members(), each);
        let again = StatusEvent::batch(each.clone()).unwrap();
        assert_eq!(
            again.id, together.id,
            "the same statuses, the same event id"
        );

        let one = status("msg_9", DeliveryStatus::Sent);
        assert_eq!(StatusEvent::batch(vec![one.clone()]).unwrap(), one);
        assert_eq!(one.clone().members(), [one]);
        assert!(StatusEvent::batch(Vec::new()).is_none());
        let many: Vec<StatusEvent> = (0..=StatusEvent::MAX_MEMBERS * 2)
            .map(|i| status(&format!("msg_{i}"), DeliveryStatus::Sent))
            .collect();
        let events = StatusEvent::batches(many.clone());
        let sizes: Vec<usize> = events.iter().map(|e| e.also.len() + 1).collect();
        assert_eq!(
            sizes,
            [StatusEvent::MAX_MEMBERS, StatusEvent::MAX_MEMBERS, 1]
        );
        assert_eq!(
            events
                .into_iter()
                .flat_map(StatusEvent::members)
                .collect::<Vec<_>>(),
            many
        );
        let alone = serde_json::to_value(status("msg_9", DeliveryStatus::Sent)).unwrap();
        assert!(alone.get("also").is_none(), "{alone}");
    }

    #[test]
    fn all_lists_every_type() {
        // An exhaustive match: a new variant fails to compile here until it is handled, and
        // then this test fails until it is in `ALL`.
        for t in EventType::ALL {
            match t {
                EventType::MessageReceived
                | EventType::UserSubscribed
                | EventType::UserUnsubscribed
                | EventType::MessageSent
                | EventType::MessageFailed
                | EventType::MessageDelivered
                | EventType::MessageRead
                | EventType::MessageUnsent
                | EventType::ConversationHandover
                | EventType::BroadcastProgress
                | EventType::BroadcastCompleted => {}
            }
        }
        let names: std::collections::BTreeSet<&str> =
            EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), 11);
        for t in EventType::ALL {
            let back: EventType = serde_json::from_value(json!(t.as_str())).unwrap();
            assert_eq!(back, *t);
        }
    }

    #[test]
    fn versions_other_than_one_are_refused_with_a_reason() {
        let err = serde_json::from_value::<SendCommand>(json!({
            "v": 2, "user_id": "usr_1", "messages": []
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("unsupported payload version 2"),
            "{err}"
        );
    }

    #[test]
    fn a_send_source_is_stored_by_its_wire_name() {
        for name in ["api", "inline", "internal", "human", "broadcast"] {
            let source: SendSource = serde_json::from_value(json!(name)).unwrap();
            assert_eq!(source.as_str(), name);
            assert_eq!(SendSource::from_stored(name), Some(source));
        }
        assert_eq!(SendSource::from_stored("user"), None);
    }

    #[test]
    fn send_command_takes_either_recipient_form() {
        let a: SendCommand = serde_json::from_value(json!({
            "v": 1, "user_id": "usr_1", "messages": [{"type": "text", "text": "hi"}]
        }))
        .unwrap();
        assert_eq!(
            a.to,
            Recipient::User {
                user_id: "usr_1".into()
            }
        );
        assert_eq!(a.source, SendSource::Internal);
        let b: SendCommand = serde_json::from_value(json!({
            "v": 1, "platform": "telegram", "address": "4242",
            "messages": [{"type": "text", "text": "hi"}]
        }))
        .unwrap();
        assert!(matches!(
            b.to,
            Recipient::Address {
                platform: Platform::Telegram,
                ..
            }
        ));
    }

    #[test]
    fn subscriptions_match_wildcards() {
        let w = WebhookSettings {
            url: None,
            flavour: WebhookFlavour::Native,
            events: WebhookSettings::default_events(),
            disabled_reason: None,
            platforms: Vec::new(),
        };
        assert!(w.subscribed(EventType::MessageReceived));
        assert!(w.subscribed(EventType::UserSubscribed));
        assert!(!w.subscribed(EventType::MessageSent));
        let all = WebhookSettings {
            events: vec!["*".into()],
            ..w.clone()
        };
        assert!(all.subscribed(EventType::MessageFailed));
        let msg = WebhookSettings {
            events: vec!["message.*".into()],
            ..w
        };
        assert!(msg.subscribed(EventType::MessageSent));
        assert!(!msg.subscribed(EventType::UserUnsubscribed));
        let whatsapp_only = WebhookSettings {
            platforms: vec![Platform::Whatsapp],
            ..msg
        };
        assert!(whatsapp_only.accepts(EventType::MessageSent, Some(Platform::Whatsapp)));
        assert!(!whatsapp_only.accepts(EventType::MessageSent, Some(Platform::Telegram)));
        assert!(!whatsapp_only.accepts(EventType::UserSubscribed, Some(Platform::Whatsapp)));
        // A broadcast's events span platforms: the platform filter lets them through.
        let broadcasts = WebhookSettings {
            events: vec!["broadcast.*".into()],
            ..whatsapp_only
        };
        assert!(broadcasts.accepts(EventType::BroadcastCompleted, None));
        assert!(broadcasts.accepts(EventType::BroadcastProgress, None));
        assert!(!broadcasts.accepts(EventType::MessageSent, Some(Platform::Whatsapp)));
    }

    #[test]
    fn inline_replies_come_in_two_shapes() {
        let a: InlineReply =
            serde_json::from_value(json!({"messages": [{"type": "text", "text": "a"}]})).unwrap();
        let b: InlineReply =
            serde_json::from_value(json!([{"type": "text", "text": "a"}])).unwrap();
        assert_eq!(a.into_messages(), b.into_messages());
    }

    #[test]
    fn phones_and_emails_are_checked() {
        assert!(is_e164("+31612345678"));
        for bad in [
            "31612345678",
            "+0612345678",
            "+3161234567890123",
            "+31 6123",
            "+1234567",
        ] {
            assert!(!is_e164(bad), "{bad:?}");
        }
        assert_eq!(
            normalise_email(" Ada@Example.COM ").as_deref(),
            Some("ada@example.com")
        );
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "a@b@c.d",
        ] {
            assert_eq!(normalise_email(bad), None, "{bad:?}");
        }
    }
}
