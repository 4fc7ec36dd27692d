//! A bot's channels as the operator sees them (`GET /admin/v1/bots/{bot_id}/channels` and
//! `GET /admin/v1/bots/{bot_id}/channels/{channel_id}`) and as the bot's owner does (`GET
//! /v1/channels`, `GET /v1/channels/{channel_id}`, scope `settings:read`), read from the
//! config view (never the credentials) with each channel's setup at its platform from the
//! `<p>_setup` bucket (Kik: whether `outbound-kik` could set the bot's webhook and features,
//! and what Kik read back). A channel's profile at its platform (`GET`/`PATCH
//! /v1/channels/{channel_id}/profile`, scopes `settings:read`/`settings:write`) is read and
//! changed by the platform's sender, which holds the credentials
//! (`<p>.rpc.outbound-<platform>.channel_profile`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use patchbay_bus::SetupLog;
use patchbay_contract::{
    ChannelProfile, ChannelProfileRequest, ChannelRecord, ChannelView, V1, outbound_ops,
};
use patchbay_runtime::ApiError;
use patchbay_runtime::http::ApiJson;
use serde::{Deserialize, Serialize};

use crate::Api;
use crate::auth::{Admin, BotAuth};
use crate::settings::Items;

fn no_bot(bot_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no bot {bot_id}"),
    )
}

async fn view(
    log: &SetupLog,
    activity: &patchbay_bus::ActivityLog,
    c: &ChannelRecord,
) -> Result<ChannelView, ApiError> {
    let webhook_path = patchbay_registry::spec(c.platform)
        .map(|s| (s.webhook_path)(&c.id))
        .unwrap_or_default();
    Ok(ChannelView {
        id: c.id.clone(),
        bot_id: c.bot_id.clone(),
        platform: c.platform,
        enabled: c.enabled,
        webhook_path,
        api_base_url: c.api_base_url.clone(),
        setup: log.read(&c.id).await?,
        activity: activity.read(&c.id).await?,
        updated_at: c.updated_at,
    })
}

/// `GET /admin/v1/bots/{bot_id}/channels`: the bot's channels, oldest first.
pub(crate) async fn list(
    _: Admin,
    State(api): State<Arc<Api>>,
    Path(bot_id): Path<String>,
) -> Result<axum::Json<Items<ChannelView>>, ApiError> {
    channels_of(&api, &bot_id).await
}

/// `GET /v1/channels`: the calling bot's channels, oldest first.
pub(crate) async fn own(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
) -> Result<axum::Json<Items<ChannelView>>, ApiError> {
    channels_of(&api, &bot.bot_id).await
}

/// `GET /v1/channels/{channel_id}`: one of the calling bot's channels (404 for another's).
pub(crate) async fn own_one(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(channel_id): Path<String>,
) -> Result<axum::Json<ChannelView>, ApiError> {
    one(&api, &bot.bot_id, &channel_id).await
}

async fn channels_of(api: &Api, bot_id: &str) -> Result<axum::Json<Items<ChannelView>>, ApiError> {
    let bot = api.view.bot(bot_id).await?.ok_or_else(|| no_bot(bot_id))?;
    let mut items = Vec::with_capacity(bot.channels.len());
    for r in &bot.channels {
        if let Some(c) = api.view.channel(&r.id).await? {
            items.push(view(&api.setup, &api.activity, &c).await?);
        }
    }
    Ok(axum::Json(Items { items }))
}

/// `GET /admin/v1/bots/{bot_id}/channels/{channel_id}`.
pub(crate) async fn get(
    _: Admin,
    State(api): State<Arc<Api>>,
    Path((bot_id, channel_id)): Path<(String, String)>,
) -> Result<axum::Json<ChannelView>, ApiError> {
    one(&api, &bot_id, &channel_id).await
}

async fn one(
    api: &Api,
    bot_id: &str,
    channel_id: &str,
) -> Result<axum::Json<ChannelView>, ApiError> {
    match api.view.channel(channel_id).await? {
        Some(c) if c.bot_id == bot_id => Ok(axum::Json(view(&api.setup, &api.activity, &c).await?)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("bot {bot_id} has no channel {channel_id}"),
        )),
    }
}

