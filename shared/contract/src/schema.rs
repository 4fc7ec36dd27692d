//! JSON Schemas of every wire type and the AsyncAPI 3 catalogue of every subject, generated
//! from the Rust types. `proto-schemas/` holds the checked-in copy; the snapshot test below
//! fails when it differs from what the code generates (`make schemas` rewrites it).

use schemars::{JsonSchema, schema_for};

use crate::wire::*;

/// How a payload travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Published to a JetStream stream.
    Stream {
        /// The subject pattern, with `<p>` for the prefix and `{param}` placeholders.
        subject: &'static str,
        /// Stream name suffix.
        stream: &'static str,
        /// The service that publishes it.
        producer: &'static str,
        /// The service that consumes it.
        consumer: &'static str,
    },
    /// A value in a key-value bucket.
    KeyValue {
        /// Bucket suffix.
        bucket: &'static str,
        /// Key pattern.
        key: &'static str,
    },
    /// A core NATS message (not stored; best effort).
    Core {
        /// The subject pattern.
        subject: &'static str,
        /// The services that publish it.
        producer: &'static str,
        /// The service that listens.
        consumer: &'static str,
    },
    /// A request or reply body.
    Rpc {
        /// The subject pattern.
        subject: &'static str,
    },
    /// An HTTP body exchanged with tenants.
    Http {
        /// Where it appears.
        usage: &'static str,
    },
}

/// One documented payload.
pub struct Payload {
    /// File stem in `proto-schemas/`, e.g. `send_command.v1`.
    pub name: &'static str,
    /// One line about it.
    pub summary: &'static str,
    /// Where it travels.
    pub transport: Transport,
    /// Its JSON Schema as pretty JSON.
    pub schema: String,
}

fn payload<T: JsonSchema>(
    name: &'static str,
    summary: &'static str,
    transport: Transport,
) -> Payload {
    let schema = serde_json::to_string_pretty(&schema_for!(T)).unwrap_or_default();
    Payload {
        name,
        summary,
        transport,
        schema,
    }
}

