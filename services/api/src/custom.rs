//! Revoking custom channels' user tokens (`patchbay_custom::users`): every token of one user,
//! or of one of the bot's custom channels, issued until now stops working at once. The app
//! registers the user again (with its back end's proof) for a new token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use patchbay_contract::Platform;
use patchbay_custom::api::RevokedTokens;
use patchbay_runtime::ApiError;

use crate::Api;
use crate::auth::BotAuth;

fn not_custom(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_custom",
        format!("{what} is not on a custom channel; only custom channels' users have tokens"),
    )
}

/// `POST /v1/users/{user_id}/tokens/revoke`.
pub(crate) async fn revoke_user(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(user_id): Path<String>,
) -> Result<axum::Json<RevokedTokens>, ApiError> {
    let profile = crate::users::profile(&api, &bot.bot_id, &user_id).await?;
    if profile.inner().channel.platform != Platform::Custom {
        return Err(not_custom(&format!("user {user_id}")));
    }
    let at = api
        .custom_users
        .revoke_user(&profile.inner().id, chrono::Utc::now())
        .await
        .map_err(ApiError::unavailable)?;
    tracing::info!(bot_id = %bot.bot_id, user_id, "custom user's tokens revoked");
    Ok(axum::Json(RevokedTokens {
        tokens_revoked_at: at,
    }))
}

/// `POST /v1/channels/{channel_id}/tokens/revoke`.
pub(crate) async fn revoke_channel(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(channel_id): Path<String>,
) -> Result<axum::Json<RevokedTokens>, ApiError> {
    let channel = api
        .view
        .channel(&channel_id)
        .await?
        .filter(|c| c.bot_id == bot.bot_id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("this bot has no channel {channel_id}"),
            )
        })?;
    if channel.platform != Platform::Custom {
        return Err(not_custom(&format!("channel {channel_id}")));
    }
    let at = api
        .custom_users
        .revoke_channel(&channel.id, chrono::Utc::now())
        .await
        .map_err(ApiError::unavailable)?;
    tracing::info!(bot_id = %bot.bot_id, channel_id, "custom channel's tokens revoked");
    Ok(axum::Json(RevokedTokens {
        tokens_revoked_at: at,
    }))
}
