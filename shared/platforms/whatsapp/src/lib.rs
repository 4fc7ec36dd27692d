//! WhatsApp Business Cloud API adapter (Graph API v25.0; `reference/platforms.md` §3).
//!
//! * [`inbound`]: `hub.*` handshake and `X-Hub-Signature-256` check (shared with Messenger in
//!   `patchbay_platform::meta`), one envelope per message or status keyed by its `wamid`,
//!   routed by `phone_number_id`, and normalisation of messages, replies and statuses;
//! * [`outbound`]: the content model (templates included) rendered as Cloud API messages, and
//!   error classification (also used for the errors of `failed` statuses);
//! * [`capabilities`]: what WhatsApp shows natively;
//! * [`credentials`]: the phone number id, its access token, the app secret and the verify
//!   token;
//! * [`WINDOW`]: the 24-hour customer-service window, templates outside it;
//! * [`SPEC`]: what the other services ask about WhatsApp (a phone number reaches a new
//!   contact);
//! * [`fixtures`]: webhooks as Meta sends them, for tests.
//!
//! Identity: a user is their business-scoped user id (BSUID, `contacts[].user_id` /
//! `from_user_id`, sent since April 2026) or, in payloads without one, their `wa_id`, always
//! within the channel (one `phone_number_id`). The address replies go to is the phone number
//! when the payload has one, else the BSUID (users with a username may have no number).

pub mod capabilities;
pub mod credentials;
pub mod fixtures;
#[cfg(test)]
mod fuzz;
pub mod inbound;
pub mod outbound;
pub mod profile;

pub use credentials::WhatsappCredentials;
pub use inbound::Whatsapp;
pub use outbound::WhatsappSender;

use patchbay_contract::Platform;
use patchbay_contract::windows::{DAY, WindowPolicy};
use patchbay_platform::InboundAdapter;
use patchbay_platform::spec::{
    self, CredentialField, FirstContact, MediaLimit, MediaLimits, PlatformSpec,
};

/// WhatsApp's 24-hour customer-service window; templates only outside it.
pub const WINDOW: WindowPolicy = WindowPolicy {
    platform: Platform::Whatsapp,
    window_secs: Some(DAY),
    templates_outside: true,
    human_agent_secs: None,
    reply_token_secs: None,
    per_inbound: None,
    billed_outside: false,
    billed_allowed: false,
    name: "WhatsApp's 24-hour customer-service window",
};

/// WhatsApp, as the registry lists it: a phone number reaches a contact who never wrote (with
/// a template, since the window is closed).
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Whatsapp,
    window: WINDOW,
    credentials: spec::as_given::<WhatsappCredentials>,
    form: &[
        CredentialField::text(
            "phone_number_id",
            "Phone number id",
            "The business phone number's id (WhatsApp Manager, API setup).",
        ),
        CredentialField::secret(
            "access_token",
            "Access token",
            "A system-user or business-integration access token.",
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
    normalise: <Whatsapp as InboundAdapter>::normalise,
    webhook_path: |channel| spec::webhook_path_for(Platform::Whatsapp, channel),
    first_contact: FirstContact::Phone,
    media: MediaLimits {
        image: Some(MediaLimit {
            max_bytes: spec::mib(5),
            types: &["image/jpeg", "image/png"],
        }),
        audio: Some(MediaLimit {
            max_bytes: spec::mib(16),
            types: &[
                "audio/aac",
                "audio/amr",
                "audio/mpeg",
                "audio/mp4",
                "audio/ogg",
            ],
        }),
        video: Some(MediaLimit {
            max_bytes: spec::mib(16),
            types: &["video/mp4", "video/3gpp"],
        }),
        file: Some(MediaLimit {
            max_bytes: spec::mib(100),
            types: &[],
        }),
    },
    settings: spec::no_settings,
    template: registry_template,
    try_it: None,
    bulk: None,
};

/// A registry template's WhatsApp form: the approved template it names.
fn registry_template(
    def: &patchbay_contract::templates::TemplateDef,
) -> Option<patchbay_contract::content::Template> {
    def.whatsapp.clone()
}
