//! LINE Messaging API adapter (`reference/platforms.md` §6, §9, §10).
//!
//! * [`inbound`]: `x-line-signature` (Base64 HMAC-SHA256 of the raw body with the channel
//!   secret), the console's "Verify" body (no events: 200, nothing published), one envelope
//!   per event keyed by its `webhookEventId`, normalisation of messages, postbacks,
//!   follow/unfollow, group and room membership and unsend, profile enrichment, and the reply
//!   token kept for the sender;
//! * [`outbound`]: the content model rendered as LINE message objects (quick replies, buttons,
//!   confirm and carousel templates), sent with the reply API while the event's reply token
//!   is fresh and unused, else with push and an `X-Line-Retry-Key`, at most 5 messages per
//!   call; error classification; `GET /v2/bot/profile/{userId}` (and the group and room
//!   member forms);
//! * [`capabilities`]: what LINE shows natively;
//! * [`credentials`]: the channel secret and channel access token;
//! * [`SPEC`]: what the other services ask about LINE (no messaging window);
//! * [`fixtures`]: webhooks as LINE sends them, and their signature, for tests.

pub mod capabilities;
pub mod credentials;
pub mod fixtures;
#[cfg(test)]
mod fuzz;
pub mod inbound;
pub mod outbound;
pub mod setup;

pub use credentials::LineCredentials;
pub use inbound::Line;
pub use outbound::LineSender;

use patchbay_contract::Platform;
use patchbay_contract::windows::WindowPolicy;
use patchbay_platform::InboundAdapter;
use patchbay_platform::spec::{
    self, CredentialField, FirstContact, MediaLimit, MediaLimits, PlatformSpec,
};

/// LINE, as the registry lists it: no time window (a bot may push to any user who added it
/// as a friend and has not blocked it, and to the groups and rooms it is in; the monthly push
/// quota is LINE's to enforce, and its refusal is classified by the sender), and no way to
/// reach someone who never wrote.
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Line,
    window: WindowPolicy::none(Platform::Line, "LINE"),
    credentials: spec::as_given::<LineCredentials>,
    form: &[
        CredentialField::secret(
            "channel_secret",
            "Channel secret",
            "LINE Developers Console, Basic settings.",
        ),
        CredentialField::secret(
            "channel_access_token",
            "Channel access token",
            "LINE Developers Console, Messaging API.",
        ),
    ],
    normalise: <Line as InboundAdapter>::normalise,
    webhook_path: |channel| spec::webhook_path_for(Platform::Line, channel),
    first_contact: FirstContact::None,
    // Images by URL (JPEG, PNG; LINE takes originals up to 10 MB); video, audio and files go
    // out as text links, whatever their size.
    media: MediaLimits {
        image: Some(MediaLimit {
            max_bytes: spec::mib(10),
            types: &["image/jpeg", "image/png"],
        }),
        audio: Some(MediaLimit {
            max_bytes: spec::mib(100),
            types: &[],
        }),
        video: Some(MediaLimit {
            max_bytes: spec::mib(100),
            types: &[],
        }),
        file: Some(MediaLimit {
            max_bytes: spec::mib(100),
            types: &[],
        }),
    },
    settings: spec::no_settings,
    template: spec::no_template,
    try_it: None,
    bulk: Some(patchbay_platform::BulkSend {
        max_recipients: outbound::MULTICAST_MAX,
    }),
};
