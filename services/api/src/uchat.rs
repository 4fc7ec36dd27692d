//! UChat's partner API for the API chat channel (`docs/compat.md`, "UChat"):
//! `GET`, `POST` and `DELETE /api/partner/workspace/{workspace_id}/apichat-webhook` read, set
//! and remove a workspace's API chat webhook, answered by `auth` (`<p>.rpc.auth.api_chat`).
//!
//! A workspace is a tenant (`ten_…`, its bot where it has one; the bot where the partner's app
//! is enabled on one of its bots) or a bot (`bot_…`). The caller is a partner whose app the
//! workspace enabled (its key `ppk_…` as the Bearer), or the operator. Setting a URL verifies
//! it with UChat's challenge (a form `POST` of `hub_mode`, `hub_verify_token`,
//! `hub_challenge`), creates the workspace's API chat channel when it has none, and answers
//! the `bot_url` the partner's system sends its users' messages to (served by
//! `ingress-custom`). Answers and errors are UChat's: `{"status": "ok", "data": …}`,
//! `{"status": "error", "message": …}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use patchbay_contract::partners::{Installation, PartnerOp, PartnerRequest};
use patchbay_contract::{
    ApiChat, ApiChatOp, ApiChatRequest, BotSummary, ListBotsRequest, V1, auth_ops,
};
use patchbay_runtime::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::{Api, ask};

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new().route(
        "/api/partner/workspace/{workspace_id}/apichat-webhook",
        get(read).post(set).delete(remove),
    )
}

/// UChat's error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "message": message.into()})),
    )
        .into_response()
}

fn from_api(e: ApiError) -> Response {
    error(e.status, e.message)
}

/// The bot of the workspace, when the caller may manage it.
async fn workspace_bot(
    api: &Api,
    headers: &HeaderMap,
    workspace: &str,
) -> Result<String, Response> {
    let bearer = crate::auth::bearer_token(headers).ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <partner API key>",
        )
    })?;
    let candidates: Vec<String> = if bool::from(bearer.as_bytes().ct_eq(api.admin_token.as_bytes()))
    {
        if api
            .view
            .bot(workspace)
            .await
            .map_err(|e| from_api(e.into()))?
            .is_some()
        {
            vec![workspace.to_owned()]
        } else {
            let bots: Vec<BotSummary> = ask(
                api,
                "auth",
                auth_ops::LIST_BOTS,
                &ListBotsRequest {
                    v: V1,
                    tenant_id: Some(workspace.to_owned()),
                },
            )
            .await
            .map_err(from_api)?;
            bots.into_iter().map(|b| b.id).collect()
        }
    } else if bearer.starts_with("ppk_") {
        let partner: patchbay_contract::partners::Partner = ask(
            api,
            "auth",
            auth_ops::PARTNERS,
            &PartnerRequest {
                v: V1,
                op: PartnerOp::Authenticate {
                    api_key: bearer.to_owned(),
                },
            },
        )
        .await
        .map_err(|_| error(StatusCode::UNAUTHORIZED, "invalid partner API key"))?;
        let installations: Vec<Installation> = ask(
            api,
            "auth",
            auth_ops::PARTNERS,
            &PartnerRequest {
                v: V1,
                op: PartnerOp::Installations {
                    bot_id: None,
                    partner_id: Some(partner.id),
                },
            },
        )
        .await
        .map_err(from_api)?;
        let mut bots: Vec<String> = installations
            .into_iter()
            .filter(|i| i.tenant_id == workspace || i.bot_id == workspace)
            .map(|i| i.bot_id)
            .collect();
        bots.sort();
        bots.dedup();
        bots
    } else {
        return Err(error(StatusCode::UNAUTHORIZED, "invalid partner API key"));
    };
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(error(
            StatusCode::NOT_FOUND,
            format!("no workspace {workspace} enabled this partner's app"),
        )),
        several => Err(error(
            StatusCode::CONFLICT,
            format!(
                "workspace {workspace} has several bots ({}): name one as the workspace",
                several.join(", ")
            ),
        )),
    }
}

/// UChat's `data` of a workspace's webhook.
fn data(api: &Api, chat: &ApiChat) -> Value {
    json!({
        "webhook_url": chat.webhook_url.clone().unwrap_or_default(),
        "webhook_verification_key": chat.verification_key.clone().unwrap_or_default(),
        "webhook_status": if chat.webhook_url.is_some() { "verified" } else { "" },
        "bot_url": format!("{}/api/apichat/{}", api.public_url, chat.channel_id),
    })
}

async fn run(api: &Api, bot_id: String, op: ApiChatOp) -> Result<Option<ApiChat>, Response> {
    ask(
        api,
        "auth",
        auth_ops::API_CHAT,
        &ApiChatRequest { v: V1, bot_id, op },
    )
    .await
    .map_err(from_api)
}

/// UChat's success answer, with the webhook's `data` when there is one.
fn ok(api: &Api, chat: Option<&ApiChat>) -> Response {
    match chat {
        Some(c) => axum::Json(json!({"status": "ok", "data": data(api, c)})).into_response(),
        None => axum::Json(json!({"status": "ok"})).into_response(),
    }
}

async fn read(
    State(api): State<Arc<Api>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let bot = workspace_bot(&api, &headers, &workspace).await?;
    let chat = run(&api, bot, ApiChatOp::Get).await?;
    Ok(ok(&api, chat.as_ref()))
}

/// Body of `POST /api/partner/workspace/{workspace_id}/apichat-webhook`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct SetBody {
    /// Where the bot's and agents' messages go.
    webhook_url: String,
    /// The challenge's `hub_verify_token`, and the key of the `X-Uchat-Signature`.
    webhook_verification_key: String,
}

async fn set(
    State(api): State<Arc<Api>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let bot = workspace_bot(&api, &headers, &workspace).await?;
    let body: SetBody = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    let op = ApiChatOp::Set {
        webhook_url: body.webhook_url,
        verification_key: body.webhook_verification_key,
    };
    let chat = run(&api, bot, op).await?;
    Ok(ok(&api, chat.as_ref()))
}

async fn remove(
    State(api): State<Arc<Api>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let bot = workspace_bot(&api, &headers, &workspace).await?;
    run(&api, bot, ApiChatOp::Remove).await?;
    Ok(ok(&api, None))
}
