//! `POST /v1/conversations`: find a contact by phone or e-mail, or create them, and send them
//! messages in one call, as Web1on1's conversation upsert does (201 when the contact is new,
//! 200 when the bot knew them). `GET /v1/conversations/{id}/messages`: the history, newest
//! first. Both answered by `bot-router`, always within the caller's bot.
//!
//! A new contact is created on a channel that can reach them: the request's `channel_id`, or
//! the bot's first WhatsApp channel for a phone number (the user id is the number's digits, as
//! WhatsApp's `wa_id`), or its first custom channel for an e-mail address (the user id is the
//! address; the app that registers that user with `external_id` = the address gets the same
//! user). A new contact has not written yet, so platforms with a messaging window accept only
//! templates until they do.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use patchbay_contract::{
    ChannelRef, Contact, Content, HistoryPage, HistoryRequest, Recipient, UpsertContactRequest,
    UpsertedContact, V1, router_ops,
};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::ApiJson;
use serde::{Deserialize, Serialize};

use crate::auth::BotAuth;
use crate::users::Profile;
use crate::{Accepted, Api, ApiSource, ask, check_messages, queue, unprocessable};

/// Body of `POST /v1/conversations`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpsertBody {
    /// Who: `phone` (E.164) and/or `email`, and a `name`.
    contact: Contact,
    /// The channel to create a new contact on (default: WhatsApp for a phone number, a custom
    /// channel for an e-mail address).
    #[serde(default)]
    channel_id: Option<String>,
    /// Up to ten messages to send to the contact (WhatsApp outside the window: templates).
    #[serde(default)]
    messages: Vec<Content>,
    /// Who sends them (`api`, `human`, `broadcast`).
    #[serde(default)]
    source: Option<ApiSource>,
    /// The agent's or broadcast's id.
    #[serde(default)]
    source_id: Option<String>,
}

/// Answer of `POST /v1/conversations`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Upserted {
    /// The conversation (`conv_…`).
    conversation_id: String,
    /// The contact's profile.
    user: Profile,
    /// The contact is new.
    created: bool,
    /// The messages sent, when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    send: Option<Accepted>,
}

/// The channel and user id a new contact would get, if the bot has a channel for them.
fn new_contact_target(
    channels: &[ChannelRef],
    wanted: Option<&str>,
    contact: &Contact,
) -> Result<Option<(ChannelRef, String)>, ApiError> {
    let user_on = |c: &ChannelRef| {
        patchbay_registry::spec(c.platform)
            .ok()?
            .first_contact
            .address(contact.phone.as_deref(), contact.email.as_deref())
    };
    if let Some(id) = wanted {
        let c = channels
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| unprocessable(format!("channel_id: this bot has no channel {id}")))?;
        let user = user_on(c).ok_or_else(|| {
            unprocessable(format!(
                "channel_id: a new contact cannot be reached on a {} channel by phone or e-mail",
                c.platform
            ))
        })?;
        return Ok(Some((c.clone(), user)));
    }
    // A phone number goes to the first channel reached by phone; otherwise the first channel
    // reached by e-mail or phone (a custom channel) takes the contact.
    let reached_by = |kind: patchbay_registry::FirstContact| {
        channels
            .iter()
            .find(|c| patchbay_registry::spec(c.platform).is_ok_and(|s| s.first_contact == kind))
    };
    let channel = match (&contact.phone, &contact.email) {
        (Some(_), _) if reached_by(patchbay_registry::FirstContact::Phone).is_some() => {
            reached_by(patchbay_registry::FirstContact::Phone)
        }
        _ => reached_by(patchbay_registry::FirstContact::EmailOrPhone),
    };
    Ok(channel.and_then(|c| Some((c.clone(), user_on(c)?))))
}

