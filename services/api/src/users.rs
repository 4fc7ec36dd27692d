//! `GET /v1/users/{user_id}` and `GET /v1/users?platform=…&platform_user_id=…`: a user's
//! profile; `PATCH /v1/users/{user_id}`: its contact fields; `GET /v1/users?field.<name>=…`:
//! the users whose fields hold those values. Answered by `bot-router` over request/reply,
//! always within the caller's bot (a user of another bot is 404, as one that does not exist).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use patchbay_contract::fields::{FieldChanges, Fields};
use patchbay_contract::{
    FindUserRequest, GetUserRequest, Platform, SearchUsersRequest, SetUserFieldsRequest, UserPage,
    UserProfile, V1, router_ops,
};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::ApiJson;
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

/// Body of `PATCH /v1/users/{user_id}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchUser {
    /// Field name → new value; `null` removes the field. Names are 1 to 64 characters of
    /// A-Z, a-z, 0-9, '_' and '-', starting with a letter; values at most 1,024 characters; a
    /// user carries at most 64 fields.
    #[serde(default)]
    fields: FieldChanges,
    /// `false`: the user opted out of the bot's broadcasts (they are skipped, `opted_out`);
    /// `true`: they get them again.
    #[serde(default)]
    broadcasts: Option<bool>,
}

/// `PATCH /v1/users/{user_id}`: sets and removes contact fields; answers the profile.
pub(crate) async fn patch_user(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<PatchUser>,
) -> Result<axum::Json<Profile>, ApiError> {
    if body.fields.is_empty() && body.broadcasts.is_none() {
        return Err(invalid_field(
            "fields: give at least one field to set or remove (or broadcasts)",
        ));
    }
    patchbay_contract::fields::check_changes(&body.fields)
        .map_err(|e| invalid_field(format!("{}: {}", e.field, e.message)))?;
    let req = SetUserFieldsRequest {
        v: V1,
        bot_id: bot.bot_id,
        user_id: user_id.clone(),
        fields: body.fields,
        broadcasts: body.broadcasts,
    };
    ask::<_, UserProfile>(&api, "router", router_ops::SET_USER_FIELDS, &req)
        .await
        .map(|p| axum::Json(p.into()))
        .map_err(|e| not_found(e, &format!("this bot has no user {user_id}")))
}

fn invalid_field(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
}

/// What `GET /v1/users` answers: one profile (by the platform's user id) or a page of them
/// (by fields).
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum Found {
    /// `?platform=…&platform_user_id=…`.
    One(Box<Profile>),
    /// `?field.<name>=<value>…`.
    Page(Users),
}

/// A page of users.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Users {
    /// Oldest id first.
    users: Vec<Profile>,
    /// Give it as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Page size of `GET /v1/users?field.…` unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;

/// `GET /v1/users`: by the platform's user id (`platform`, `platform_user_id`), or by contact
/// fields (`field.<name>=<value>`, one or more, all must hold; `limit` 1–200, `after`).
pub(crate) async fn find_user(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<axum::Json<Found>, ApiError> {
    let by_field = query.iter().any(|(k, _)| k.starts_with("field."));
    if by_field {
        return search(&api, bot.bot_id, &query).await.map(axum::Json);
    }
    let (mut platform, mut platform_user_id) = (None, None);
    for (k, v) in &query {
        match k.as_str() {
            "platform" => platform = Some(v.as_str()),
            "platform_user_id" => platform_user_id = Some(v.clone()),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "unknown parameter {other:?}; give platform and platform_user_id, or \
                         field.<name>=<value>"
                    ),
                ));
            }
        }
    }
    let (Some(platform), Some(platform_user_id)) = (platform, platform_user_id) else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "give platform and platform_user_id, or field.<name>=<value>",
        ));
    };
    let platform: Platform = platform.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            format!("platform: unknown platform {platform:?}"),
        )
    })?;
    if platform_user_id.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "platform_user_id: must not be empty",
        ));
    }
    let req = FindUserRequest {
        v: V1,
        bot_id: bot.bot_id,
        platform,
        platform_user_id: platform_user_id.clone(),
    };
    let profile: UserProfile = ask(&api, "router", router_ops::FIND_USER, &req)
        .await
        .map_err(|e| {
            not_found(
                e,
                &format!(
                    "this bot has no {} user {}",
                    platform.as_str(),
                    platform_user_id
                ),
            )
        })?;
    Ok(axum::Json(Found::One(Box::new(profile.into()))))
}

/// `GET /v1/users?field.<name>=<value>…`.
async fn search(api: &Api, bot_id: String, query: &[(String, String)]) -> Result<Found, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut fields = Fields::new();
    let (mut limit, mut after) = (DEFAULT_PAGE, None);
    for (k, v) in query {
        if let Some(name) = k.strip_prefix("field.") {
            patchbay_contract::fields::check_name(name).map_err(|m| bad(format!("{k}: {m}")))?;
            patchbay_contract::fields::check_value(v).map_err(|m| bad(format!("{k}: {m}")))?;
            if fields.insert(name.to_owned(), v.clone()).is_some() {
                return Err(bad(format!("{k}: given twice")));
            }
        } else if k == "limit" {
            limit = v
                .parse()
                .ok()
                .filter(|l| (1..=200).contains(l))
                .ok_or_else(|| bad("limit: must be between 1 and 200".to_owned()))?;
        } else if k == "after" {
            after = Some(v.clone());
        } else {
            return Err(bad(format!(
                "unknown parameter {k:?} with field.<name>; give limit or after"
            )));
        }
    }
    let req = SearchUsersRequest {
        v: V1,
        bot_id,
        fields,
        after,
        limit,
    };
    let page: UserPage = ask(api, "router", router_ops::SEARCH_USERS, &req).await?;
    Ok(Found::Page(Users {
        users: page.users.into_iter().map(Profile::from).collect(),
        next_cursor: page.next_cursor,
    }))
}
