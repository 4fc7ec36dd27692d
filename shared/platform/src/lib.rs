//! The adapter contract every messenger implements, and the service bodies built on it.
//!
//! A messenger is one crate under `shared/platforms/` with three faces:
//! * [`InboundAdapter`]: verify a webhook and split it into envelopes (used by the ingress),
//!   and normalise an envelope into canonical events (used by the normaliser);
//! * [`OutboundAdapter`]: render content for the platform and call its API (used by the sender);
//! * [`Capabilities`]: what the platform can show, so [`degrade`] can rewrite the rest.
//!
//! [`ingress`] and [`outbound`] turn an adapter into a running service, so
//! `services/ingress-<platform>` and `services/outbound-<platform>` stay a few lines long.
//! What the other services need to know about a platform (credentials, window, normalisation,
//! webhook path, first contact) is its [`PlatformSpec`], which `patchbay-registry` lists.
//! See `docs/adding-a-messenger.md`.

pub mod conformance;
pub mod degrade;
pub mod enrich;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod ingress;
pub mod media;
pub mod meta;
pub mod outbound;
pub mod replies;
pub mod setup;
pub mod spec;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use axum::http::HeaderMap;
use patchbay_contract::{DeliveryError, InboundEvent, IngressEnvelope, OutboundJob, Platform};
use serde::de::DeserializeOwned;

pub use degrade::{Capabilities, Support, degrade};
pub use spec::PlatformSpec;

/// Why a webhook was refused at the ingress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Authenticity check failed: 401, nothing published.
    #[error("signature check failed: {0}")]
    Unauthorized(String),
    /// The body is not what the platform sends: 400, nothing published.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// One envelope to publish: its de-duplication key (the platform's event id) and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The platform's own id of this event, unique per channel.
    pub dedupe_key: String,
    /// The body to carry.
    pub body: serde_json::Value,
    /// The conversation it belongs to on the platform (a chat id), if known.
    pub order_key: Option<String>,
    /// The platform object the event is for, when one POST can carry events of several
    /// channels (Meta: the Page id, the WhatsApp `phone_number_id`); compared with
    /// [`InboundAdapter::route_id`] to route it. `None`: the channel whose URL received it.
    pub route: Option<String>,
}

/// Why an envelope cannot be normalised (it goes to the dead-letter stream with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NormaliseError(pub String);

