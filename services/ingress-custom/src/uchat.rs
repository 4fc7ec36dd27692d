//! UChat's API chat channel on custom channels of the `uchat` flavour
//! ([`patchbay_custom::uchat`]): `POST /api/apichat/{channel_id}`, the `bot_url` the partner
//! API answers, where the partner's system sends as its users with the workspace's "flow API
//! key": any API key of the channel's bot with `messages:send`, checked before the body is
//! read. A user's first message registers them (the tenant gets `user.subscribed`); the bot's
//! and agents' answers reach the channel's webhook, never this answer.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use patchbay_config::secrets::api_key_hash;
use patchbay_custom::api::SendAsUser;
use patchbay_custom::inbound::AppUser;
use patchbay_custom::uchat::ApiChatMessage;
use patchbay_custom::{CustomFlavour, token};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::{bearer_token, parse_json, read_body};
use serde_json::{Value, json};

use crate::{Ingress, deliver, invalid, outcome, refused};

/// UChat's answer.
fn ok(data: Value) -> axum::Json<Value> {
    axum::Json(json!({"status": "ok", "data": data}))
}

/// `POST /api/apichat/{channel_id}`: the partner's user sends a message to the bot.
pub(crate) async fn send(
    State(s): State<Arc<Ingress>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Result<axum::Json<Value>, ApiError> {
    // The key first: a caller without one learns nothing about the channel.
    let key = bearer_token(&headers).ok_or_else(|| {
        refused(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <the flow API key: an API key of the bot>",
        )
    })?;
    let record = s.view.api_key(&api_key_hash(key)).await?.ok_or_else(|| {
        refused(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "not an API key of a bot",
        )
    })?;
    let (channel, creds) = s.channel(&channel_id).await?;
    if creds.flavour != Some(CustomFlavour::Uchat) || channel.bot_id != record.bot_id {
        outcome("unknown_channel");
        return Err(ApiError::not_found(format!(
            "this key's bot has no API chat channel {channel_id}"
        )));
    }
    if !patchbay_contract::scopes::grants(record.scopes.as_deref(), "messages:send") {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "missing_scope",
            "this API key lacks the scope messages:send that sending to the bot needs",
        ));
    }
    let body: ApiChatMessage = parse_json(&read_body(req).await?)?;
    if !token::valid_user_id(&body.user_id) {
        return Err(invalid(
            "user_id",
            "must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', ':', '@' or '.'",
        ));
    }
    let content = body.content().map_err(|(f, m)| invalid(f, &m))?;
    // A user's first message registers them.
    let user = AppUser {
        platform_user_id: body.user_id.clone(),
        display_name: body.user_name.clone().filter(|n| !n.trim().is_empty()),
        ..AppUser::default()
    };
    s.register_if_new(&channel, user).await?;
    let sent = deliver(
        &s,
        &channel,
        body.user_id.clone(),
        SendAsUser {
            id: body.id,
            content,
            wait_ms: Some(0),
        },
    )
    .await?;
    Ok(ok(json!({
        "user_id": body.user_id,
        "message_id": sent.message_id,
        "duplicate": sent.duplicate,
    })))
}
