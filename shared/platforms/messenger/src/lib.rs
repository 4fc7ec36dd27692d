//! Facebook Messenger Platform adapter (Graph API v25.0; `reference/platforms.md` §2).
//!
//! * [`inbound`]: `hub.*` handshake and `X-Hub-Signature-256` check (shared with WhatsApp in
//!   `patchbay_platform::meta`), one envelope per `messaging` event keyed by its `mid` (or the
//!   receipt's watermark), routed by Page id, and normalisation of messages, postbacks, quick
//!   replies, referrals, opt-ins and receipts;
//! * [`outbound`]: the content model rendered for the Send API, error classification, and
//!   the user profile lookup;
//! * [`capabilities`]: what Messenger shows natively;
//! * [`credentials`]: the Page, its access token, the app secret and the verify token;
//! * [`WINDOW`]: the 24-hour standard window, templates and human agents outside it;
//! * [`SPEC`]: what the other services ask about Messenger;
//! * [`fixtures`]: webhooks as Meta sends them, for tests.

pub mod capabilities;
pub mod credentials;
pub mod fixtures;
#[cfg(test)]
mod fuzz;
pub mod inbound;
pub mod outbound;
pub mod profile;

pub use credentials::MessengerCredentials;
pub use inbound::Messenger;
pub use outbound::MessengerSender;

use patchbay_contract::Platform;
use patchbay_contract::windows::{DAY, WindowPolicy};
use patchbay_platform::InboundAdapter;
use patchbay_platform::spec::{self, CredentialField, FirstContact, MediaLimits, PlatformSpec};

/// Messenger's 24-hour standard messaging window; outside it a human agent's messages
/// (`source: human`, sent with the `HUMAN_AGENT` tag) up to 7 days after the user's last
/// message. Meta's other ways past the window (utility-message templates, marketing messages
/// to users who opted in, one-time notifications) each need their own Page permission and
/// API that this sender does not use, so no template bridges the window here: a template, or a
/// fallback template, would only ever fail at the sender, and both are refused up front.
pub const WINDOW: WindowPolicy = WindowPolicy {
    platform: Platform::Messenger,
    window_secs: Some(DAY),
    templates_outside: false,
    human_agent_secs: Some(7 * DAY),
    reply_token_secs: None,
    per_inbound: None,
    billed_outside: false,
    billed_allowed: false,
    name: "Messenger's 24-hour standard messaging window",
};

/// Messenger, as the registry lists it.
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Messenger,
    window: WINDOW,
    credentials: spec::as_given::<MessengerCredentials>,
    form: &[
        CredentialField::text("page_id", "Page id", "The Facebook Page's id."),
        CredentialField::secret(
            "page_access_token",
            "Page access token",
            "A Page access token with pages_messaging.",
        ),
        CredentialField::secret(
            "app_secret",
            "App secret",
            "The Meta app's secret (App settings, Basic).",
        ),
        CredentialField::secret(
            "verify_token",
            "Verify token",
            "Any string; give the same in the Meta app's webhook settings.",
        ),
    ],
    normalise: <Messenger as InboundAdapter>::normalise,
    webhook_path: |channel| spec::webhook_path_for(Platform::Messenger, channel),
    first_contact: FirstContact::None,
    // Attachments by URL, up to 25 MB each.
    media: MediaLimits::any(spec::mib(25)),
    settings: spec::no_settings,
    template: spec::no_template,
    try_it: None,
    bulk: None,
};