/// The inbound face of a messenger.
pub trait InboundAdapter: Send + Sync + 'static {
    /// Which messenger.
    const PLATFORM: Platform;
    /// Its credentials, as sealed in the channel record.
    type Credentials: DeserializeOwned + Send + Sync;
    /// Whether one URL may receive several channels' events, routed by
    /// [`Split::route`] and [`InboundAdapter::route_id`] (Meta apps): the ingress then also
    /// serves `/webhooks/<platform>` without a channel id.
    const ROUTED: bool = false;

    /// What the ingress answers once it stored a webhook's envelopes (200 with this body; most
    /// platforms ignore it, WeChat wants `success`).
    const ACCEPTED: &'static str = "";

    /// The header every genuine `POST` carries (its signature or secret token): a webhook
    /// without it is refused (401) before its body is read. `None` (the default): the
    /// platform signs elsewhere (WeChat: the query).
    const SIGNATURE_HEADER: Option<&'static str> = None;

    /// Checks the request's authenticity with the channel's credentials, over the raw body.
    fn verify(creds: &Self::Credentials, headers: &HeaderMap, body: &[u8])
    -> Result<(), Rejection>;

    /// The authenticity check of a request to a channel's own URL, and the body
    /// [`InboundAdapter::split`] parses: by default [`InboundAdapter::verify`] and the body as
    /// received. Platforms that sign the query string or encrypt the body (WeChat) override it.
    fn open<'a>(
        creds: &Self::Credentials,
        headers: &HeaderMap,
        _query: &std::collections::HashMap<String, String>,
        body: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, Rejection> {
        Self::verify(creds, headers, body)?;
        Ok(std::borrow::Cow::Borrowed(body))
    }

    /// Parses the body just enough to split it into envelopes and find their platform ids.
    fn split(channel_id: &str, body: &[u8]) -> Result<Vec<Split>, Rejection>;

    /// Turns an envelope into canonical events (none for updates Patchbay does not handle).
    fn normalise(envelope: &IngressEnvelope) -> Result<Vec<InboundEvent>, NormaliseError>;

    /// The platform's ownership check on `GET` of the webhook URL (Meta's `hub.*`
    /// handshake): `Some(Ok(body))` answers 200 with `body`, `Some(Err(_))` 403; `None` (the
    /// default) means the platform has none, and `GET` answers 405.
    fn challenge(
        _creds: &Self::Credentials,
        _query: &std::collections::HashMap<String, String>,
    ) -> Option<Result<String, Rejection>> {
        None
    }

    /// The platform API's base URL for [`InboundAdapter::enrich`] from the configuration
    /// (a channel's `api_base_url` overrides it); `None` (the default): no enrichment.
    fn api_base_url(_config: &patchbay_config::Config) -> Option<String> {
        None
    }

    /// Adds to the envelopes what the webhook lacks but the platform's API tells (Messenger:
    /// the sender's name and picture), before they are published. Runs within
    /// [`enrich::BUDGET`] (the ingress stops waiting after that and publishes what it has) and
    /// never fails: a lookup that cannot be made leaves the envelope as it is.
    fn enrich(
        _ctx: enrich::Context<'_, Self::Credentials>,
        _splits: &mut [Split],
    ) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// For channels that can answer a webhook only in its own response (WeChat accounts
    /// without the customer-service API): how long the ingress waits for the bot's reply to
    /// the webhook's event, which the sender hands over on `<p>.passive.<platform>.<event>`.
    /// `None` (the default): the ingress answers as soon as the envelopes are stored.
    fn passive_wait(_creds: &Self::Credentials) -> Option<Duration> {
        None
    }

    /// The webhook response carrying `reply`, the bot's answer to the envelope body `split`
    /// (WeChat: the passive-reply XML, encrypted in the safe and compatible modes).
    fn passive_response(
        _creds: &Self::Credentials,
        _query: &std::collections::HashMap<String, String>,
        _split: &serde_json::Value,
        _reply: &patchbay_contract::Content,
    ) -> Result<String, Rejection> {
        Err(Rejection::Malformed(
            "this platform has no inline replies".into(),
        ))
    }

    /// Whether [`InboundAdapter::answer`] may answer a webhook (the ingress then looks up the
    /// channel's bot for it).
    const ANSWERS: bool = false;

    /// The body of the 200 that answers a webhook whose envelopes were stored, instead of
    /// [`InboundAdapter::ACCEPTED`], when the platform takes a message in the response and the
    /// bot's settings hold one for it (Viber: the welcome message answering
    /// `conversation_started`). `splits` are the webhook's envelopes; `None` (the default):
    /// the usual answer.
    fn answer(
        _creds: &Self::Credentials,
        _bot: &patchbay_contract::BotRecord,
        _splits: &[Split],
    ) -> Option<String> {
        None
    }

    /// A token the platform gave with the split's event to answer it once, for a short time
    /// (LINE's reply token), and when it was issued: the ingress keeps it for the sender under
    /// the event's id ([`replies`]). `None` (the default): nothing to keep.
    fn reply_context(_split: &Split) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
        None
    }

    /// The id a payload names this channel by when one URL receives several channels'
    /// events (Meta: Page id, `phone_number_id`). `None` (the default): the platform posts
    /// each channel's events to its own URL only, and there is no per-app route.
    fn route_id(_creds: &Self::Credentials) -> Option<String> {
        None
    }

    /// For platforms whose credentials do not name the channel's route id but whose setup at
    /// the platform learns it (LINE: the bot's user id, every webhook's `destination`): reads
    /// it from the channel's setup record (`platform_config`). The ingress then drops what a
    /// payload routes elsewhere; until the setup has it, every route is the channel's.
    const ROUTE_OF_SETUP: Option<fn(&serde_json::Value) -> Option<String>> = None;
}