/// Every payload of the contract.
pub fn payloads() -> Vec<Payload> {
    use Transport::*;
    vec![
        payload::<IngressEnvelope>(
            "ingress_envelope.v1",
            "A platform webhook as received, after its signature was checked.",
            Stream {
                subject: "<p>.ingress.{platform}.{channel_id}",
                stream: "INGRESS",
                producer: "ingress-<platform>",
                consumer: "normaliser",
            },
        ),
        payload::<InboundEvent>(
            "inbound_event.v1",
            "A canonical inbound event, before user and conversation are resolved.",
            Stream {
                subject: "<p>.inbound.{bot_id}",
                stream: "INBOUND",
                producer: "normaliser",
                consumer: "bot-router",
            },
        ),
        payload::<SendCommand>(
            "send_command.v1",
            "Send messages to one user; any NATS client may publish it.",
            Stream {
                subject: "<p>.send.{bot_id}",
                stream: "SEND",
                producer: "api, webhook-dispatcher (inline replies), any internal client",
                consumer: "bot-router",
            },
        ),
        payload::<OutboundJob>(
            "outbound_job.v1",
            "One message for one platform and channel.",
            Stream {
                subject: "<p>.outbound.{platform}.{channel_id}",
                stream: "OUTBOUND",
                producer: "bot-router",
                consumer: "outbound-<platform>",
            },
        ),
        payload::<OutboundJob>(
            "bulk_job.v1",
            "One message of a broadcast for one platform and channel (an outbound job with \
             `source: broadcast`), paced behind the channel's outbound jobs.",
            Stream {
                subject: "<p>.bulk.{platform}.{channel_id}",
                stream: "BULK",
                producer: "bot-router",
                consumer: "outbound-<platform>",
            },
        ),
        payload::<StatusEvent>(
            "status_event.v1",
            "The result of one platform call.",
            Stream {
                subject: "<p>.status.{bot_id}",
                stream: "STATUS",
                producer: "outbound-<platform>",
                consumer: "bot-router",
            },
        ),
        payload::<DispatchJob>(
            "dispatch_job.v1",
            "An event to deliver to the bot's callback URL.",
            Stream {
                subject: "<p>.dispatch.{bot_id}",
                stream: "DISPATCH",
                producer: "bot-router",
                consumer: "webhook-dispatcher",
            },
        ),
        payload::<BotRecord>(
            "bot_record.v1",
            "A bot's current configuration.",
            KeyValue {
                bucket: "config",
                key: "bot.{bot_id}",
            },
        ),
        payload::<ChannelRecord>(
            "channel_record.v1",
            "A channel's current configuration, secrets sealed.",
            KeyValue {
                bucket: "config",
                key: "channel.{channel_id}",
            },
        ),
        payload::<ApiKeyRecord>(
            "api_key_record.v1",
            "An API key, found by the SHA-256 hex of the key.",
            KeyValue {
                bucket: "config",
                key: "apikey.{sha256_hex}",
            },
        ),
        payload::<CreateBotRequest>(
            "create_bot_request.v1",
            "Create a bot (admin).",
            Rpc {
                subject: "<p>.rpc.auth.create_bot",
            },
        ),
        payload::<RpcReply<CreatedBot>>(
            "create_bot_reply.v1",
            "The new bot, or an error.",
            Rpc {
                subject: "<p>.rpc.auth.create_bot (reply)",
            },
        ),
        payload::<CreateChannelRequest>(
            "create_channel_request.v1",
            "Connect a bot to a messenger account (admin).",
            Rpc {
                subject: "<p>.rpc.auth.create_channel",
            },
        ),
        payload::<RpcReply<CreatedChannel>>(
            "create_channel_reply.v1",
            "The new channel, or an error.",
            Rpc {
                subject: "<p>.rpc.auth.create_channel (reply)",
            },
        ),
        payload::<WebhookStateRequest>(
            "webhook_state_request.v1",
            "Disable (after 410 Gone) or re-enable a bot's callback endpoint.",
            Rpc {
                subject: "<p>.rpc.auth.disable_webhook | <p>.rpc.auth.enable_webhook",
            },
        ),
        payload::<UpdateWebhookRequest>(
            "update_webhook_request.v1",
            "Change a bot's callback settings; a new URL is verified first.",
            Rpc {
                subject: "<p>.rpc.auth.update_webhook",
            },
        ),
        payload::<RotateRequest>(
            "rotate_request.v1",
            "Rotate a bot's API key or webhook secret, with an overlap.",
            Rpc {
                subject: "<p>.rpc.auth.rotate_key | <p>.rpc.auth.rotate_secret",
            },
        ),
        payload::<RpcReply<RotatedKey>>(
            "rotate_key_reply.v1",
            "The new API key, or an error.",
            Rpc {
                subject: "<p>.rpc.auth.rotate_key (reply)",
            },
        ),
        payload::<RpcReply<RotatedSecret>>(
            "rotate_secret_reply.v1",
            "The new webhook secret, or an error.",
            Rpc {
                subject: "<p>.rpc.auth.rotate_secret (reply)",
            },
        ),
        payload::<RevokeKeyRequest>(
            "revoke_key_request.v1",
            "Revoke one API key at once.",
            Rpc {
                subject: "<p>.rpc.auth.revoke_key",
            },
        ),
        payload::<BotStateRequest>(
            "bot_state_request.v1",
            "Enable or disable a bot.",
            Rpc {
                subject: "<p>.rpc.auth.set_bot_state",
            },
        ),
        payload::<ChannelStateRequest>(
            "channel_state_request.v1",
            "Enable or disable one of a bot's channels.",
            Rpc {
                subject: "<p>.rpc.auth.set_channel_state",
            },
        ),
        payload::<CreateTenantRequest>(
            "create_tenant_request.v1",
            "Create a tenant (admin).",
            Rpc {
                subject: "<p>.rpc.auth.create_tenant",
            },
        ),
        payload::<RpcReply<Vec<Tenant>>>(
            "list_tenants_reply.v1",
            "Every tenant, or an error.",
            Rpc {
                subject: "<p>.rpc.auth.list_tenants (reply)",
            },
        ),
        payload::<ListBotsRequest>(
            "list_bots_request.v1",
            "List bots, of one tenant or all (admin).",
            Rpc {
                subject: "<p>.rpc.auth.list_bots",
            },
        ),
        payload::<RpcReply<Vec<BotSummary>>>(
            "list_bots_reply.v1",
            "The bots, or an error.",
            Rpc {
                subject: "<p>.rpc.auth.list_bots (reply)",
            },
        ),
        payload::<VerifyEndpointRequest>(
            "verify_endpoint_request.v1",
            "Check that a callback URL echoes the subscription challenge.",
            Rpc {
                subject: "<p>.rpc.dispatcher.verify_endpoint",
            },
        ),
        payload::<ListDeliveriesRequest>(
            "list_deliveries_request.v1",
            "List a bot's deliveries, newest first.",
            Rpc {
                subject: "<p>.rpc.dispatcher.list_deliveries",
            },
        ),
        payload::<RpcReply<DeliveryPage>>(
            "list_deliveries_reply.v1",
            "A page of deliveries, or an error.",
            Rpc {
                subject: "<p>.rpc.dispatcher.list_deliveries (reply)",
            },
        ),
        payload::<DeliveryRef>(
            "delivery_ref.v1",
            "One delivery: for get_delivery and retry_delivery.",
            Rpc {
                subject: "<p>.rpc.dispatcher.get_delivery | <p>.rpc.dispatcher.retry_delivery",
            },
        ),
        payload::<RpcReply<DeliveryDetail>>(
            "get_delivery_reply.v1",
            "A delivery with its event and attempts, or an error.",
            Rpc {
                subject: "<p>.rpc.dispatcher.get_delivery (reply)",
            },
        ),
        payload::<ReplayRequest>(
            "replay_request.v1",
            "Deliver a bot's dead-lettered events again.",
            Rpc {
                subject: "<p>.rpc.dispatcher.replay_deliveries",
            },
        ),
        payload::<GetUserRequest>(
            "get_user_request.v1",
            "Look up one user of a bot.",
            Rpc {
                subject: "<p>.rpc.router.get_user",
            },
        ),
        payload::<RpcReply<UserProfile>>(
            "get_user_reply.v1",
            "The user's profile, or an error.",
            Rpc {
                subject: "<p>.rpc.router.get_user (reply)",
            },
        ),
        payload::<FindNumberedUserRequest>(
            "find_numbered_user_request.v1",
            "Look up a bot's user by BrandChat's numeric user id.",
            Rpc {
                subject: "<p>.rpc.router.find_numbered_user",
            },
        ),
        payload::<UpsertContactRequest>(
            "upsert_contact_request.v1",
            "Find a bot's user by phone or e-mail, or create one on a channel.",
            Rpc {
                subject: "<p>.rpc.router.upsert_contact",
            },
        ),
        payload::<RpcReply<UpsertedContact>>(
            "upsert_contact_reply.v1",
            "The user and conversation found or created, or an error.",
            Rpc {
                subject: "<p>.rpc.router.upsert_contact (reply)",
            },
        ),
        payload::<HistoryRequest>(
            "history_request.v1",
            "A page of one conversation's messages, newest first.",
            Rpc {
                subject: "<p>.rpc.router.history",
            },
        ),
        payload::<RpcReply<HistoryPage>>(
            "history_reply.v1",
            "The page, or an error.",
            Rpc {
                subject: "<p>.rpc.router.history (reply)",
            },
        ),
        payload::<CustomReply>(
            "custom_reply.v1",
            "A message a custom channel delivers to its user (also the body pushed to the channel's event webhook).",
            Core {
                subject: "<p>.custom.replies.{channel_id}.{user_id}",
                producer: "outbound-custom",
                consumer: "ingress-custom (a request waiting for the user's replies)",
            },
        ),
        payload::<CustomOutcome>(
            "custom_outcome.v1",
            "What became of a custom channel's event at the tenant.",
            Core {
                subject: "<p>.custom.outcome.{event_id}",
                producer: "webhook-dispatcher, bot-router",
                consumer: "ingress-custom (a request waiting for the event's replies)",
            },
        ),
        payload::<SetUserFieldsRequest>(
            "set_user_fields_request.v1",
            "Set or remove contact fields of a bot's user (`null` removes); answered with the \
             user's profile (`get_user_reply.v1`), 404 for no such user, 422 past a limit.",
            Rpc {
                subject: "<p>.rpc.router.set_user_fields",
            },
        ),
        payload::<SearchUsersRequest>(
            "search_users_request.v1",
            "A page of a bot's users whose contact fields hold every given value.",
            Rpc {
                subject: "<p>.rpc.router.search_users",
            },
        ),
        payload::<RpcReply<UserPage>>(
            "search_users_reply.v1",
            "The page, or an error.",
            Rpc {
                subject: "<p>.rpc.router.search_users (reply)",
            },
        ),
        payload::<TemplateRequest>(
            "template_request.v1",
            "An operation on a bot's template registry (create, list, get, replace, delete).",
            Rpc {
                subject: "<p>.rpc.router.templates",
            },
        ),
        payload::<RpcReply<crate::templates::StoredTemplate>>(
            "template_reply.v1",
            "The template (a list of them for list, null for delete), or an error.",
            Rpc {
                subject: "<p>.rpc.router.templates (reply)",
            },
        ),
        payload::<crate::broadcasts::BroadcastRequest>(
            "broadcast_request.v1",
            "An operation on a bot's broadcasts (create, get, list, control).",
            Rpc {
                subject: "<p>.rpc.router.broadcasts",
            },
        ),
        payload::<RpcReply<crate::broadcasts::Broadcast>>(
            "broadcast_reply.v1",
            "The broadcast (a page of them, `broadcast_page`, for list), or an error.",
            Rpc {
                subject: "<p>.rpc.router.broadcasts (reply)",
            },
        ),
        payload::<crate::wire::InboxRequest>(
            "inbox_request.v1",
            "A bot's conversations as an agent's inbox.",
            Rpc {
                subject: "<p>.rpc.router.inbox",
            },
        ),
        payload::<RpcReply<crate::wire::InboxEntry>>(
            "inbox_reply.v1",
            "The conversations (a list of entries), waiting ones first, or an error.",
            Rpc {
                subject: "<p>.rpc.router.inbox (reply)",
            },
        ),
        payload::<crate::wire::JourneyRequest>(
            "journey_request.v1",
            "A message of a bot with what the router knows of its journey.",
            Rpc {
                subject: "<p>.rpc.router.journey",
            },
        ),
        payload::<RpcReply<crate::wire::JourneyRecord>>(
            "journey_reply.v1",
            "The message, when its event was stored, the bot's inline replies, or an error.",
            Rpc {
                subject: "<p>.rpc.router.journey (reply)",
            },
        ),
        payload::<crate::wire::HandoverRequest>(
            "handover_request.v1",
            "Pass a conversation to a human agent or back to the bot.",
            Rpc {
                subject: "<p>.rpc.router.handover",
            },
        ),
        payload::<RpcReply<crate::wire::ConversationState>>(
            "handover_reply.v1",
            "Who answers the conversation since when, or an error (404 for another bot's).",
            Rpc {
                subject: "<p>.rpc.router.handover (reply)",
            },
        ),
        payload::<crate::partners::PartnerRequest>(
            "partner_request.v1",
            "An operation on partners, their apps and the apps' installations (sealed both \
             ways: partner keys, app secrets and access tokens cross it).",
            Rpc {
                subject: "<p>.rpc.auth.partners",
            },
        ),
        payload::<RpcReply<crate::partners::Installation>>(
            "partner_reply.v1",
            "What the operation answers (an installation for enable; a partner, an app, a \
             list of them, an access token or null for the others), or an error.",
            Rpc {
                subject: "<p>.rpc.auth.partners (reply)",
            },
        ),
        payload::<crate::wire::AgentRequest>(
            "agent_request.v1",
            "Invite, list or revoke a bot's human agents (sealed both ways: invites cross it).",
            Rpc {
                subject: "<p>.rpc.auth.agents",
            },
        ),
        payload::<RpcReply<crate::wire::Agent>>(
            "agent_reply.v1",
            "The agent with its invite (invite), a list of agents (list), null (revoke), or an \
             error.",
            Rpc {
                subject: "<p>.rpc.auth.agents (reply)",
            },
        ),
        payload::<crate::wire::ApiChatRequest>(
            "api_chat_request.v1",
            "Read, set or remove a bot's API chat webhook (UChat's API chat channel); sealed \
             both ways: the verification key crosses it.",
            Rpc {
                subject: "<p>.rpc.auth.api_chat",
            },
        ),
        payload::<RpcReply<crate::wire::ApiChat>>(
            "api_chat_reply.v1",
            "The API chat channel with its webhook (null after remove), or an error.",
            Rpc {
                subject: "<p>.rpc.auth.api_chat (reply)",
            },
        ),
        payload::<crate::wire::ApiCall>(
            "api_call.v1",
            "One request to the HTTP API over NATS, with the caller's own credential: the \
             console's requests (sealed both ways).",
            Rpc {
                subject: "<p>.rpc.api.http",
            },
        ),
        payload::<RpcReply<crate::wire::ApiAnswer>>(
            "api_answer.v1",
            "The API's status and JSON body, or an error (a request that is no HTTP request).",
            Rpc {
                subject: "<p>.rpc.api.http (reply)",
            },
        ),
        payload::<crate::wire::ChannelProfileRequest>(
            "channel_profile_request.v1",
            "Read (and first change) a channel's profile at its platform, answered by the \
             platform's sender.",
            Rpc {
                subject: "<p>.rpc.outbound-<platform>.channel_profile",
            },
        ),
        payload::<RpcReply<crate::wire::ChannelProfile>>(
            "channel_profile_reply.v1",
            "The profile as the platform has it now, or an error (the platform's own reported).",
            Rpc {
                subject: "<p>.rpc.outbound-<platform>.channel_profile (reply)",
            },
        ),
        payload::<TokenRequest>(
            "token_request.v1",
            "Exchange a bot's API key, or a refresh token, for an access token and a refresh \
             token (sealed both ways).",
            Rpc {
                subject: "<p>.rpc.auth.issue_tokens",
            },
        ),
        payload::<RpcReply<IssuedTokens>>(
            "token_reply.v1",
            "The tokens, or an error (401 for an unknown, used, expired or orphaned credential).",
            Rpc {
                subject: "<p>.rpc.auth.issue_tokens (reply)",
            },
        ),
        payload::<FindUserRequest>(
            "find_user_request.v1",
            "Look up a bot's user by platform and platform user id.",
            Rpc {
                subject: "<p>.rpc.router.find_user",
            },
        ),
        payload::<ResolveRecipientRequest>(
            "resolve_recipient_request.v1",
            "Look up the user a send is for (`user_id`, or `platform` and `address`); \
             answered with the user's profile, including `last_inbound_at` (the start of the \
             messaging window).",
            Rpc {
                subject: "<p>.rpc.router.resolve_recipient",
            },
        ),
        payload::<LinkRecord>(
            "link_record.v1",
            "A Patchbay link (`/go/<token>`) standing for a tenant URL with `:code`.",
            KeyValue {
                bucket: "links",
                key: "{token}",
            },
        ),
        payload::<CodeRecord>(
            "code_record.v1",
            "A one-time code for a web view, claimable once by its bot.",
            KeyValue {
                bucket: "codes",
                key: "{code}",
            },
        ),
        payload::<ReplyContext>(
            "reply_context.v1",
            "A token to answer one inbound event once (LINE's reply token), kept by the ingress for the sender.",
            KeyValue {
                bucket: "replies",
                key: "{event_id}",
            },
        ),
        payload::<TenantEvent>(
            "tenant_event.v1",
            "The body of a native callback to a tenant (Standard Webhooks signed).",
            Http {
                usage: "POST to the bot's callback URL",
            },
        ),
        payload::<InlineReply>(
            "inline_reply.v1",
            "A tenant's 2xx answer to a callback: messages to send back.",
            Http {
                usage: "response body of a callback",
            },
        ),
    ]
}

