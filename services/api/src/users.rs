//! `GET /v1/users/{user_id}` and `GET /v1/users?platform=…&platform_user_id=…`: a user's
//! profile, answered by `bot-router` over request/reply, always within the caller's bot (a
//! user of another bot is 404, as one that does not exist).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use patchbay_contract::{FindUserRequest, GetUserRequest, Platform, UserProfile, V1, router_ops};
use patchbay_runtime::ApiError;
use serde::{Deserialize, Serialize};

use crate::auth::BotAuth;
use crate::{Api, ask};

/// A user's profile as the tenant API shows it: the router's profile plus the platform at the
/// top level.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Profile {
    #[serde(flatten)]
    profile: UserProfile,
    platform: Platform,
}

impl Profile {
    /// The router's profile.
    pub(crate) fn inner(&self) -> &UserProfile {
        &self.profile
    }
}

impl From<UserProfile> for Profile {
    fn from(profile: UserProfile) -> Self {
        Self {
            platform: profile.channel.platform,
            profile,
        }
    }
}

/// The profile of `user_id` of `bot_id`; 404 `user_not_found` when the bot has no such user.
pub(crate) async fn profile(api: &Api, bot_id: &str, user_id: &str) -> Result<Profile, ApiError> {
    let req = GetUserRequest {
        v: V1,
        bot_id: bot_id.to_owned(),
        user_id: user_id.to_owned(),
    };
    ask::<_, UserProfile>(api, "router", router_ops::GET_USER, &req)
        .await
        .map(Profile::from)
        .map_err(|e| not_found(e, &format!("this bot has no user {user_id}")))
}

fn not_found(e: ApiError, message: &str) -> ApiError {
    if e.status == StatusCode::NOT_FOUND {
        ApiError::new(StatusCode::NOT_FOUND, "user_not_found", message)
    } else {
        e
    }
}

pub(crate) async fn get_user(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(user_id): Path<String>,
) -> Result<axum::Json<Profile>, ApiError> {
    Ok(axum::Json(profile(&api, &bot.bot_id, &user_id).await?))
}

/// Query of `GET /v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FindQuery {
    platform: Platform,
    platform_user_id: String,
}

pub(crate) async fn find_user(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    query: Result<Query<FindQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Profile>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("{}; give platform and platform_user_id", e.body_text()),
        )
    })?;
    if q.platform_user_id.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "platform_user_id: must not be empty",
        ));
    }
    let req = FindUserRequest {
        v: V1,
        bot_id: bot.bot_id,
        platform: q.platform,
        platform_user_id: q.platform_user_id.clone(),
    };
    let profile: UserProfile = ask(&api, "router", router_ops::FIND_USER, &req)
        .await
        .map_err(|e| {
            not_found(
                e,
                &format!(
                    "this bot has no {} user {}",
                    q.platform.as_str(),
                    q.platform_user_id
                ),
            )
        })?;
    Ok(axum::Json(profile.into()))
}
