//! WhatsApp Business Cloud API adapter (Graph API v25.0; `reference/platforms.md` §3).
//!
//! * [`inbound`]: `hub.*` handshake and `X-Hub-Signature-256` check (shared with Messenger in
//!   `patchbay_platform::meta`), one envelope per message or status keyed by its `wamid`,
//!   routed by `phone_number_id`, and normalisation of messages, replies and statuses;
//! * [`outbound`]: the content model (templates included) rendered as Cloud API messages, and
//!   error classification (also used for the errors of `failed` statuses);
//! * [`capabilities`]: what WhatsApp shows natively.
//!
//! Identity: a user is their business-scoped user id (BSUID, `contacts[].user_id` /
//! `from_user_id`, sent since April 2026) or, in payloads without one, their `wa_id`, always
//! within the channel (one `phone_number_id`). The address replies go to is the phone number
//! when the payload has one, else the BSUID (users with a username may have no number).

pub mod capabilities;
pub mod inbound;
pub mod outbound;

pub use inbound::Whatsapp;
pub use outbound::WhatsappSender;
pub use patchbay_contract::credentials::WhatsappCredentials;
