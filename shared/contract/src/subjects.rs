//! Subject, stream and bucket names, all derived from one configurable prefix (`pb` by default)
//! so that tests and several installations can share one NATS server.

use crate::error::ContractError;
use crate::wire::Platform;

/// The streams of Patchbay's event flow, plus the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Raw platform webhooks, as received: `<p>.ingress.<platform>.<channel>`.
    Ingress,
    /// Canonical inbound events: `<p>.inbound.<bot>`.
    Inbound,
    /// Send commands from tenants and internal systems: `<p>.send.<bot>`.
    Send,
    /// Events to deliver to tenants: `<p>.dispatch.<bot>`.
    Dispatch,
    /// Rendered sends for one platform and channel: `<p>.outbound.<platform>.<channel>`.
    Outbound,
    /// Rendered broadcast sends for one platform and channel, paced behind the channel's
    /// `Outbound` ones: `<p>.bulk.<platform>.<channel>`.
    Bulk,
    /// Results of platform calls: `<p>.status.<bot>`.
    Status,
    /// Dead letters: `<p>.dlq.<consumer>.<key>`, the key being the bot or channel the message
    /// was for (the last token of its subject), so each key's dead letters are bounded
    /// (`TopologySettings::dead_letters_per_key`).
    Dlq,
}

impl Stream {
    /// Every stream, in flow order.
    pub const ALL: [Stream; 8] = [
        Stream::Ingress,
        Stream::Inbound,
        Stream::Send,
        Stream::Dispatch,
        Stream::Outbound,
        Stream::Bulk,
        Stream::Status,
        Stream::Dlq,
    ];

    /// The subject token and stream-name suffix of this stream.
    pub fn token(self) -> &'static str {
        match self {
            Stream::Ingress => "ingress",
            Stream::Inbound => "inbound",
            Stream::Send => "send",
            Stream::Dispatch => "dispatch",
            Stream::Outbound => "outbound",
            Stream::Bulk => "bulk",
            Stream::Status => "status",
            Stream::Dlq => "dlq",
        }
    }
}

/// Key-value buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Current configuration of bots, channels and API keys, written by `auth`.
    Config,
    /// One-time codes for web views (TTL, `PATCHBAY_CODE_TTL_MS`).
    Codes,
    /// Patchbay links (`/go/<token>`) that replaced URL buttons with `:code` (TTL,
    /// `PATCHBAY_LINK_TTL_MS`).
    Links,
    /// Messages the platforms accepted (message id → platform message id), so a redelivered
    /// outbound job is not sent twice (TTL).
    Sent,
    /// Live replicas of each consumer group and the partitions they run (short TTL,
    /// refreshed by heartbeats).
    Members,
    /// Platform access tokens shared by every replica that calls the platform, with the claim
    /// of the one replica fetching a new one (WeChat: one token per AppID).
    Tokens,
    /// Each channel's setup at its platform (Kik's `/v1/config`, Viber's `set_webhook`) as the
    /// sender last saw it: [`crate::ChannelSetup`] under the channel id.
    Setup,
    /// Reply contexts an ingress kept for the sender, by event id: what a platform gives with
    /// an event to answer it once, for a short time (LINE's reply token). Single use: the
    /// sender that takes one deletes it (short TTL).
    Replies,
    /// Custom channels' users as `ingress-custom` registered them, and the revocations of
    /// their tokens (per user and per channel); no TTL.
    CustomUsers,
    /// Per-bot counters of what a bot keeps in other buckets (links, codes), one per kind,
    /// bot and window (`patchbay_bus::quota`); TTL the longest window (the links').
    Quotas,
    /// The console's sign-ins, sealed, by the hash of their cookie (TTL, the session's
    /// lifetime, `PATCHBAY_CONSOLE_SESSION_TTL_MS`).
    Sessions,
    /// When each channel's platform last reached Patchbay (a verified webhook, a handshake):
    /// [`crate::ChannelActivity`] under the channel id, written by the platform's ingress.
    Activity,
    /// Broadcasts that were cancelled (id → `cancelled`), written by `bot-router`: a sender
    /// drops their messages still waiting for it (TTL, the pipeline's message age).
    Broadcasts,
}

