//! Telegram Bot API adapter (Bot API 10.1; `reference/platforms.md` §1).
//!
//! * [`inbound`]: `X-Telegram-Bot-Api-Secret-Token` check, one envelope per `Update` keyed by
//!   `update_id`, and normalisation of messages, button presses and block/unblock;
//! * [`outbound`]: rendering of the content model to `send*` methods and error classification;
//! * [`capabilities`]: what Telegram shows natively;
//! * [`credentials`]: the bot token and the webhook's secret token;
//! * [`SPEC`]: what the other services ask about Telegram (no messaging window);
//! * [`fixtures`]: updates as Telegram sends them, for tests.

pub mod capabilities;
pub mod credentials;
pub mod fixtures;
#[cfg(test)]
mod fuzz;
pub mod inbound;
pub mod outbound;
pub mod profile;

pub use credentials::TelegramCredentials;
pub use inbound::Telegram;
pub use outbound::TelegramSender;

use patchbay_contract::Platform;
use patchbay_contract::windows::WindowPolicy;
use patchbay_platform::InboundAdapter;
use patchbay_platform::spec::{self, FirstContact, MediaLimit, MediaLimits, PlatformSpec};

/// Telegram, as the registry lists it: bots may write to a chat at any time once its user
/// started the bot.
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Telegram,
    window: WindowPolicy::none(Platform::Telegram, "Telegram"),
    credentials: spec::as_given::<TelegramCredentials>,
    normalise: <Telegram as InboundAdapter>::normalise,
    webhook_path: |channel| spec::webhook_path_for(Platform::Telegram, channel),
    first_contact: FirstContact::None,
    media: MediaLimits {
        // Sent by URL: Telegram fetches photos up to 5 MB and other files up to 20 MB.
        image: Some(MediaLimit {
            max_bytes: spec::mib(5),
            types: &["image/jpeg", "image/png", "image/gif", "image/webp"],
        }),
        audio: Some(MediaLimit {
            max_bytes: spec::mib(20),
            types: &["audio/mpeg", "audio/mp4", "audio/ogg"],
        }),
        video: Some(MediaLimit {
            max_bytes: spec::mib(20),
            types: &["video/mp4"],
        }),
        file: Some(MediaLimit {
            max_bytes: spec::mib(20),
            types: &[],
        }),
    },
    settings: spec::no_settings,
    template: spec::no_template,
};
