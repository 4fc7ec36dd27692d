//! A bot's own settings: its callback (`/v1/webhook`), key and secret rotation, access tokens
//! for its keys (`/v1/auth/token`), and the operator's key revocation and bot switch. `auth` does the work; a change reaches every
//! service through the config bucket within a second.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, patch, post, put};
use patchbay_contract::{
    BotStateRequest, IssuedTokens, RevokeKeyRequest, RotateRequest, RotatedKey, RotatedSecret,
    TokenRequest, UpdateWebhookRequest, V1, WebhookInput, WebhookSettings, auth_ops,
};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::ApiJson;
use serde::Deserialize;

use crate::auth::{Admin, BotAuth};
use crate::{Api, ask};

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/webhook", put(put_webhook).get(get_webhook))
        .route("/v1/webhook/secret/rotate", post(rotate_secret))
        .route("/v1/keys/rotate", post(rotate_key))
        .route("/v1/auth/token", post(issue_tokens))
        .route("/v1/keys/{key_id}", delete(revoke_own_key))
        .route("/admin/v1/bots/{bot_id}", patch(set_bot_state))
        .route(
            "/admin/v1/bots/{bot_id}/channels/{channel_id}",
            patch(set_channel_state),
        )
        .route("/admin/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/admin/v1/bots", get(list_bots))
        .route(
            "/admin/v1/bots/{bot_id}/keys/rotate",
            post(admin_rotate_key),
        )
        .route(
            "/admin/v1/bots/{bot_id}/keys/{key_id}/revoke",
            post(admin_revoke_key),
        )
}

async fn get_webhook(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<WebhookSettings>, ApiError> {
    let record = api
        .view
        .bot(&bot.bot_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such bot"))?;
    Ok(axum::Json(record.webhook.clone()))
}

async fn put_webhook(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    ApiJson(webhook): ApiJson<WebhookInput>,
) -> Result<axum::Json<WebhookSettings>, ApiError> {
    let req = UpdateWebhookRequest {
        v: V1,
        bot_id: bot.bot_id,
        webhook,
    };
    Ok(axum::Json(
        ask(&api, "auth", auth_ops::UPDATE_WEBHOOK, &req).await?,
    ))
}

/// Body of the rotation routes.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    #[serde(default)]
    overlap_seconds: Option<u64>,
    /// The new key's scopes (`messages:send`, `deliveries:*`, `*`, …); absent: every scope.
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

/// The rotation request; the body is optional (`{}` or none: the configured overlap).
fn rotation(bot_id: String, body: &Bytes) -> Result<RotateRequest, ApiError> {
    let parsed: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    if let Some(scopes) = &parsed.scopes {
        patchbay_contract::scopes::check(scopes).map_err(|m| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("scopes: {m}"),
            )
        })?;
    }
    Ok(RotateRequest {
        v: V1,
        bot_id,
        overlap_seconds: parsed.overlap_seconds,
        scopes: parsed.scopes,
    })
}

/// Issues a new API key for `bot_id` (for the bot itself or its operator).
async fn new_key(
    api: &Api,
    bot_id: String,
    body: &Bytes,
) -> Result<(StatusCode, axum::Json<RotatedKey>), ApiError> {
    let req = rotation(bot_id, body)?;
    let key: RotatedKey = ask(api, "auth", auth_ops::ROTATE_KEY, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(key)))
}

