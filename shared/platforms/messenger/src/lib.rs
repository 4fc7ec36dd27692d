//! Facebook Messenger Platform adapter (Graph API v25.0; `reference/platforms.md` §2).
//!
//! * [`inbound`]: `hub.*` handshake and `X-Hub-Signature-256` check (shared with WhatsApp in
//!   `patchbay_platform::meta`), one envelope per `messaging` event keyed by its `mid` (or the
//!   receipt's watermark), routed by Page id, and normalisation of messages, postbacks, quick
//!   replies, referrals, opt-ins and receipts;
//! * [`outbound`]: the content model rendered for the Send API, error classification, and
//!   the user profile lookup;
//! * [`capabilities`]: what Messenger shows natively.

pub mod capabilities;
pub mod inbound;
pub mod outbound;

pub use inbound::Messenger;
pub use outbound::MessengerSender;
pub use patchbay_contract::credentials::MessengerCredentials;