/// The AsyncAPI 3.0 document describing every subject, as YAML.
pub fn asyncapi() -> String {
    let mut channels = String::new();
    let mut operations = String::new();
    let mut messages = String::new();
    for p in payloads() {
        let id = p.name.trim_end_matches(".v1");
        messages.push_str(&format!(
            "    {id}:\n      name: {id}\n      title: {}\n      summary: {:?}\n      contentType: application/json\n      payload:\n        $ref: './{}.json'\n",
            p.name, p.summary, p.name
        ));
        let (address, desc, action) = match p.transport {
            Transport::Stream {
                subject,
                stream,
                producer,
                consumer,
            } => (
                subject.to_owned(),
                format!(
                    "JetStream stream <P>_{stream}. Published by {producer} with Nats-Msg-Id and traceparent headers; consumed by {consumer} through a durable pull consumer."
                ),
                "send",
            ),
            Transport::KeyValue { bucket, key } => (
                format!("$KV.<p>_{bucket}.{key}"),
                format!(
                    "Key-value bucket <p>_{bucket}, key {key}. Written by auth; watched by every service."
                ),
                "send",
            ),
            Transport::Core {
                subject,
                producer,
                consumer,
            } => (
                subject.to_owned(),
                format!(
                    "Core NATS, not stored: published by {producer}, listened to by {consumer}; nobody may be listening."
                ),
                "send",
            ),
            Transport::Rpc { subject } => {
                if subject.ends_with("(reply)") {
                    continue;
                }
                (subject.to_owned(), "NATS request/reply.".to_owned(), "send")
            }
            Transport::Http { .. } => continue,
        };
        let params: Vec<&str> = address
            .split(['{', '}'])
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        channels.push_str(&format!(
            "  {id}:\n    address: '{address}'\n    description: {desc:?}\n    messages:\n      {id}:\n        $ref: '#/components/messages/{id}'\n"
        ));
        if !params.is_empty() {
            channels.push_str("    parameters:\n");
            for param in params {
                channels.push_str(&format!("      {param}:\n        description: {param}\n"));
            }
        }
        operations.push_str(&format!(
            "  publish_{id}:\n    action: {action}\n    channel:\n      $ref: '#/channels/{id}'\n"
        ));
    }
    format!(
        "# Generated by patchbay-contract (schema.rs); run `make schemas` after changing wire types.\n\
asyncapi: 3.0.0\n\
info:\n  title: Patchbay NATS subjects\n  version: 1.0.0\n  description: |\n    \
Every subject Patchbay publishes or consumes. `<p>` is the configured prefix (PATCHBAY_NATS_PREFIX,\n    \
default `pb`); stream names are the prefix upper-cased plus a suffix (PB_INGRESS). Dead letters go to\n    \
`<p>.dlq.<consumer>.<bot or channel>` in stream <P>_DLQ with the original payload and Pb-Dlq-* headers\n    \
(reason, consumer, subject, stream, stream sequence, deliveries, time).\n\
defaultContentType: application/json\n\
channels:\n{channels}\
operations:\n{operations}\
components:\n  messages:\n{messages}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas")
    }

    /// Fails when `proto-schemas/` differs from what the types generate. With
    /// `PATCHBAY_UPDATE_SCHEMAS=1` it rewrites the folder instead (`make schemas`).
    #[test]
    fn checked_in_schemas_match_the_code() {
        let update = std::env::var("PATCHBAY_UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
        let mut expected: Vec<(String, String)> = payloads()
            .into_iter()
            .map(|p| (format!("{}.json", p.name), p.schema + "\n"))
            .collect();
        expected.push(("asyncapi.yaml".into(), asyncapi()));
        let dir = dir();
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json" || e == "yaml") {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
        let mut stale = Vec::new();
        for (name, content) in &expected {
            let path = dir.join(name);
            if update {
                std::fs::write(&path, content).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(content) {
                stale.push(name.clone());
            }
        }
        let mut extra: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json") || n.ends_with(".yaml"))
            .filter(|n| !expected.iter().any(|(e, _)| e == n))
            .collect();
        extra.sort();
        assert!(
            stale.is_empty() && extra.is_empty(),
            "proto-schemas/ is out of date (changed: {stale:?}, not generated: {extra:?}); run `make schemas`"
        );
    }

    #[test]
    fn every_stream_payload_has_a_version_field() {
        for p in payloads() {
            if matches!(p.transport, Transport::Stream { .. }) {
                let v: serde_json::Value = serde_json::from_str(&p.schema).unwrap();
                assert!(
                    v["required"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|f| f == "v")),
                    "{} has no required v",
                    p.name
                );
            }
        }
    }
}