/// Revokes key `key_id` of `bot_id` at once (for the bot itself or its operator).
async fn revoke(api: &Api, bot_id: String, key_id: String) -> Result<StatusCode, ApiError> {
    let req = RevokeKeyRequest {
        v: V1,
        bot_id,
        key_id,
    };
    let () = ask(api, "auth", auth_ops::REVOKE_KEY, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/auth/token`: exactly one of the two.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    /// A working API key of the bot (`pbk_…`; an access token cannot be exchanged).
    #[serde(default)]
    api_key: Option<String>,
    /// The refresh token of the previous exchange (`pbrt_…`): used up by this one; presented
    /// again, it revokes every token of its family.
    #[serde(default)]
    refresh_token: Option<String>,
}

/// `POST /v1/auth/token`: the credential is in the body (no Bearer); 401 says why one is
/// refused.
async fn issue_tokens(
    State(api): State<Arc<Api>>,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<axum::Json<IssuedTokens>, ApiError> {
    let non_empty = |v: &Option<String>| v.as_ref().is_some_and(|s| !s.trim().is_empty());
    if non_empty(&body.api_key) == non_empty(&body.refresh_token) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "give either api_key or refresh_token",
        ));
    }
    let req = TokenRequest {
        v: V1,
        api_key: body.api_key,
        refresh_token: body.refresh_token,
    };
    Ok(axum::Json(
        ask(&api, "auth", auth_ops::ISSUE_TOKENS, &req).await?,
    ))
}

/// `POST /v1/keys/rotate` (scope `settings:keys`): a key gives the new key only scopes it
/// holds itself (403 `scope_not_held` otherwise); without `scopes`, the new key gets the
/// caller's.
async fn rotate_key(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let mut req = rotation(bot.bot_id, &body)?;
    let held = bot.scopes.as_deref();
    match &req.scopes {
        Some(wanted) => {
            let missing = patchbay_contract::scopes::not_held(wanted, held);
            if !missing.is_empty() {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "scope_not_held",
                    format!(
                        "a key can give a new key only scopes it holds; this one lacks {}",
                        missing.join(", ")
                    ),
                ));
            }
        }
        None => req.scopes = held.map(<[String]>::to_vec),
    }
    let key: RotatedKey = ask(&api, "auth", auth_ops::ROTATE_KEY, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(key)))
}

async fn rotate_secret(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req = rotation(bot.bot_id, &body)?;
    if req.scopes.is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "scopes: only API keys have scopes",
        ));
    }
    let secret: RotatedSecret = ask(&api, "auth", auth_ops::ROTATE_SECRET, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(secret)))
}

async fn revoke_own_key(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    revoke(&api, bot.bot_id, key_id).await
}

async fn admin_rotate_key(
    _: Admin,
    State(api): State<Arc<Api>>,
    Path(bot_id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    new_key(&api, bot_id, &body).await
}

async fn admin_revoke_key(
    _: Admin,
    State(api): State<Arc<Api>>,
    Path((bot_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    revoke(&api, bot_id, key_id).await
}

/// Body of `PATCH /admin/v1/bots/{bot_id}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BotPatch {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    rate_limit: Option<patchbay_contract::RateLimit>,
    /// Per platform: the template sent instead of a free-form message outside the platform's
    /// messaging window (`null` removes it; platforms not named keep theirs).
    #[serde(default)]
    fallback_templates: Option<
        std::collections::BTreeMap<
            patchbay_contract::Platform,
            Option<patchbay_contract::FallbackTemplate>,
        >,
    >,
    /// Per platform: the bot's settings there, checked by the platform (`null` removes
    /// them; platforms not named keep theirs): `send_outside_window` (Viber: send what the
    /// bot starts outside the 24-hour session, billed), `welcome` (Viber: the message
    /// answering a user who opens the chat).
    #[serde(default)]
    platform_settings: Option<
        std::collections::BTreeMap<
            patchbay_contract::Platform,
            Option<patchbay_contract::PlatformSettings>,
        >,
    >,
    /// Minutes a conversation stays with a human agent without an agent message before it
    /// returns to the bot (1 to 10080; 30 by default).
    #[serde(default)]
    handover_idle_minutes: Option<u64>,
}

async fn set_bot_state(
    _: Admin,
    State(api): State<Arc<Api>>,
    Path(bot_id): Path<String>,
    ApiJson(body): ApiJson<BotPatch>,
) -> Result<StatusCode, ApiError> {
    for (platform, fallback) in body.fallback_templates.iter().flatten() {
        if let Some(patchbay_contract::FallbackTemplate::Registered { template_id }) = fallback {
            check_registered_fallback(&api, &bot_id, *platform, template_id).await?;
        }
    }
    let req = BotStateRequest {
        v: V1,
        bot_id,
        enabled: body.enabled,
        rate_limit: body.rate_limit,
        fallback_templates: body.fallback_templates,
        platform_settings: body.platform_settings,
        handover_idle_secs: body.handover_idle_minutes.map(|m| m.saturating_mul(60)),
    };
    let () = ask(&api, "auth", auth_ops::SET_BOT_STATE, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A registry template as a bot's fallback on `platform`: it must be the bot's, have the
/// platform's own form (a text is what the window refuses), and use no `meta` variables (a
/// fallback replaces a message, so there is no send to give them); 422 naming the field.
async fn check_registered_fallback(
    api: &Api,
    bot_id: &str,
    platform: patchbay_contract::Platform,
    template_id: &str,
) -> Result<(), ApiError> {
    let at = format!("fallback_templates.{platform}.template_id");
    let refuse = |why: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("{at}: {why}"),
        )
    };
    let req = patchbay_contract::TemplateRequest {
        v: V1,
        bot_id: bot_id.to_owned(),
        op: patchbay_contract::TemplateOp::Get {
            id: template_id.to_owned(),
        },
    };
    let template: patchbay_contract::templates::StoredTemplate = match ask(
        api,
        "router",
        patchbay_contract::router_ops::TEMPLATES,
        &req,
    )
    .await
    {
        Ok(t) => t,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return Err(refuse(format!("the bot has no template {template_id}")));
        }
        Err(e) => return Err(e),
    };
    if patchbay_registry::template_form(platform, &template.def).is_none() {
        return Err(refuse(format!(
            "template {} has no {platform} form; outside the window only the platform's own \
             template can be sent",
            template.def.name
        )));
    }
    let meta = template.missing_meta(&Default::default());
    if !meta.is_empty() {
        return Err(refuse(format!(
            "template {} uses {}, which a fallback has no values for (only contact.name and \
             contact.fields.<name>)",
            template.def.name,
            meta.join(", ")
        )));
    }
    Ok(())
}

/// Body of `PATCH /admin/v1/bots/{bot_id}/channels/{channel_id}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelPatch {
    /// Whether the channel receives and sends (a Viber channel's webhook is removed at
    /// Viber while it is disabled, and set again when it is enabled).
    enabled: bool,
}

