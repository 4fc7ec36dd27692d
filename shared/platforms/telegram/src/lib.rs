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
use patchbay_platform::spec::{
    self, CredentialField, FirstContact, MediaLimit, MediaLimits, PlatformSpec,
};

/// Telegram, as the registry lists it: bots may write to a chat at any time once its user
/// started the bot.
pub const SPEC: PlatformSpec = PlatformSpec {
    platform: Platform::Telegram,
    window: WindowPolicy::none(Platform::Telegram, "Telegram"),
    credentials: spec::as_given::<TelegramCredentials>,
    form: &[
        CredentialField::secret(
            "bot_token",
            "Bot token",
            "The token @BotFather gave the bot (123456:ABC-DEF…).",
        ),
        CredentialField::secret(
            "secret_token",
            "Webhook secret token",
            "1 to 256 of A-Z a-z 0-9 _ -: Telegram sends it back with every update.",
        ),
    ],
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
    try_it: Some(try_it),
    bulk: None,
};

/// The made-up user of the console's "try it" box (a private chat of the same id).
pub const TRY_IT_USER_ID: i64 = 777_000_001;

/// The console's "try it": `text` from [`TRY_IT_USER_ID`] as Telegram posts it, with the
/// channel's secret token.
fn try_it(credentials: &serde_json::Value, text: &str, seq: u64) -> Result<spec::TryIt, String> {
    let c: TelegramCredentials =
        serde_json::from_value(credentials.clone()).map_err(|e| e.to_string())?;
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Update and message ids within Telegram's range (a signed 32-bit update id).
    let id = seq % 2_000_000_000;
    let body = serde_json::json!({
        "update_id": id,
        "message": {
            "message_id": id,
            "from": {"id": TRY_IT_USER_ID, "is_bot": false, "first_name": "Try", "last_name": "It"},
            "chat": {"id": TRY_IT_USER_ID, "type": "private", "first_name": "Try"},
            "date": date,
            "text": text,
        },
    });
    Ok(spec::TryIt {
        headers: vec![
            ("content-type", "application/json".into()),
            (inbound::SECRET_HEADER, c.secret_token),
        ],
        body: body.to_string(),
    })
}
