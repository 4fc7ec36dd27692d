//! Broadcasts, `/v1/broadcasts`: one message to many users of a bot
//! (`patchbay_contract::broadcasts`), stored, driven and counted by `bot-router` and answered
//! over request/reply, always within the caller's bot.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use patchbay_contract::broadcasts::{
    Broadcast, BroadcastAction, BroadcastOp, BroadcastPage, BroadcastRequest, BroadcastSpec,
};
use patchbay_contract::ids::{hashed_id, new_id};
use patchbay_contract::{V1, router_ops};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::ApiJson;

use crate::auth::BotAuth;
use crate::{Api, ask, check_uploads, unprocessable};

/// Prefix of broadcast ids.
const PREFIX: &str = "brd";

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/broadcasts", get(list).post(create))
        .route("/v1/broadcasts/{broadcast_id}", get(read))
        .route("/v1/broadcasts/{broadcast_id}/cancel", post(cancel))
        .route("/v1/broadcasts/{broadcast_id}/pause", post(pause))
        .route("/v1/broadcasts/{broadcast_id}/resume", post(resume))
}

async fn run<T: serde::de::DeserializeOwned>(
    api: &Api,
    bot_id: String,
    op: BroadcastOp,
) -> Result<T, ApiError> {
    let req = BroadcastRequest { v: V1, bot_id, op };
    ask(api, "router", router_ops::BROADCASTS, &req).await
}

/// `POST /v1/broadcasts`: 202 with the broadcast once it is stored. With an `Idempotency-Key`,
/// asking again answers the same broadcast.
async fn create(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    ApiJson(spec): ApiJson<BroadcastSpec>,
) -> Result<(StatusCode, axum::Json<Broadcast>), ApiError> {
    spec.validate()
        .map_err(|e| unprocessable(format!("{}: {}", e.field, e.message)))?;
    check_uploads(&api, &bot.bot_id, &spec.messages).await?;
    // A key limited to some channels broadcasts through those only.
    if let Some(allowed) = &bot.channels {
        let within = spec
            .audience
            .channels
            .as_ref()
            .is_some_and(|chs| chs.iter().all(|c| allowed.contains(c)));
        if !within {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "channel_not_allowed",
                "this credential sends through some channels only: name them in \
                 audience.channels",
            ));
        }
    }
    let id = match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(key) if !key.is_empty() && key.len() <= 200 => hashed_id(PREFIX, &[&bot.bot_id, key]),
        Some(_) => return Err(unprocessable("Idempotency-Key must be 1 to 200 characters")),
        None => new_id(PREFIX),
    };
    let stored = run(&api, bot.bot_id, BroadcastOp::Create { id, spec }).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(stored)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/broadcasts`: the bot's broadcasts, newest first (`limit` 1–100, default 20;
/// `after` = the previous page's `next`).
async fn list(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<BroadcastPage>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(unprocessable("limit: must be between 1 and 100"));
    }
    let op = BroadcastOp::List {
        after: q.after,
        limit,
    };
    Ok(axum::Json(run(&api, bot.bot_id, op).await?))
}

/// `GET /v1/broadcasts/{broadcast_id}`: state and counts.
async fn read(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Broadcast>, ApiError> {
    Ok(axum::Json(
        run(&api, bot.bot_id, BroadcastOp::Get { id }).await?,
    ))
}

async fn control(
    bot: BotAuth,
    api: &Api,
    id: String,
    action: BroadcastAction,
) -> Result<axum::Json<Broadcast>, ApiError> {
    Ok(axum::Json(
        run(api, bot.bot_id, BroadcastOp::Control { id, action }).await?,
    ))
}

/// `POST /v1/broadcasts/{broadcast_id}/cancel`: what has not gone out stays unsent.
async fn cancel(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Broadcast>, ApiError> {
    control(bot, &api, id, BroadcastAction::Cancel).await
}

/// `POST /v1/broadcasts/{broadcast_id}/pause`.
async fn pause(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Broadcast>, ApiError> {
    control(bot, &api, id, BroadcastAction::Pause).await
}

/// `POST /v1/broadcasts/{broadcast_id}/resume`.
async fn resume(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Broadcast>, ApiError> {
    control(bot, &api, id, BroadcastAction::Resume).await
}
