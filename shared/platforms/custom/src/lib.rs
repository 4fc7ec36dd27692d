//! Custom channels: a bot in a mobile app, on a device or in the tenant's own web chat, as
//! BotDistrikt's and UChat's custom channels do. There is no platform API on the other side:
//!
//! * the app registers its users with the channel's secret **domain key** and gets an
//!   unguessable **user token** for each ([`token`]);
//! * it sends a user's message with that token; `ingress-custom` publishes it as an envelope
//!   ([`inbound::CustomBody`]) and waits a bounded time for the bot's replies;
//! * the sender ([`outbound::CustomSender`]) announces every message for a user to a waiting
//!   request and pushes it to the channel's event webhook, signed per Standard Webhooks, with
//!   `X-Patchbay-Source: bot|human|broadcast` and `X-Patchbay-Source-Id`.

//!
//! [`credentials`] completes what the operator gives with generated secrets; [`SPEC`] is what
//! the other services ask about custom channels (no window; contacts reached by e-mail or
//! phone; users' messages arrive at `/v1/custom/{channel_id}`).

pub mod api;
pub mod botdistrikt;
pub mod credentials;
#[cfg(test)]
mod fuzz;
pub mod inbound;
pub mod outbound;
pub mod registration;
pub mod token;
pub mod uchat;
pub mod users;

pub use credentials::{CustomChannelInput, CustomCredentials, CustomFlavour};
pub use outbound::CustomSender;

use patchbay_contract::Platform;
use patchbay_contract::windows::WindowPolicy;
use patchbay_platform::spec::{self, CredentialField, FirstContact, MediaLimits, PlatformSpec};

/// Custom channels, as the registry lists them.
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Custom,
    window: WindowPolicy::none(Platform::Custom, "custom channels"),
    credentials: credentials::complete,
    form: &[
        CredentialField::text(
            "event_webhook_url",
            "Event webhook URL",
            "Where the channel's app gets the bot's messages (optional).",
        )
        .optional(),
        CredentialField::text(
            "token_ttl_seconds",
            "User token lifetime (seconds)",
            "How long a user's token lives; the default when empty.",
        )
        .optional()
        .number(),
        CredentialField::text(
            "require_signed_registration",
            "Signed registrations only",
            "Every user registration needs the back end's proof.",
        )
        .flag(),
    ],
    normalise: inbound::normalise,
    webhook_path: |channel| format!("/v1/custom/{channel}"),
    first_contact: FirstContact::EmailOrPhone,
    // The app downloads what the bot sends.
    media: MediaLimits::any(spec::mib(100)),
    settings: spec::no_settings,
    template: spec::no_template,
    try_it: None,
    bulk: None,
};
