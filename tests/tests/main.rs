//! The end-to-end suite: one test binary, one module per area, so the workspace links it once
//! rather than once per file (each link is ~140 MB and ten seconds on a small machine).
//! nextest still runs every test in its own process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod backpressure;
mod bot_settings;
mod botdistrikt;
mod brandchat;
mod broadcasts;
mod callback_retries;
mod channel_profiles;
mod chat_api;
mod codes;
mod console;
mod contact_fields;
mod cross_tenant;
mod custom_channels;
mod deliveries;
mod edges;
mod handover;
mod ingress_and_faults;
mod isolation;
mod journey;
mod kik_e2e;
mod line_e2e;
mod master_key;
mod media;
mod messenger_e2e;
mod nats_access;
mod ordering;
mod outbound_isolation;
mod partner_apps;
mod rate_limits;
mod scale_out;
mod scoped_keys;
mod telegram_e2e;
mod templates;
mod tokens;
mod uchat;
mod viber_e2e;
mod web1on1;
mod wechat_e2e;
mod whatsapp_e2e;
mod windows;