async fn set_channel_state(
    _: Admin,
    State(api): State<Arc<Api>>,
    Path((bot_id, channel_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ChannelPatch>,
) -> Result<StatusCode, ApiError> {
    let req = patchbay_contract::ChannelStateRequest {
        v: V1,
        bot_id,
        channel_id,
        enabled: body.enabled,
    };
    let () = ask(&api, "auth", auth_ops::SET_CHANNEL_STATE, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A list answer.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Items<T> {
    pub(crate) items: Vec<T>,
}

/// Body of `POST /admin/v1/tenants`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenantBody {
    name: String,
}

async fn create_tenant(
    _: Admin,
    State(api): State<Arc<Api>>,
    ApiJson(body): ApiJson<CreateTenantBody>,
) -> Result<impl IntoResponse, ApiError> {
    let req = patchbay_contract::CreateTenantRequest {
        v: V1,
        name: body.name,
    };
    let tenant: patchbay_contract::Tenant =
        ask(&api, "auth", auth_ops::CREATE_TENANT, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(tenant)))
}

async fn list_tenants(
    _: Admin,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<Items<patchbay_contract::Tenant>>, ApiError> {
    let items = ask(&api, "auth", auth_ops::LIST_TENANTS, &serde_json::json!({})).await?;
    Ok(axum::Json(Items { items }))
}

/// Query of `GET /admin/v1/bots`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BotsQuery {
    #[serde(default)]
    tenant_id: Option<String>,
}

async fn list_bots(
    _: Admin,
    State(api): State<Arc<Api>>,
    query: Result<axum::extract::Query<BotsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Items<patchbay_contract::BotSummary>>, ApiError> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let req = patchbay_contract::ListBotsRequest {
        v: V1,
        tenant_id: q.tenant_id,
    };
    let items = ask(&api, "auth", auth_ops::LIST_BOTS, &req).await?;
    Ok(axum::Json(Items { items }))
}