/// How long a profile request may take: a change can fetch and upload a picture, and call the
/// platform a few times.
const PROFILE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET /v1/channels/{channel_id}/profile`: the channel's profile as its platform has it.
pub(crate) async fn profile(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(channel_id): Path<String>,
) -> Result<axum::Json<ChannelProfile>, ApiError> {
    channel_profile(&api, &bot.bot_id, &channel_id, None).await
}

/// `PATCH /v1/channels/{channel_id}/profile`: changes the keys given (`null` removes one) at
/// the platform; answers the profile read back.
pub(crate) async fn change_profile(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(channel_id): Path<String>,
    patchbay_runtime::http::ApiJson(change): patchbay_runtime::http::ApiJson<
        serde_json::Map<String, serde_json::Value>,
    >,
) -> Result<axum::Json<ChannelProfile>, ApiError> {
    if change.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "give at least one key of the platform's profile",
        ));
    }
    channel_profile(&api, &bot.bot_id, &channel_id, Some(change)).await
}

pub(crate) async fn channel_profile(
    api: &Api,
    bot_id: &str,
    channel_id: &str,
    change: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<axum::Json<ChannelProfile>, ApiError> {
    let channel = match api.view.channel(channel_id).await? {
        Some(c) if c.bot_id == bot_id => c,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("bot {bot_id} has no channel {channel_id}"),
            ));
        }
    };
    let subject = api.bus.subjects().rpc(
        &format!("outbound-{}", channel.platform.as_str()),
        outbound_ops::CHANNEL_PROFILE,
    );
    let req = ChannelProfileRequest {
        v: V1,
        bot_id: bot_id.to_owned(),
        channel_id: channel_id.to_owned(),
        change,
    };
    match api.bus.request(&subject, &req, PROFILE_WAIT).await {
        Ok(answer) => Ok(axum::Json(answer?)),
        Err(patchbay_bus::BusError::NoResponders(_)) => Err(ApiError::unavailable(format!(
            "no {} sender is running to reach the platform; retry shortly",
            channel.platform
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Body of `POST /v1/channels/{channel_id}/try`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TryBody {
    /// What the made-up user writes: 1 to 4096 characters.
    text: String,
}

/// A webhook request as the channel's platform would send it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct TryRequest {
    /// `POST`.
    method: &'static str,
    /// The channel's webhook path on the public listener.
    path: String,
    /// The headers to send, the platform's signature among them.
    headers: std::collections::BTreeMap<String, String>,
    /// The body, as the platform posts it.
    body: String,
}

/// `POST /v1/channels/{channel_id}/try`: a text from a made-up user as the platform would
/// post it to one of the bot's channels' webhook, signed with the channel's credentials, for
/// the console's "try it" box to post (Patchbay does not post it itself). 422
/// `try_unsupported` for platforms without one; 404 for another bot's channel.
pub(crate) async fn try_it(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(channel_id): Path<String>,
    ApiJson(body): ApiJson<TryBody>,
) -> Result<axum::Json<TryRequest>, ApiError> {
    let bot_id = bot.bot_id;
    let channel = match api.view.channel(&channel_id).await? {
        Some(c) if c.bot_id == bot_id => c,
        _ => {
            return Err(ApiError::not_found(format!(
                "bot {bot_id} has no channel {channel_id}"
            )));
        }
    };
    let length = body.text.chars().count();
    if !(1..=4096).contains(&length) {
        return Err(crate::unprocessable("text: must be 1 to 4096 characters"));
    }
    let spec =
        patchbay_registry::spec(channel.platform).map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(make) = spec.try_it else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "try_unsupported",
            format!(
                "{} channels have no try-it message; send one from the platform's app",
                channel.platform
            ),
        ));
    };
    let credentials: serde_json::Value =
        patchbay_platform::ingress::open_credentials(&api.master_key, &channel)
            .map_err(ApiError::internal)?;
    let seq = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
    let request = make(&credentials, &body.text, seq).map_err(ApiError::internal)?;
    Ok(axum::Json(TryRequest {
        method: "POST",
        path: (spec.webhook_path)(&channel.id),
        headers: request
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        body: request.body,
    }))
}
