//! BrandChat's API for bots with the `brandchat` flavour, so that clients written for BrandChat
//! (its PHP SDK) work unchanged when pointed at Patchbay (`reference/seed-systems.md` §1):
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /brandchat/api/user/profile` | `{"userId": 1337}` | the profile object |
//! | `POST /brandchat/api/send/messages` | an array of 1–10 messages, each with `userId` | 200, empty; all valid or none sent |
//! | `POST /brandchat/api/code/claim` | `{"code": "…"}` | the profile object; a code is claimed once |
//!
//! Every call names the bot with `?bot=<bot id>` and signs the raw body with
//! `X-Chat-Signature`: hex HMAC-SHA1 keyed with one of the bot's API keys, compared in constant
//! time and case-insensitively. A missing signature (or bot, or a bot without the flavour) is
//! 401, a wrong one 403, checked before the body is read. Errors are BrandChat's
//! `{"reason": "…"}` with its status codes (400 bad payload, 401, 403, 404 unknown user, 410 a
//! spent code, 429 beyond the bot's request limit, 503). `file/upload` is not offered: Patchbay
//! keeps no media; messages name their media by `url`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use patchbay_config::MasterKey;
use patchbay_contract::brandchat::{BrandchatMessage, BrandchatProfile, contents, key_owner};
use patchbay_contract::ids::{new_id, prefix};
use patchbay_contract::{
    BotRecord, FindNumberedUserRequest, Recipient, SendCommand, SendSource, UserProfile, V1,
    WebhookFlavour, router_ops,
};
use patchbay_runtime::ApiError;
use serde::Deserialize;

use crate::codes::{Codes, claim_code};
use crate::{Api, ask};

/// The BrandChat routes.
pub(crate) fn routes(codes: Arc<Codes>, key: Option<MasterKey>) -> Router<Arc<Api>> {
    Router::new()
        .route("/brandchat/api/user/profile", post(user_profile))
        .route("/brandchat/api/send/messages", post(send_messages))
        .route("/brandchat/api/code/claim", post(code_claim))
        .layer(Extension(codes))
        .layer(Extension(Arc::new(key)))
}

/// An error as BrandChat answers it: a status and `{"reason": "…"}`.
pub(crate) struct Refusal {
    status: StatusCode,
    reason: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            retry_after: None,
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status,
            reason: e.message,
            retry_after: e.retry_after,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({"reason": self.reason})),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert("retry-after", v);
        }
        r
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct BotQuery {
    #[serde(default)]
    bot: Option<String>,
}

/// Checks `?bot=` and `X-Chat-Signature` over `body`, and the bot's request limit: the bot.
async fn authenticate(
    api: &Api,
    key: Option<&MasterKey>,
    query: &BotQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Arc<BotRecord>, Refusal> {
    let unauthorized = |reason: &str| Refusal::new(StatusCode::UNAUTHORIZED, reason);
    let bot_id = query
        .bot
        .as_deref()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| unauthorized("Bot identifier missing from request (?bot=)"))?;
    let bot = api
        .view
        .bot(bot_id)
        .await
        .map_err(ApiError::from)?
        .filter(|b| b.enabled && b.webhook.flavour == WebhookFlavour::Brandchat)
        .ok_or_else(|| unauthorized("API not enabled for this bot"))?;
    let given = headers
        .get("x-chat-signature")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| unauthorized("X-Chat-Signature missing"))?;
    let key = key.ok_or_else(|| unauthorized("API not enabled: no master key configured"))?;
    let now = chrono::Utc::now();
    let matches = bot
        .brandchat_keys
        .iter()
        .filter(|k| k.expires_at.is_none_or(|t| t > now))
        .filter_map(|k| key.open(&key_owner(&bot.id), &k.sealed).ok())
        .any(|api_key| {
            patchbay_platform::webhook::chat_signature_matches(
                &String::from_utf8_lossy(&api_key),
                body,
                given,
            )
        });
    if !matches {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "X-Chat-Signature does not match",
        ));
    }
    api.limits
        .admit(&bot.id, bot.rate_limit)
        .map_err(|seconds| Refusal {
            retry_after: Some(seconds),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("over this bot's request limit; retry after {seconds} s"),
            )
        })?;
    Ok(bot)
}

fn bad_payload(reason: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, reason)
}

/// The bot's user with BrandChat's numeric id, or 404.
async fn numbered_user(api: &Api, bot_id: &str, number: i64) -> Result<UserProfile, Refusal> {
    let req = FindNumberedUserRequest {
        v: V1,
        bot_id: bot_id.to_owned(),
        number,
    };
    ask::<_, UserProfile>(api, "router", router_ops::FIND_NUMBERED_USER, &req)
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                Refusal::new(StatusCode::NOT_FOUND, format!("no user {number}"))
            } else {
                e.into()
            }
        })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserProfileBody {
    user_id: i64,
}

async fn user_profile(
    State(api): State<Arc<Api>>,
    Extension(key): Extension<Arc<Option<MasterKey>>>,
    Query(query): Query<BotQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<BrandchatProfile>, Refusal> {
    let bot = authenticate(&api, key.as_ref().as_ref(), &query, &headers, &body).await?;
    let body: UserProfileBody =
        serde_json::from_slice(&body).map_err(|e| bad_payload(e.to_string()))?;
    let user = numbered_user(&api, &bot.id, body.user_id).await?;
    Ok(axum::Json(BrandchatProfile::from(&user)))
}

async fn send_messages(
    State(api): State<Arc<Api>>,
    Extension(key): Extension<Arc<Option<MasterKey>>>,
    Query(query): Query<BotQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Refusal> {
    let bot = authenticate(&api, key.as_ref().as_ref(), &query, &headers, &body).await?;
    let messages: Vec<BrandchatMessage> =
        serde_json::from_slice(&body).map_err(|e| bad_payload(e.to_string()))?;
    let contents = contents(&messages, true).map_err(|e| bad_payload(e.to_string()))?;
    // All recipients must exist before anything is sent.
    let mut recipients: Vec<(i64, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let number = m.user_id.unwrap_or_default();
        if !recipients.iter().any(|(n, _)| *n == number) {
            let user = numbered_user(&api, &bot.id, number).await.map_err(|r| {
                if r.status == StatusCode::NOT_FOUND {
                    bad_payload(format!("[{i}].userId: no user {number}"))
                } else {
                    r
                }
            })?;
            recipients.push((number, user.id));
        }
    }
    // Consecutive messages to one user travel as one command, so they keep their order.
    let mut batches: Vec<(String, Vec<patchbay_contract::Content>)> = Vec::new();
    for (m, content) in messages.iter().zip(contents) {
        let number = m.user_id.unwrap_or_default();
        let user_id = recipients
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, id)| id.clone())
            .unwrap_or_default();
        match batches.last_mut() {
            Some((u, list)) if *u == user_id => list.push(content),
            _ => batches.push((user_id, vec![content])),
        }
    }
    let subject = api.bus.subjects().send(&bot.id).map_err(ApiError::from)?;
    for (user_id, messages) in batches {
        let id = new_id(prefix::COMMAND);
        let command = SendCommand {
            v: V1,
            id: Some(id.clone()),
            to: Recipient::User { user_id },
            messages,
            source: SendSource::Api,
            source_id: None,
            in_reply_to: None,
        };
        api.bus
            .publish(&subject, &id, &command)
            .await
            .map_err(ApiError::from)?;
    }
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
struct CodeClaimBody {
    code: String,
}

async fn code_claim(
    State(api): State<Arc<Api>>,
    Extension(key): Extension<Arc<Option<MasterKey>>>,
    Extension(codes): Extension<Arc<Codes>>,
    Query(query): Query<BotQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<BrandchatProfile>, Refusal> {
    let bot = authenticate(&api, key.as_ref().as_ref(), &query, &headers, &body).await?;
    let body: CodeClaimBody =
        serde_json::from_slice(&body).map_err(|e| bad_payload(e.to_string()))?;
    let profile = claim_code(&api, &codes, &bot.id, &body.code).await?;
    Ok(axum::Json(BrandchatProfile::from(profile.inner())))
}
