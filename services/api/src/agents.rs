//! Who a credential is (`GET /v1/me`) and a bot's human agents (`/v1/agents`): the developer
//! invites an agent by name and hands the invite over; the agent signs in to the console with
//! it. An invite may read conversations, users and templates, take conversations over and send
//! as the agent ([`patchbay_contract::scopes::AGENT`]); it works until it is revoked.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use patchbay_contract::{Agent, AgentOp, AgentRequest, V1, auth_ops};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::ApiJson;
use serde::{Deserialize, Serialize};

use crate::auth::BotAuth;
use crate::{Api, ask};

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/agents", get(list).post(invite))
        .route("/v1/agents/{agent_id}", delete(revoke))
}

/// Answer of `GET /v1/me`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Me {
    /// The bot the credential acts for.
    bot_id: String,
    /// The bot's name.
    bot_name: String,
    /// The bot's tenant.
    tenant_id: String,
    /// The credential: an API key (`key_…`), an access token (`tok_…`) or an agent (`agt_…`).
    credential_id: String,
    /// What it may do, each scope by name.
    scopes: Vec<String>,
    /// For an agent's invite: the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<MeAgent>,
}

/// The agent of [`Me`].
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MeAgent {
    /// `agt_…`.
    id: String,
    /// The agent's name.
    name: String,
}

/// `GET /v1/me`: the bot, the credential and what it may do (any credential of the bot).
async fn me(bot: BotAuth, State(api): State<Arc<Api>>) -> Result<axum::Json<Me>, ApiError> {
    let record = api
        .view
        .bot(&bot.bot_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such bot"))?;
    Ok(axum::Json(Me {
        bot_id: record.id.clone(),
        bot_name: record.name.clone(),
        tenant_id: record.tenant_id.clone(),
        credential_id: bot.key_id.to_string(),
        scopes: patchbay_contract::scopes::granted(bot.scopes.as_deref()),
        agent: bot.agent.as_ref().map(|name| MeAgent {
            id: bot.key_id.to_string(),
            name: name.to_string(),
        }),
    }))
}

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteBody {
    /// The agent's name: 1 to 100 characters.
    name: String,
}

/// `POST /v1/agents`: a new agent with its invite (201; the invite is shown this once).
async fn invite(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<impl IntoResponse, ApiError> {
    let req = AgentRequest {
        v: V1,
        bot_id: bot.bot_id,
        op: AgentOp::Invite { name: body.name },
    };
    let agent: Agent = ask(&api, "auth", auth_ops::AGENTS, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(agent)))
}

/// Answer of `GET /v1/agents`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct AgentList {
    /// The bot's agents whose invites work, oldest first.
    data: Vec<Agent>,
}

/// `GET /v1/agents`: the bot's agents.
async fn list(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<AgentList>, ApiError> {
    let req = AgentRequest {
        v: V1,
        bot_id: bot.bot_id,
        op: AgentOp::List,
    };
    Ok(axum::Json(AgentList {
        data: ask(&api, "auth", auth_ops::AGENTS, &req).await?,
    }))
}

/// `DELETE /v1/agents/{agent_id}`: the agent's invite stops working at once (204).
async fn revoke(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(agent_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let req = AgentRequest {
        v: V1,
        bot_id: bot.bot_id,
        op: AgentOp::Revoke { agent_id },
    };
    let () = ask(&api, "auth", auth_ops::AGENTS, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}