/// What the platform said when a message was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// The platform's id of the (first) message it created.
    pub platform_message_id: Option<String>,
    /// For a file the bot uploaded (`media_id`) sent by its URL on a platform that names the
    /// file once it has fetched it ([`MediaReferences::Learned`], Telegram's `file_id`): that
    /// name, which the sender gives as `file_id` in later sends of the file through the
    /// channel.
    pub media_reference: Option<String>,
}

/// How a platform is given a file the bot uploaded to Patchbay (`POST /v1/media`) again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaReferences {
    /// By its URL, every time: the platform fetches it.
    Url,
    /// Uploaded once ([`OutboundAdapter::upload_media`]); the platform's reference is usable
    /// this long (WhatsApp's media ids, WeChat's temporary media).
    Uploaded(Duration),
    /// By URL the first time; the platform's answer names the file ([`Sent::media_reference`]),
    /// and that name is usable this long (Telegram's `file_id`).
    Learned(Duration),
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again later (429, 5xx, timeouts, connection errors).
    #[error("retryable: {reason}")]
    Retryable {
        /// Why.
        reason: String,
        /// When, if the platform said (`retry_after`).
        after: Option<Duration>,
    },
    /// It will never work (blocked, bad token, invalid request, unsupported content).
    #[error("permanent: {0:?}")]
    Permanent(DeliveryError),
}

impl SendError {
    /// A permanent failure with Patchbay's `code`.
    pub fn permanent(code: &str, message: impl Into<String>, platform_code: Option<i64>) -> Self {
        SendError::Permanent(DeliveryError {
            code: code.to_owned(),
            message: message.into(),
            platform_code,
        })
    }
}

/// The platform API of one channel.
#[derive(Debug, Clone)]
pub struct Target<'a, C> {
    /// The channel's opened credentials.
    pub credentials: &'a C,
    /// The API's base URL (the channel's override or the configured default).
    pub base_url: &'a str,
}

/// How fast a platform may be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sends per second per channel (a bot, a page, a phone number).
    pub per_channel_per_second: u32,
    /// Sends per second per conversation (a chat).
    pub per_conversation_per_second: u32,
    /// Sends a conversation may get at once before the pace applies.
    pub per_conversation_burst: u32,
}

/// A platform call that sends one message to many users at once (LINE's multicast, Viber's
/// `broadcast_message`), for broadcasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSend {
    /// Recipients per call at most.
    pub max_recipients: usize,
}

/// One message for many users, as [`OutboundAdapter::send_many`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The batch's id, the same every time it is tried: a platform that takes an idempotency
    /// key (LINE's `X-Line-Retry-Key`) derives it from this, so a retry is not sent twice.
    pub id: &'a str,
    /// The bot sending it.
    pub bot_id: &'a str,
    /// What every recipient gets.
    pub content: &'a patchbay_contract::Content,
    /// The recipients' addresses at the platform, at most [`BulkSend::max_recipients`].
    pub addresses: &'a [String],
}

/// What a bulk call did for each address of its [`Batch`], in the batch's order.
pub type BulkSent = Vec<Result<Sent, SendError>>;

