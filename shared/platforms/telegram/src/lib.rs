//! Telegram Bot API adapter (Bot API 10.1; `reference/platforms.md` §1).
//!
//! * [`inbound`]: `X-Telegram-Bot-Api-Secret-Token` check, one envelope per `Update` keyed by
//!   `update_id`, and normalisation of messages, button presses and block/unblock;
//! * [`outbound`]: rendering of the content model to `send*` methods and error classification;
//! * [`capabilities`]: what Telegram shows natively.

pub mod capabilities;
pub mod inbound;
pub mod outbound;

pub use inbound::Telegram;
pub use outbound::TelegramSender;
pub use patchbay_contract::credentials::TelegramCredentials;