impl Bucket {
    /// The bucket-name suffix.
    pub fn token(self) -> &'static str {
        match self {
            Bucket::Config => "config",
            Bucket::Codes => "codes",
            Bucket::Links => "links",
            Bucket::Sent => "sent",
            Bucket::Members => "members",
            Bucket::Tokens => "tokens",
            Bucket::Setup => "setup",
            Bucket::Replies => "replies",
            Bucket::CustomUsers => "custom_users",
            Bucket::Quotas => "quotas",
            Bucket::Sessions => "sessions",
            Bucket::Activity => "activity",
            Bucket::Broadcasts => "broadcasts",
        }
    }
}

/// Builds every subject and name from the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

/// The default prefix.
pub const DEFAULT_PREFIX: &str = "pb";

fn check_token(token: &str) -> Result<&str, ContractError> {
    if token.is_empty()
        || token
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
    {
        return Err(ContractError::InvalidToken(token.to_owned()));
    }
    Ok(token)
}

impl Subjects {
    /// Subjects under `prefix` (1–32 characters of `a-z0-9_-`).
    pub fn new(prefix: &str) -> Result<Self, ContractError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return Err(ContractError::InvalidPrefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream name, e.g. `PB_INGRESS`.
    pub fn stream(&self, stream: Stream) -> String {
        format!(
            "{}_{}",
            self.prefix.replace('-', "_").to_ascii_uppercase(),
            stream.token().to_ascii_uppercase()
        )
    }

    /// The bucket name, e.g. `pb_config`.
    pub fn bucket(&self, bucket: Bucket) -> String {
        format!("{}_{}", self.prefix.replace('-', "_"), bucket.token())
    }

    /// The object store of files uploaded through BrandChat's `file/upload`: `<p>_files`.
    pub fn files_store(&self) -> String {
        format!("{}_files", self.prefix.replace('-', "_"))
    }

    /// The object store of media: what users sent, downloaded from their platform when a bot
    /// first asks for it (`GET /v1/media/{media_id}`), kept for [`crate::topology::MEDIA_TTL`].
    pub fn media_store(&self) -> String {
        format!("{}_media", self.prefix.replace('-', "_"))
    }

    /// The object store of files bots uploaded (`POST /v1/media`) for their sends, under
    /// `<bot id>/<media id>`, kept for [`crate::topology::UPLOAD_TTL`].
    pub fn uploads_store(&self) -> String {
        format!("{}_uploads", self.prefix.replace('-', "_"))
    }

    /// Every subject a stream holds, e.g. `pb.ingress.>`.
    pub fn stream_filter(&self, stream: Stream) -> String {
        format!("{}.{}.>", self.prefix, stream.token())
    }

    /// `<p>.ingress.<platform>.<channel>`.
    pub fn ingress(&self, platform: Platform, channel_id: &str) -> Result<String, ContractError> {
        Ok(format!(
            "{}.ingress.{}.{}",
            self.prefix,
            platform.as_str(),
            check_token(channel_id)?
        ))
    }

    /// `<p>.inbound.<bot>`.
    pub fn inbound(&self, bot_id: &str) -> Result<String, ContractError> {
        Ok(format!("{}.inbound.{}", self.prefix, check_token(bot_id)?))
    }

    /// `<p>.send.<bot>`.
    pub fn send(&self, bot_id: &str) -> Result<String, ContractError> {
        Ok(format!("{}.send.{}", self.prefix, check_token(bot_id)?))
    }

    /// `<p>.dispatch.<bot>`.
    pub fn dispatch(&self, bot_id: &str) -> Result<String, ContractError> {
        Ok(format!("{}.dispatch.{}", self.prefix, check_token(bot_id)?))
    }

    /// `<p>.outbound.<platform>.<channel>`.
    pub fn outbound(&self, platform: Platform, channel_id: &str) -> Result<String, ContractError> {
        Ok(format!(
            "{}.outbound.{}.{}",
            self.prefix,
            platform.as_str(),
            check_token(channel_id)?
        ))
    }

    /// `<p>.outbound.<platform>.>`: what one platform's sender consumes.
    pub fn outbound_platform(&self, platform: Platform) -> String {
        format!("{}.outbound.{}.>", self.prefix, platform.as_str())
    }

    /// `<p>.bulk.<platform>.<channel>`: a broadcast's messages for the channel's sender.
    pub fn bulk(&self, platform: Platform, channel_id: &str) -> Result<String, ContractError> {
        Ok(format!(
            "{}.bulk.{}.{}",
            self.prefix,
            platform.as_str(),
            check_token(channel_id)?
        ))
    }

    /// `<p>.bulk.<platform>.>`: the broadcast messages one platform's sender consumes.
    pub fn bulk_platform(&self, platform: Platform) -> String {
        format!("{}.bulk.{}.>", self.prefix, platform.as_str())
    }

    /// `<p>.status.<bot>`.
    pub fn status(&self, bot_id: &str) -> Result<String, ContractError> {
        Ok(format!("{}.status.{}", self.prefix, check_token(bot_id)?))
    }

    /// `<p>.dlq.<consumer>.<key>`: `consumer`'s dead letters of the bot or channel `key`.
    pub fn dlq(&self, consumer: &str, key: &str) -> Result<String, ContractError> {
        Ok(format!(
            "{}.dlq.{}.{}",
            self.prefix,
            check_token(consumer)?,
            check_token(key)?
        ))
    }

    /// `<p>.custom.replies.<channel>.<user>` (core NATS, not stored): the custom channel's
    /// sender announces each message it delivers to a user, for a request waiting for the bot's
    /// replies ([`crate::CustomReply`]).
    pub fn custom_replies(&self, channel_id: &str, user_id: &str) -> Result<String, ContractError> {
        Ok(format!(
            "{}.custom.replies.{}.{}",
            self.prefix,
            check_token(channel_id)?,
            check_token(user_id)?
        ))
    }

    /// `<p>.custom.outcome.<event>` (core NATS, not stored): what became of a custom channel's
    /// event at the tenant ([`crate::CustomOutcome`]).
    pub fn custom_outcome(&self, event_id: &str) -> Result<String, ContractError> {
        Ok(format!(
            "{}.custom.outcome.{}",
            self.prefix,
            check_token(event_id)?
        ))
    }

    /// Core NATS subject where a sender hands the bot's reply to an ingress request waiting to
    /// answer the platform inline (WeChat accounts without the customer-service API):
    /// `<p>.passive.<platform>.<event>`, the event being the user's message replied to.
    pub fn passive_reply(
        &self,
        platform: Platform,
        event_id: &str,
    ) -> Result<String, ContractError> {
        Ok(format!(
            "{}.passive.{}.{}",
            self.prefix,
            platform.as_str(),
            check_token(event_id)?
        ))
    }

    /// Request/reply subject of a service operation: `<p>.rpc.<service>.<op>`.
    pub fn rpc(&self, service: &str, op: &str) -> String {
        format!("{}.rpc.{service}.{op}", self.prefix)
    }

    /// Every request/reply subject of one service: `<p>.rpc.<service>.>`.
    pub fn rpc_all(&self, service: &str) -> String {
        format!("{}.rpc.{service}.>", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let s = Subjects::new("pb").unwrap();
        assert_eq!(s.stream(Stream::Ingress), "PB_INGRESS");
        assert_eq!(s.bucket(Bucket::Config), "pb_config");
        assert_eq!(
            s.ingress(Platform::Telegram, "ch_1").unwrap(),
            "pb.ingress.telegram.ch_1"
        );
        assert_eq!(s.send("bot_1").unwrap(), "pb.send.bot_1");
        assert_eq!(
            s.outbound_platform(Platform::Telegram),
            "pb.outbound.telegram.>"
        );
        let t = Subjects::new("t-x9").unwrap();
        assert_eq!(t.stream(Stream::Dlq), "T_X9_DLQ");
        assert_eq!(t.bucket(Bucket::Codes), "t_x9_codes");
    }

    #[test]
    fn bad_prefixes_and_tokens_are_refused() {
        for p in ["", "PB", "a.b", "a b", &"x".repeat(33)] {
            assert!(Subjects::new(p).is_err(), "{p:?} accepted");
        }
        let s = Subjects::new("pb").unwrap();
        for t in ["", "a.b", "*", ">", "a b"] {
            assert!(s.send(t).is_err(), "{t:?} accepted");
        }
    }
}
