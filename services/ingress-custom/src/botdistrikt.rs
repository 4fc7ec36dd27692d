//! BotDistrikt's webchat API on custom channels of the `botdistrikt` flavour
//! ([`patchbay_custom::botdistrikt`]): a thin translation onto the channel's own paths. The
//! domain (the channel's domain key) is checked in constant time before anything else; the
//! `webchat_id` is the user's credential, refused once the user's or the channel's tokens were
//! revoked after the user registered.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use patchbay_config::secrets::new_url_token;
use patchbay_contract::ChannelRecord;
use patchbay_contract::ids::user_id;
use patchbay_custom::api::SendAsUser;
use patchbay_custom::botdistrikt::{BotResponse, BotUser, MessageRequest, UserRequest, from_form};
use patchbay_custom::inbound::AppUser;
use patchbay_custom::{CustomCredentials, CustomFlavour, token};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::read_body;
use serde::de::DeserializeOwned;

use crate::{Ingress, deliver, invalid, outcome, refused};

/// The `botdistrikt` channel `id` (404 for any other).
async fn channel(
    s: &Ingress,
    id: &str,
) -> Result<(Arc<ChannelRecord>, CustomCredentials), ApiError> {
    let (channel, creds) = s.channel(id).await?;
    if creds.flavour != Some(CustomFlavour::Botdistrikt) {
        outcome("unknown_channel");
        return Err(ApiError::not_found(format!("no webchat app {id}")));
    }
    Ok((channel, creds))
}

/// The body, JSON or form-encoded (as BotDistrikt accepts both).
async fn body<T: DeserializeOwned>(headers: &HeaderMap, req: Request) -> Result<T, ApiError> {
    let bytes = read_body(req).await?;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let value = if form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("form: {e}")))?;
        from_form(&pairs)
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    serde_json::from_value(value).map_err(|e| invalid("body", &e.to_string()))
}

/// Refuses a `domain` that is not the channel's domain key.
fn check_domain(creds: &CustomCredentials, domain: &str) -> Result<(), ApiError> {
    if !creds.is_domain_key(domain) {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "invalid_domain",
            "domain is not this webchat app's domain",
        ));
    }
    Ok(())
}

/// Refuses a user who is not registered, or whose tokens were revoked since.
async fn check_user(
    s: &Ingress,
    channel: &ChannelRecord,
    webchat_id: &str,
) -> Result<String, ApiError> {
    let user = user_id(&channel.id, webchat_id);
    let registered = s
        .users
        .registered_at(&user)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "unknown_webchat_id",
                "no user has this webchat_id: register it with POST …/user first",
            )
        })?;
    let revoked = s
        .users
        .revoked_at_ms(&channel.id, &user)
        .await
        .map_err(ApiError::unavailable)?;
    if revoked.is_some_and(|at| at >= registered.timestamp_millis()) {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "webchat_id_revoked",
            "this webchat_id was revoked; register a new user (POST …/user without webchat_id)",
        ));
    }
    Ok(user)
}

/// `POST /api/webchat_apps/{webchat_app_id}/user`: registers the user (a `webchat_id` is
/// generated when none is given), or finds the registered one; answers the `bot_user`.
pub(crate) async fn user(
    State(s): State<Arc<Ingress>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Result<axum::Json<BotUser>, ApiError> {
    let (channel, creds) = channel(&s, &app_id).await?;
    let body: UserRequest = body(&headers, req).await?;
    check_domain(&creds, &body.domain)?;
    let webchat_id = match body.webchat_id.filter(|w| !w.is_empty()) {
        Some(id) if token::valid_user_id(&id) => id,
        Some(_) => {
            return Err(invalid(
                "webchat_id",
                "must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', ':', '@' or '.'",
            ));
        }
        None => {
            let random = new_url_token().map_err(ApiError::internal)?;
            format!("webchat.{}", &random[..22])
        }
    };
    let user_id = user_id(&channel.id, &webchat_id);
    let bot_user = BotUser::new(&webchat_id, &user_id, body.user.as_ref());
    let user = AppUser {
        platform_user_id: webchat_id.clone(),
        display_name: Some(bot_user.display_name()),
        locale: body.user.as_ref().and_then(|u| u.locale.clone()),
        email: body
            .user
            .as_ref()
            .and_then(|u| u.email.as_deref())
            .and_then(patchbay_contract::normalise_email),
        ..AppUser::default()
    };
    if !s.register_if_new(&channel, user).await? {
        // Known: the webchat_id is the credential; a revoked one stays refused.
        check_user(&s, &channel, &webchat_id).await?;
        outcome("found");
    }
    Ok(axum::Json(bot_user))
}

/// `POST /api/webchat_apps/{webchat_app_id}/message` (`Authorization: <webchat_id>`): sends as
/// the user and answers the bot's responses that came while it waited.
pub(crate) async fn message(
    State(s): State<Arc<Ingress>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Result<axum::Json<Vec<BotResponse>>, ApiError> {
    let (channel, creds) = channel(&s, &app_id).await?;
    // The raw id, as BotDistrikt sends it (a `Bearer ` in front is forgiven).
    let webchat_id = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_start_matches("Bearer ").trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: <the user's webchat_id>",
            )
        })?
        .to_owned();
    let body: MessageRequest = body(&headers, req).await?;
    check_domain(&creds, &body.domain)?;
    check_user(&s, &channel, &webchat_id).await?;
    let content = body
        .message
        .content()
        .ok_or_else(|| invalid("message", "give text or payload"))?;
    let sent = deliver(
        &s,
        &channel,
        webchat_id,
        SendAsUser {
            id: body.message.id,
            content,
            wait_ms: None,
        },
    )
    .await?;
    Ok(axum::Json(
        sent.replies.iter().map(BotResponse::from).collect(),
    ))
}
