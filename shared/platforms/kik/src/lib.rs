//! Kik bot API adapter (historic: `reference/platforms.md` §5, §9, §10). Kik closed its public
//! bot platform to third parties in 2019; this adapter speaks the documented HTTP API for
//! archival and compatibility installations (and for API-compatible servers, through a
//! channel's `api_base_url`).
//!
//! * [`inbound`]: `X-Kik-Signature` (HMAC-SHA1 of the raw body with the API key) and
//!   `X-Kik-Username` checks, one envelope per message of a `{"messages": [...]}` POST keyed by
//!   the message `id`, normalisation of every message type, profile enrichment;
//! * [`outbound`]: the content model rendered as `POST /v1/message` batches (at most 25
//!   messages per request and 5 per user), suggested-response keyboards, sender-chosen message
//!   ids, error classification, and `GET /v1/user/<username>` profiles;
//! * [`setup`]: the bot's configuration (`POST /v1/config`: the webhook URL and features),
//!   set when a channel appears or changes and read back (`GET /v1/config`);
//! * [`capabilities`]: what Kik shows natively;
//! * [`credentials`]: the bot's username and API key;
//! * [`SPEC`]: what the other services ask about Kik (no messaging window);
//! * [`fixtures`]: webhooks as Kik sends them, and their signature, for tests.

pub mod capabilities;
pub mod credentials;
pub mod fixtures;
#[cfg(test)]
mod fuzz;
pub mod inbound;
pub mod outbound;
pub mod setup;

pub use credentials::KikCredentials;
pub use inbound::Kik;
pub use outbound::KikSender;

use patchbay_contract::Platform;
use patchbay_contract::windows::WindowPolicy;
use patchbay_platform::InboundAdapter;
use patchbay_platform::spec::{
    self, CredentialField, FirstContact, MediaLimit, MediaLimits, PlatformSpec,
};

/// Kik, as the registry lists it: no time window (a bot may answer any user who messaged or
/// subscribed to it; Kik's per-user message bank is Kik's to enforce, and its refusal is
/// classified by the sender), and no way to reach someone who never wrote.
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Kik,
    window: WindowPolicy::none(Platform::Kik, "Kik"),
    credentials: spec::as_given::<KikCredentials>,
    form: &[
        CredentialField::text("username", "Bot username", "As dev.kik.com shows it."),
        CredentialField::secret("api_key", "API key", "The bot's API key from dev.kik.com."),
    ],
    normalise: <Kik as InboundAdapter>::normalise,
    webhook_path: |channel| spec::webhook_path_for(Platform::Kik, channel),
    first_contact: FirstContact::None,
    // Pictures and videos by URL; Kik has no audio or file messages.
    media: MediaLimits {
        image: Some(MediaLimit {
            max_bytes: spec::mib(25),
            types: &["image/jpeg", "image/png", "image/gif"],
        }),
        audio: None,
        video: Some(MediaLimit {
            max_bytes: spec::mib(25),
            types: &["video/mp4"],
        }),
        file: None,
    },
    settings: spec::no_settings,
    template: spec::no_template,
    try_it: None,
    bulk: None,
};