/// Finds the bot's contact by phone or e-mail, or creates them on a channel that can reach
/// them (`channel_id`, else as the module says).
pub(crate) async fn find_or_create(
    api: &Api,
    bot: &BotAuth,
    contact: Contact,
    channel_id: Option<&str>,
) -> Result<UpsertedContact, ApiError> {
    let contact = contact
        .normalised()
        .map_err(|e| unprocessable(e.to_string()))?;
    let record = api
        .view
        .bot(&bot.bot_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no bot {}", bot.bot_id)))?;
    let target = new_contact_target(&record.channels, channel_id, &contact)?;
    if let Some(c) = channel_id {
        bot.may_send_through(c)?;
    }
    let (channel, platform_user_id) = target.unzip();
    let req = UpsertContactRequest {
        v: V1,
        bot_id: bot.bot_id.clone(),
        contact,
        channel,
        platform_user_id,
    };
    ask(api, "router", router_ops::UPSERT_CONTACT, &req).await
}

pub(crate) async fn upsert(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpsertBody>,
) -> Result<(StatusCode, axum::Json<Upserted>), ApiError> {
    check_messages(&body.messages, 0)?;
    let found = find_or_create(&api, &bot, body.contact, body.channel_id.as_deref()).await?;
    let (source, source_id) = bot.source(body.source, body.source_id)?;
    let send = if body.messages.is_empty() {
        None
    } else {
        bot.may_send_through(&found.user.channel.id)?;
        Some(
            queue(
                &api,
                &bot.bot_id,
                &headers,
                Recipient::User {
                    user_id: found.user.id.clone(),
                },
                body.messages,
                source,
                source_id,
            )
            .await?,
        )
    };
    let status = if found.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(Upserted {
            conversation_id: found.conversation_id,
            user: found.user.into(),
            created: found.created,
            send,
        }),
    ))
}

/// Query of `GET /v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

pub(crate) async fn history(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(conversation_id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<HistoryPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit: must be 1 to 200",
        ));
    }
    let req = HistoryRequest {
        v: V1,
        bot_id: bot.bot_id,
        conversation_id,
        before: q.before,
        limit,
    };
    Ok(axum::Json(
        ask(&api, "router", router_ops::HISTORY, &req).await?,
    ))
}

/// Body of `POST /v1/conversations/{id}/handover`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandoverBody {
    /// `human` (an agent answers; the bot's messages are held back) or `bot`.
    to: patchbay_contract::HandledBy,
    /// The agent taking it (1 to 100 characters), for `human`.
    #[serde(default)]
    agent: Option<String>,
}

/// `POST /v1/conversations/{conversation_id}/handover`: passes the conversation to a human
/// agent or back to the bot; answers who holds it since when.
pub(crate) async fn handover(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(conversation_id): Path<String>,
    ApiJson(body): ApiJson<HandoverBody>,
) -> Result<axum::Json<patchbay_contract::ConversationState>, ApiError> {
    // An agent takes a conversation over as itself.
    let agent = match (&bot.agent, body.to) {
        (Some(name), patchbay_contract::HandledBy::Human) => Some(name.to_string()),
        _ => body.agent,
    };
    let req = patchbay_contract::HandoverRequest {
        v: V1,
        bot_id: bot.bot_id,
        conversation_id,
        to: body.to,
        agent,
    };
    Ok(axum::Json(
        ask(&api, "router", router_ops::HANDOVER, &req).await?,
    ))
}

/// The stages of an outbound message, from its record: stored, then each later stage at its
/// time.
fn outbound_stages(m: &patchbay_contract::JourneyMessage) -> Vec<patchbay_contract::JourneyStage> {
    let mut out = vec![stage("queued", m.created_at)];
    for (name, at) in &m.timeline {
        let mut s = stage(name, *at);
        match name.as_str() {
            "sent" => s.platform_message_id.clone_from(&m.platform_message_id),
            "failed" | "suppressed" => {
                s.error = m
                    .error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.code, e.message));
            }
            _ => {}
        }
        out.push(s);
    }
    out.sort_by_key(|s| (stage_rank(&s.stage), s.at));
    out
}

/// Stage `name` at `at`, with nothing more to say.
fn stage(name: &str, at: chrono::DateTime<chrono::Utc>) -> patchbay_contract::JourneyStage {
    patchbay_contract::JourneyStage {
        stage: name.to_owned(),
        at,
        attempt: None,
        status_code: None,
        duration_ms: None,
        error: None,
        platform_message_id: None,
    }
}

