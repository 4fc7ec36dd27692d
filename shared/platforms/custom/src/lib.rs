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

pub mod api;
pub mod inbound;
pub mod outbound;
pub mod token;

pub use outbound::CustomSender;