/// The outbound face of a messenger.
pub trait OutboundAdapter: Send + Sync + 'static {
    /// Which messenger.
    const PLATFORM: Platform;
    /// Its credentials.
    type Credentials: DeserializeOwned + Send + Sync;

    /// What the platform can show natively.
    fn capabilities(&self) -> &Capabilities;

    /// The default API base URL from the configuration.
    fn default_base_url(&self) -> &str;

    /// The platform's pace.
    fn limits(&self) -> Limits;

    /// Sends one message (after [`degrade`], possibly several platform calls).
    fn send(
        &self,
        target: Target<'_, Self::Credentials>,
        job: &OutboundJob,
    ) -> impl Future<Output = Result<Sent, SendError>> + Send;

    /// The platform's bulk call, when it has one ([`OutboundAdapter::send_many`]).
    const BULK: Option<BulkSend> = None;

    /// Sends `batch`'s content to each of its addresses with the platform's bulk call
    /// ([`OutboundAdapter::BULK`]): what happened to each address, in order. An error is the
    /// batch's as a whole (nothing sent, or a retry of the same batch is due); an address the
    /// platform refused on its own fails alone. Platforms without a bulk call keep the
    /// default: `unsupported`.
    fn send_many(
        &self,
        target: Target<'_, Self::Credentials>,
        batch: Batch<'_>,
    ) -> impl Future<Output = Result<BulkSent, SendError>> + Send {
        let _ = (target, batch);
        async {
            Err(SendError::permanent(
                "unsupported",
                format!(
                    "{} has no call that sends to many users at once",
                    Self::PLATFORM
                ),
                None,
            ))
        }
    }

    /// How the platform is given a file the bot uploaded again: the sender keeps the
    /// platform's reference per channel, shared by its replicas, for as long as it is usable
    /// (less a margin).
    const MEDIA_REFERENCES: MediaReferences = MediaReferences::Url;

    /// Uploads a file the bot uploaded to Patchbay (`POST /v1/media`) to the platform, for
    /// platforms that want files uploaded rather than fetched from a URL (WhatsApp, WeChat;
    /// [`MediaReferences::Uploaded`]):
    /// the platform's reference, which the send then gives as `file_id`. `None` (the default):
    /// the platform fetches `<public URL>/media/<bot>/<media id>` itself.
    fn upload_media(
        &self,
        target: Target<'_, Self::Credentials>,
        file: &media::Fetched,
        kind: spec::MediaKind,
        filename: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, SendError>> + Send {
        let _ = (target, file, kind, filename);
        async { Ok(None) }
    }

    /// The channel's profile at the platform (`GET /v1/channels/{id}/profile`), after
    /// applying `change` when there is one (`PATCH`: keys of the platform's profile, `null`
    /// removing one; an unknown key or a bad value is `invalid_request` naming it), read back
    /// from the platform. `ctx` fetches a picture given by URL. Platforms without profiles keep
    /// the default: `unsupported`.
    fn profile(
        &self,
        target: Target<'_, Self::Credentials>,
        change: Option<&serde_json::Map<String, serde_json::Value>>,
        ctx: media::Context<'_>,
    ) -> impl Future<Output = Result<serde_json::Map<String, serde_json::Value>, SendError>> + Send
    {
        let _ = (target, change, ctx);
        async {
            Err(SendError::permanent(
                "unsupported",
                format!(
                    "Patchbay cannot read or change the profile of {} channels yet",
                    Self::PLATFORM
                ),
                None,
            ))
        }
    }

    /// Downloads media a user sent (see [`media`]): by default the URL the webhook carried,
    /// through the guarded fetcher; platforms that give file ids override it. At most
    /// `ctx.max_bytes` (else `too_large`); `not_found` when the platform no longer has it.
    fn fetch_media(
        &self,
        target: Target<'_, Self::Credentials>,
        media: &patchbay_contract::content::Media,
        ctx: media::Context<'_>,
    ) -> impl Future<Output = Result<media::Fetched, SendError>> + Send {
        let _ = target;
        let url = media.url.clone();
        async move {
            match url {
                Some(url) => ctx.urls.get(&url, ctx.max_bytes).await,
                None => Err(SendError::permanent(
                    "not_found",
                    "the platform gave no URL for this media",
                    None,
                )),
            }
        }
    }
}