/// Where a stage comes in a journey: platforms stamp their receipts to the second, so time
/// alone could put a receipt before the answer it follows.
fn stage_rank(stage: &str) -> u8 {
    match stage {
        "received" | "queued" => 0,
        "stored" | "sent" | "suppressed" => 1,
        "callback" | "delivered" => 2,
        "read" => 3,
        _ => 4,
    }
}

fn outbound_journey(m: &patchbay_contract::JourneyMessage) -> patchbay_contract::Journey {
    patchbay_contract::Journey {
        message_id: m.id.clone(),
        direction: m.direction.clone(),
        conversation_id: m.conversation_id.clone(),
        status: m.status.clone(),
        stages: outbound_stages(m),
        replies: Vec::new(),
    }
}

/// `GET /v1/messages/{message_id}/journey`: every stage the message passed, with its time.
/// Inbound: the platform's time, when Patchbay stored the event, each attempt to deliver it
/// to the bot (the dispatcher's log), and the journeys of the bot's inline replies. Outbound:
/// stored for the sender, the platform's answer, its receipts.
pub(crate) async fn journey(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(message_id): Path<String>,
) -> Result<axum::Json<patchbay_contract::Journey>, ApiError> {
    let req = patchbay_contract::JourneyRequest {
        v: V1,
        bot_id: bot.bot_id.clone(),
        message_id,
    };
    let record: patchbay_contract::JourneyRecord = ask(&api, "router", router_ops::JOURNEY, &req)
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                ApiError::not_found(format!("this bot has no message {}", req.message_id))
            } else {
                e
            }
        })?;
    let m = &record.message;
    if m.direction != "inbound" {
        return Ok(axum::Json(outbound_journey(m)));
    }
    let mut stages = vec![stage("received", m.created_at)];
    if let Some(at) = record.stored_at {
        stages.push(stage("stored", at));
    }
    if let Some(event_id) = &m.event_id {
        let delivery = patchbay_contract::DeliveryRef {
            v: V1,
            bot_id: bot.bot_id.clone(),
            event_id: event_id.clone(),
        };
        // No delivery: the bot does not subscribe to the event, or it is on its way.
        match ask::<_, patchbay_contract::DeliveryDetail>(
            &api,
            "dispatcher",
            patchbay_contract::dispatcher_ops::GET,
            &delivery,
        )
        .await
        {
            Ok(detail) => {
                for a in detail.attempts_log {
                    stages.push(patchbay_contract::JourneyStage {
                        attempt: Some(a.attempt),
                        status_code: a.status_code,
                        duration_ms: Some(a.duration_ms),
                        error: a.error,
                        ..stage("callback", a.at)
                    });
                }
            }
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    stages.sort_by_key(|s| (stage_rank(&s.stage), s.at));
    Ok(axum::Json(patchbay_contract::Journey {
        message_id: m.id.clone(),
        direction: m.direction.clone(),
        conversation_id: m.conversation_id.clone(),
        status: m.status.clone(),
        stages,
        replies: record.replies.iter().map(outbound_journey).collect(),
    }))
}

/// Query of `GET /v1/conversations`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboxQuery {
    /// `human` or `bot`: only the conversations they answer.
    #[serde(default)]
    handled_by: Option<patchbay_contract::HandledBy>,
    /// At most this many, 1 to 200 (50 by default).
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /v1/conversations`: the bot's conversations as an agent's inbox: those a human holds
/// whose user is waiting for an answer first, then by when the user last wrote, newest first.
pub(crate) async fn inbox(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Query(q): Query<InboxQuery>,
) -> Result<axum::Json<crate::settings::Items<patchbay_contract::InboxEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(unprocessable("limit: must be between 1 and 200"));
    }
    let req = patchbay_contract::InboxRequest {
        v: V1,
        bot_id: bot.bot_id,
        handled_by: q.handled_by,
        limit,
    };
    let items = ask(&api, "router", router_ops::INBOX, &req).await?;
    Ok(axum::Json(crate::settings::Items { items }))
}
