//! The template registry, `/v1/templates`: a bot's named templates with the form each
//! platform needs (`patchbay_contract::templates`), kept by `bot-router` (which renders them)
//! and answered over request/reply, always within the caller's bot.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use patchbay_contract::templates::{StoredTemplate, TemplateDef};
use patchbay_contract::{TemplateOp, TemplateRequest, V1, router_ops};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::ApiJson;

use crate::auth::BotAuth;
use crate::settings::Items;
use crate::{Api, ask};

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/templates", get(list).post(create))
        .route(
            "/v1/templates/{template_id}",
            get(read).put(replace).delete(delete),
        )
}

async fn run<T: serde::de::DeserializeOwned>(
    api: &Api,
    bot_id: String,
    op: TemplateOp,
) -> Result<T, ApiError> {
    let req = TemplateRequest { v: V1, bot_id, op };
    ask(api, "router", router_ops::TEMPLATES, &req).await
}

/// Checks a definition here too, so a bad one is refused without a round trip.
fn checked(def: &TemplateDef) -> Result<(), ApiError> {
    def.check().map(|_| ()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_template",
            format!("{}: {}", e.field, e.message),
        )
    })
}

/// `POST /v1/templates`: 201 with the stored template (its id and variables).
async fn create(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    ApiJson(template): ApiJson<TemplateDef>,
) -> Result<(StatusCode, axum::Json<StoredTemplate>), ApiError> {
    checked(&template)?;
    let stored = run(&api, bot.bot_id, TemplateOp::Create { template }).await?;
    Ok((StatusCode::CREATED, axum::Json(stored)))
}

/// `GET /v1/templates`: every template of the bot, by name.
async fn list(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<Items<StoredTemplate>>, ApiError> {
    let items = run(&api, bot.bot_id, TemplateOp::List).await?;
    Ok(axum::Json(Items { items }))
}

/// `GET /v1/templates/{template_id}`.
async fn read(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<axum::Json<StoredTemplate>, ApiError> {
    Ok(axum::Json(
        run(&api, bot.bot_id, TemplateOp::Get { id }).await?,
    ))
}

/// `PUT /v1/templates/{template_id}`: the whole definition replaced.
async fn replace(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    ApiJson(template): ApiJson<TemplateDef>,
) -> Result<axum::Json<StoredTemplate>, ApiError> {
    checked(&template)?;
    Ok(axum::Json(
        run(&api, bot.bot_id, TemplateOp::Replace { id, template }).await?,
    ))
}

/// `DELETE /v1/templates/{template_id}`: 204.
async fn delete(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let () = run(&api, bot.bot_id, TemplateOp::Delete { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}
