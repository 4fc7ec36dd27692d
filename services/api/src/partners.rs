//! Partner apps (`patchbay_contract::partners`), kept by `auth` and answered over
//! `<p>.rpc.auth.partners`, always within the caller: the operator adds partners
//! (`/admin/v1/partners`); a partner, with its own key, publishes apps, lists its
//! installations and takes an access token per installation (`/v1/partner/…`); a bot's owner
//! reads an app, enables it on the bot (all channels, or some), sees what it enabled and
//! disables it (`/v1/apps…`, scopes `settings:read`/`settings:write`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use patchbay_contract::partners::{
    App, AppDef, CreatedApp, CreatedPartner, Installation, Partner, PartnerOp, PartnerRequest,
};
use patchbay_contract::{IssuedAccessToken, V1, auth_ops};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::ApiJson;
use serde::Deserialize;

use crate::auth::{Admin, BotAuth, PartnerAuth};
use crate::settings::Items;
use crate::{Api, ask};

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/admin/v1/partners",
            get(list_partners).post(create_partner),
        )
        .route("/v1/partner/apps", get(list_apps).post(create_app))
        .route(
            "/v1/partner/apps/{app_id}",
            get(read_app).put(replace_app).delete(delete_app),
        )
        .route("/v1/partner/installations", get(partner_installations))
        .route(
            "/v1/partner/installations/{installation_id}/token",
            post(installation_token),
        )
        .route("/v1/apps", get(bot_installations))
        .route("/v1/apps/{app_id}", get(app_card).delete(disable))
        .route("/v1/apps/{app_id}/enable", post(enable))
}

async fn run<T: serde::de::DeserializeOwned>(api: &Api, op: PartnerOp) -> Result<T, ApiError> {
    ask(
        api,
        "auth",
        auth_ops::PARTNERS,
        &PartnerRequest { v: V1, op },
    )
    .await
}

/// Body of `POST /admin/v1/partners`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartnerBody {
    /// The partner's name.
    name: String,
}

/// `POST /admin/v1/partners`: 201 with the partner and its key (shown once).
async fn create_partner(
    _: Admin,
    State(api): State<Arc<Api>>,
    ApiJson(body): ApiJson<PartnerBody>,
) -> Result<(StatusCode, axum::Json<CreatedPartner>), ApiError> {
    let created = run(&api, PartnerOp::CreatePartner { name: body.name }).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// `GET /admin/v1/partners`.
async fn list_partners(
    _: Admin,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<Items<Partner>>, ApiError> {
    let items = run(&api, PartnerOp::ListPartners).await?;
    Ok(axum::Json(Items { items }))
}

/// `POST /v1/partner/apps`: 201 with the app and its webhook secret (shown once).
async fn create_app(
    partner: PartnerAuth,
    State(api): State<Arc<Api>>,
    ApiJson(app): ApiJson<AppDef>,
) -> Result<(StatusCode, axum::Json<CreatedApp>), ApiError> {
    let created = run(
        &api,
        PartnerOp::CreateApp {
            partner_id: partner.partner_id,
            app,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// `GET /v1/partner/apps`: the partner's apps.
async fn list_apps(
    partner: PartnerAuth,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<Items<App>>, ApiError> {
    let items = run(
        &api,
        PartnerOp::ListApps {
            partner_id: partner.partner_id,
        },
    )
    .await?;
    Ok(axum::Json(Items { items }))
}

/// `GET /v1/partner/apps/{app_id}`: one of the partner's apps.
async fn read_app(
    partner: PartnerAuth,
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
) -> Result<axum::Json<App>, ApiError> {
    let op = PartnerOp::GetApp {
        app_id,
        partner_id: Some(partner.partner_id),
    };
    Ok(axum::Json(run(&api, op).await?))
}

/// `PUT /v1/partner/apps/{app_id}`: replaces the definition; every installation follows.
async fn replace_app(
    partner: PartnerAuth,
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
    ApiJson(app): ApiJson<AppDef>,
) -> Result<axum::Json<App>, ApiError> {
    let op = PartnerOp::ReplaceApp {
        partner_id: partner.partner_id,
        app_id,
        app,
    };
    Ok(axum::Json(run(&api, op).await?))
}

/// `DELETE /v1/partner/apps/{app_id}`: withdraws the app; every installation ends.
async fn delete_app(
    partner: PartnerAuth,
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let op = PartnerOp::DeleteApp {
        partner_id: partner.partner_id,
        app_id,
    };
    let _: serde_json::Value = run(&api, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/partner/installations`: where the partner's apps are enabled.
async fn partner_installations(
    partner: PartnerAuth,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<Items<Installation>>, ApiError> {
    let op = PartnerOp::Installations {
        bot_id: None,
        partner_id: Some(partner.partner_id),
    };
    Ok(axum::Json(Items {
        items: run(&api, op).await?,
    }))
}

/// `POST /v1/partner/installations/{installation_id}/token`: an access token for the
/// installation's bot, with the app's scopes, through the installation's channels.
async fn installation_token(
    partner: PartnerAuth,
    State(api): State<Arc<Api>>,
    Path(installation_id): Path<String>,
) -> Result<axum::Json<IssuedAccessToken>, ApiError> {
    let op = PartnerOp::InstallationToken {
        partner_id: partner.partner_id,
        installation_id,
    };
    Ok(axum::Json(run(&api, op).await?))
}

/// `GET /v1/apps`: the apps enabled on the calling bot.
async fn bot_installations(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<Items<Installation>>, ApiError> {
    let op = PartnerOp::Installations {
        bot_id: Some(bot.bot_id),
        partner_id: None,
    };
    Ok(axum::Json(Items {
        items: run(&api, op).await?,
    }))
}

/// `GET /v1/apps/{app_id}`: an app as an organisation sees it before enabling it.
async fn app_card(
    _: BotAuth,
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
) -> Result<axum::Json<App>, ApiError> {
    let op = PartnerOp::GetApp {
        app_id,
        partner_id: None,
    };
    Ok(axum::Json(run(&api, op).await?))
}

/// Body of `POST /v1/apps/{app_id}/enable`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnableBody {
    /// Some of the bot's channels; absent: all of them, new ones included.
    #[serde(default)]
    channels: Option<Vec<String>>,
}

/// `POST /v1/apps/{app_id}/enable`: enables the app on the calling bot (again: changes its
/// channels).
async fn enable(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Installation>, ApiError> {
    // No body: every channel.
    let body: EnableBody = if body.iter().all(u8::is_ascii_whitespace) {
        EnableBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| crate::unprocessable(format!("invalid JSON body: {e}")))?
    };
    let op = PartnerOp::Enable {
        bot_id: bot.bot_id,
        app_id,
        channels: body.channels,
    };
    Ok(axum::Json(run(&api, op).await?))
}

/// `DELETE /v1/apps/{app_id}`: disables the app on the calling bot: its events stop and its
/// tokens stop working.
async fn disable(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let op = PartnerOp::Disable {
        bot_id: bot.bot_id,
        app_id,
    };
    let _: serde_json::Value = run(&api, op).await?;
    Ok(StatusCode::NO_CONTENT)
}
