//! `api`: the tenant and operator HTTP API. Stateless: it authenticates callers against the
//! config view, asks `auth` and `bot-router` by request/reply, and turns sends into commands on
//! `<p>.send.<bot>`, answering 202 only once JetStream stored them.
//!
//! | route | auth | does |
//! |---|---|---|
//! | `POST /admin/v1/bots` | operator token | create a bot (201 with its API key and webhook secret) |
//! | `POST /admin/v1/bots/{bot_id}/channels` | operator token | connect a messenger account (201) |
//! | `POST /admin/v1/bots/{bot_id}/webhook/enable` | operator token | re-enable an endpoint disabled by a 410 (204) |
//! | `POST /v1/messages` | bot API key | send messages to a user (202 with message ids); 422 `outside_window` outside the platform's messaging window without a fallback template |
//! | `GET /v1/deliveries` | bot API key | the bot's deliveries, newest first (`status`, `event_type`, `since`, `until`, `cursor`, `limit`) |
//! | `GET /v1/deliveries/{event_id}` | bot API key | one delivery with its event and every attempt |
//! | `POST /v1/deliveries/{event_id}/retry` | bot API key | deliver it once more, same `webhook-id` (202) |
//! | `POST /v1/deliveries/replay` | bot API key | deliver the dead-lettered events since a time again (202) |
//! | `GET /v1/users/{user_id}` | bot API key | a user's profile (404 for another bot's user) |
//! | `GET /v1/users?platform=…&platform_user_id=…` | bot API key | the same, by the platform's user id |
//! | `POST`, `GET /v1/templates`; `GET`, `PUT`, `DELETE /v1/templates/{template_id}` | bot API key | the template registry |
//! | `GET /v1/channels`, `GET /v1/channels/{channel_id}` | bot API key | the bot's own channels, as the operator's routes show them (no credentials) |
//! | `PATCH /v1/users/{user_id}` | bot API key | sets and removes the user's contact fields (`{"fields": {"name": "value", "old": null}}`) |
//! | `GET /v1/users?field.<name>=<value>` | bot API key | the users whose fields hold every given value, a page at a time |
//! | `POST /v1/users/{user_id}/tokens/revoke` | bot API key | a custom channel's user: every token issued until now stops working |
//! | `POST /v1/channels/{channel_id}/tokens/revoke` | bot API key | every user token of one of the bot's custom channels issued until now stops working |
//! | `POST /v1/codes/claim` | bot API key | claim a one-time code once: the user's profile (410 otherwise) |
//! | `GET /go/{token}` | none (the user's browser) | mint a one-time code, 302 to the tenant's page |
//! | `GET /v1/webhook` | bot API key | the callback settings |
//! | `PUT /v1/webhook` | bot API key | change URL, flavour, events (wildcards), platforms; a new URL must echo `hub.challenge` first |
//! | `POST /v1/webhook/secret/rotate` | bot API key | new signing secret (201); both sign until the overlap ends |
//! | `POST /v1/keys/rotate` | bot API key (`settings:keys`) | new API key (201), with `scopes` the caller holds; the current ones work until the overlap ends |
//! | `DELETE /v1/keys/{key_id}` | bot API key (`settings:keys`) | revoke one of the bot's keys at once (204) |
//! | `POST /v1/auth/token` | API key or refresh token in the body | an access token with the key's scopes and the next refresh token |
//! | `POST /admin/v1/tenants`, `GET /admin/v1/tenants` | operator token | create a tenant (201), list tenants |
//! | `GET /admin/v1/bots` | operator token | list bots, optionally `?tenant_id=` |
//! | `PATCH /admin/v1/bots/{bot_id}` | operator token | `{"enabled": false}` disables a bot everywhere; `rate_limit`; `fallback_templates` and `platform_settings` per platform (204) |
//! | `POST /admin/v1/bots/{bot_id}/keys/rotate` | operator token | new API key (201), with any `scopes` |
//! | `POST /admin/v1/bots/{bot_id}/keys/{key_id}/revoke` | operator token | revoke a key at once (204) |
//! | `GET /openapi.json` | none | the OpenAPI 3.1 document of all of the above |
//!
//! Every `/v1` request counts against the bot's request limit (`limits`): 429 with
//! `Retry-After` beyond it, `RateLimit-*` headers on every answer.

mod agents;
mod auth;
mod brandchat;
mod broadcasts;
mod calls;
mod channels;
mod chat_api;
mod codes;
mod conversations;
mod custom;
mod limits;
mod media;
mod openapi;
mod partners;
mod scopes;
mod settings;
mod storage;
mod templates;
mod uchat;
mod users;
mod web1on1;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use futures::future::BoxFuture;
use patchbay_bus::{Bus, BusError, ConfigView};
use patchbay_contract::ids::{hashed_id, message_ids, new_id, prefix};
use patchbay_contract::{
    Content, CreateBotRequest, CreateChannelRequest, CreatedBot, CreatedChannel, Platform,
    Recipient, ResolveRecipientRequest, SendCommand, SendSource, UserProfile, V1, WebhookInput,
    auth_ops, dispatcher_ops, router_ops,
};
use patchbay_runtime::http::ApiJson;
use patchbay_runtime::{ApiError, BoxError, Deps, Service};
use serde::{Deserialize, Serialize};

use crate::auth::{Admin, BotAuth};

/// How long the API waits for another service to answer.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it waits for the router to confirm a recipient before accepting anyway.
const RECIPIENT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Api {
    bus: Bus,
    view: ConfigView,
    setup: patchbay_bus::SetupLog,
    /// When each channel's platform last reached Patchbay.
    activity: patchbay_bus::ActivityLog,
    /// The media object store (`GET /v1/media/{media_id}`).
    media: async_nats::jetstream::object_store::ObjectStore,
    media_max_bytes: u64,
    /// The uploads object store (`POST /v1/media`).
    uploads: async_nats::jetstream::object_store::ObjectStore,
    /// What each bot stores, against its quota.
    storage: storage::Ledger,
    admin_token: String,
    limits: limits::Limits,
    /// Custom channels' registered users and token revocations.
    custom_users: patchbay_custom::users::Users,
    /// Opens channels' credentials (the console's "try it" requests).
    master_key: patchbay_config::MasterKey,
    /// Where Patchbay is reached from outside (UChat's `bot_url`).
    public_url: String,
}

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let presence = patchbay_bus::Presence::join(
            &deps.bus,
            "api",
            deps.process.to_string(),
            deps.shutdown.clone(),
        );
        let uploads = deps
            .bus
            .jetstream()
            .get_object_store(&deps.bus.subjects().uploads_store())
            .await?;
        let api = Arc::new(Api {
            bus: deps.bus.clone(),
            view: deps.view.clone(),
            setup: patchbay_bus::SetupLog::open(&deps.bus).await?,
            activity: patchbay_bus::ActivityLog::open(&deps.bus).await?,
            media: deps
                .bus
                .jetstream()
                .get_object_store(&deps.bus.subjects().media_store())
                .await?,
            media_max_bytes: deps.config.media_max_bytes,
            uploads: uploads.clone(),
            storage: storage::Ledger::new(
                deps.bus
                    .jetstream()
                    .get_key_value(
                        deps.bus
                            .subjects()
                            .bucket(patchbay_contract::subjects::Bucket::Quotas),
                    )
                    .await?,
                uploads,
                deps.bus
                    .jetstream()
                    .get_object_store(&deps.bus.subjects().files_store())
                    .await?,
                deps.config.media_quota_bytes,
            ),
            custom_users: patchbay_custom::users::Users::open(
                deps.bus.jetstream(),
                deps.bus.subjects(),
            )
            .await?,
            admin_token: deps.config.require_admin_token()?.to_owned(),
            master_key: deps.config.require_master_key()?,
            public_url: deps.config.public_url.trim_end_matches('/').to_owned(),
            limits: limits::Limits::new(
                patchbay_contract::RateLimit {
                    per_second: deps.config.api_rate_per_second,
                    burst: deps.config.api_rate_burst,
                },
                presence,
            ),
        });
        let codes = codes::Codes::open(&deps).await?;
        // BrandChat's signatures need the bots' API keys, sealed with the master key; requests
        // to auth are sealed with it too.
        let master_key = deps.config.require_master_key()?;
        let routes = Router::new()
            .route("/admin/v1/bots", post(create_bot))
            .route(
                "/admin/v1/bots/{bot_id}/channels",
                post(create_channel).get(channels::list),
            )
            .route(
                "/admin/v1/bots/{bot_id}/channels/{channel_id}",
                axum::routing::get(channels::get),
            )
            .route("/v1/channels/{channel_id}/try", post(channels::try_it))
            .route(
                "/admin/v1/bots/{bot_id}/webhook/enable",
                post(enable_webhook),
            )
            .route("/v1/channels", axum::routing::get(channels::own))
            .route(
                "/v1/channels/{channel_id}",
                axum::routing::get(channels::own_one),
            )
            .route(
                "/v1/channels/{channel_id}/profile",
                axum::routing::get(channels::profile).patch(channels::change_profile),
            )
            .route("/v1/messages", post(send_messages))
            .route("/v1/deliveries", axum::routing::get(list_deliveries))
            .route("/v1/deliveries/replay", post(replay_deliveries))
            .route(
                "/v1/deliveries/{event_id}",
                axum::routing::get(get_delivery),
            )
            .route("/v1/deliveries/{event_id}/retry", post(retry_delivery))
            .route(
                "/v1/conversations",
                post(conversations::upsert).get(conversations::inbox),
            )
            .route(
                "/v1/conversations/{conversation_id}/messages",
                axum::routing::get(conversations::history),
            )
            .route(
                "/v1/conversations/{conversation_id}/handover",
                post(conversations::handover),
            )
            .route(
                "/v1/messages/{message_id}/journey",
                axum::routing::get(conversations::journey),
            )
            .route("/v1/users", axum::routing::get(users::find_user))
            .route(
                "/v1/users/{user_id}",
                axum::routing::get(users::get_user).patch(users::patch_user),
            )
            .route(
                "/v1/users/{user_id}/tokens/revoke",
                post(custom::revoke_user),
            )
            .route(
                "/v1/channels/{channel_id}/tokens/revoke",
                post(custom::revoke_channel),
            )
            .route("/v1/media/{media_id}", axum::routing::get(media::get))
            .route(
                "/v1/media",
                post(media::upload).layer(axum::extract::DefaultBodyLimit::max(
                    // The file and its multipart framing.
                    usize::try_from(deps.config.media_max_bytes)
                        .unwrap_or(usize::MAX)
                        .saturating_add(64 * 1024),
                )),
            )
            .route(
                "/media/{bot_id}/{media_id}",
                axum::routing::get(media::public),
            )
            .merge(brandchat::routes(
                codes.clone(),
                brandchat::Files::open(&deps).await?,
                master_key,
            ))
            .merge(codes::routes(codes))
            .merge(settings::routes())
            .merge(templates::routes())
            .merge(broadcasts::routes())
            .merge(partners::routes())
            .merge(agents::routes())
            .merge(chat_api::routes())
            .merge(web1on1::routes())
            .merge(uchat::routes())
            .route(
                "/openapi.json",
                axum::routing::get(|| async { axum::Json(openapi::document()) }),
            )
            .layer(axum::middleware::from_fn_with_state(
                api.clone(),
                limits::limit,
            ))
            .with_state(api);
        // The console's requests come over NATS and go through the same router.
        let responder = deps
            .bus
            .responder(deps.bus.subjects().rpc_all("api"), "api".into())
            .await?;
        let calls = routes.clone();
        Ok(Service::new("api").routes(routes).task(responder.serve(
            deps.config.consumer_concurrency,
            move |op, body| {
                let router = calls.clone();
                async move { calls::answer(router, &op, body).await }
            },
            deps.shutdown.clone(),
        )))
    })
}

/// Asks `service` to do `op` by request/reply; its errors become HTTP errors.
pub(crate) async fn ask<Req: Serialize, Resp: serde::de::DeserializeOwned>(
    api: &Api,
    service: &str,
    op: &str,
    req: &Req,
) -> Result<Resp, ApiError> {
    let subject = api.bus.subjects().rpc(service, op);
    if service == "auth" {
        // Channel credentials go in, fresh API keys and secrets come out.
        return Ok(api.bus.request_sealed(&subject, req, RPC_TIMEOUT).await??);
    }
    Ok(api.bus.request(&subject, req, RPC_TIMEOUT).await??)
}

/// Body of `POST /admin/v1/bots`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBotBody {
    name: String,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    webhook: Option<WebhookInput>,
}

async fn create_bot(
    _: Admin,
    State(api): State<Arc<Api>>,
    ApiJson(body): ApiJson<CreateBotBody>,
) -> Result<impl IntoResponse, ApiError> {
    let req = CreateBotRequest {
        v: V1,
        name: body.name,
        tenant_id: body.tenant_id,
        webhook: body.webhook,
    };
    let bot: CreatedBot = ask(&api, "auth", auth_ops::CREATE_BOT, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(bot)))
}

/// Body of `POST /admin/v1/bots/{bot_id}/channels`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateChannelBody {
    platform: Platform,
    credentials: serde_json::Value,
    #[serde(default)]
    api_base_url: Option<String>,
    /// Custom channels only: another system's API its apps speak besides Patchbay's own
    /// (`botdistrikt`: BotDistrikt's webchat API; `docs/compat.md`).
    #[serde(default)]
    flavour: Option<String>,
}

async fn create_channel(
    _: Admin,
    State(api): State<Arc<Api>>,
    Path(bot_id): Path<String>,
    ApiJson(body): ApiJson<CreateChannelBody>,
) -> Result<impl IntoResponse, ApiError> {
    let mut credentials = body.credentials;
    let flavour = body.flavour;
    if let Some(f) = &flavour {
        // A custom channel's flavour is stored with its credentials, where its ingress and
        // sender read it.
        match (body.platform, credentials.as_object_mut()) {
            (Platform::Custom, Some(c)) => {
                c.insert("flavour".into(), f.clone().into());
            }
            (Platform::Custom, None) => {
                return Err(unprocessable("credentials: must be an object"));
            }
            (other, _) => {
                return Err(unprocessable(format!(
                    "flavour: only custom channels have one, not {other}"
                )));
            }
        }
    }
    let req = CreateChannelRequest {
        v: V1,
        bot_id,
        platform: body.platform,
        credentials,
        api_base_url: body.api_base_url,
    };
    let mut channel: CreatedChannel = ask(&api, "auth", auth_ops::CREATE_CHANNEL, &req).await?;
    if flavour.as_deref() == Some("botdistrikt")
        && let Some(generated) = channel.generated.as_mut().and_then(|g| g.as_object_mut())
    {
        // BotDistrikt's apps address the channel by its webchat app id.
        generated.insert("webchat_app_id".into(), channel.id.clone().into());
    }
    Ok((StatusCode::CREATED, axum::Json(channel)))
}

async fn enable_webhook(
    _: Admin,
    State(api): State<Arc<Api>>,
    Path(bot_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let req = patchbay_contract::WebhookStateRequest {
        v: V1,
        bot_id,
        reason: None,
    };
    let () = ask(&api, "auth", auth_ops::ENABLE_WEBHOOK, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/deliveries`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryQuery {
    #[serde(default)]
    status: Option<patchbay_contract::DeliveryState>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn list_deliveries(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    query: Result<axum::extract::Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if q.limit.is_some_and(|l| !(1..=100).contains(&l)) {
        return Err(unprocessable("limit: must be between 1 and 100"));
    }
    let req = patchbay_contract::ListDeliveriesRequest {
        v: V1,
        bot_id: bot.bot_id,
        status: q.status,
        event_type: q.event_type,
        since: q.since,
        until: q.until,
        cursor: q.cursor,
        limit: q.limit,
    };
    let page: patchbay_contract::DeliveryPage =
        ask(&api, "dispatcher", dispatcher_ops::LIST, &req).await?;
    Ok(axum::Json(page))
}

async fn get_delivery(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(event_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let req = patchbay_contract::DeliveryRef {
        v: V1,
        bot_id: bot.bot_id,
        event_id,
    };
    let detail: patchbay_contract::DeliveryDetail =
        ask(&api, "dispatcher", dispatcher_ops::GET, &req).await?;
    Ok(axum::Json(detail))
}

async fn retry_delivery(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    Path(event_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let req = patchbay_contract::DeliveryRef {
        v: V1,
        bot_id: bot.bot_id,
        event_id,
    };
    let delivery: patchbay_contract::Delivery =
        ask(&api, "dispatcher", dispatcher_ops::RETRY, &req).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(delivery)))
}

/// Body of `POST /v1/deliveries/replay`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayBody {
    since: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    event_type: Option<String>,
    /// At most this many (the oldest first); the bot's replay budget bounds it too.
    #[serde(default)]
    limit: Option<u32>,
}

async fn replay_deliveries(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<impl IntoResponse, ApiError> {
    let req = patchbay_contract::ReplayRequest {
        v: V1,
        bot_id: bot.bot_id,
        since: body.since,
        until: body.until,
        event_type: body.event_type,
        limit: body.limit,
    };
    let replayed: patchbay_contract::Replayed =
        ask(&api, "dispatcher", dispatcher_ops::REPLAY, &req).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(replayed)))
}

/// Body of `POST /v1/messages`: a `user_id`, or a `platform` and `address`, and messages.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendBody {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
    messages: Vec<Content>,
    /// Who sends: `api` (the bot, default), `human` when a person (an agent) wrote the
    /// messages (on Messenger those may be sent with the `HUMAN_AGENT` tag up to 7 days after
    /// the user's last message; custom channels' `X-Patchbay-Source: human`), or `broadcast`.
    #[serde(default)]
    source: Option<ApiSource>,
    /// The agent's or broadcast's id (`X-Patchbay-Source-Id` on custom channels).
    #[serde(default)]
    source_id: Option<String>,
}

/// Who sends a message through the API.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ApiSource {
    /// The bot.
    Api,
    /// A human agent.
    Human,
    /// A broadcast.
    Broadcast,
}

impl From<ApiSource> for SendSource {
    fn from(s: ApiSource) -> Self {
        match s {
            ApiSource::Api => SendSource::Api,
            ApiSource::Human => SendSource::Human,
            ApiSource::Broadcast => SendSource::Broadcast,
        }
    }
}

/// Answer of `POST /v1/messages`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Accepted {
    /// The send command's id.
    pub(crate) id: String,
    /// The messages' ids, in order.
    pub(crate) message_ids: Vec<String>,
    /// `queued`.
    pub(crate) status: &'static str,
}

/// Media given by `media_id` only must be files the bot uploaded (`POST /v1/media`).
pub(crate) async fn check_uploads(
    api: &Api,
    bot_id: &str,
    messages: &[Content],
) -> Result<(), ApiError> {
    for (i, m) in messages.iter().enumerate() {
        if let Some(media) = patchbay_contract::content::Media::of(m)
            && media.url.is_none()
            && media.file_id.is_none()
            && let Some(id) = &media.media_id
            && !media::uploaded(api, bot_id, id).await?
        {
            return Err(unprocessable(format!(
                "messages[{i}].media_id: no upload {id} of this bot (POST /v1/media; uploads \
                 are kept 30 days)"
            )));
        }
    }
    Ok(())
}

pub(crate) fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

async fn send_messages(
    bot: BotAuth,
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    let to = match (body.user_id, body.platform, body.address) {
        (Some(user_id), None, None) => Recipient::User { user_id },
        (None, Some(platform), Some(address)) if !address.trim().is_empty() => Recipient::Address {
            platform,
            address,
            channel_id: body.channel_id,
        },
        _ => {
            return Err(unprocessable(
                "give either user_id, or platform and address (not both)",
            ));
        }
    };
    check_messages(&body.messages, 1)?;
    check_uploads(&api, &bot.bot_id, &body.messages).await?;
    let (source, source_id) = bot.source(body.source, body.source_id)?;
    check_recipient(&api, &bot, &to, &body.messages, source).await?;
    let accepted = queue(
        &api,
        &bot.bot_id,
        &headers,
        to,
        body.messages,
        source,
        source_id,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)))
}

/// Stores a send command of validated `messages` for `to`: the command id comes from the
/// `Idempotency-Key` header when there is one.
pub(crate) async fn queue(
    api: &Api,
    bot_id: &str,
    headers: &HeaderMap,
    to: Recipient,
    messages: Vec<Content>,
    source: SendSource,
    source_id: Option<String>,
) -> Result<Accepted, ApiError> {
    let command_id = match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(key) if !key.is_empty() && key.len() <= 200 => {
            hashed_id(prefix::COMMAND, &[bot_id, key])
        }
        Some(_) => return Err(unprocessable("Idempotency-Key must be 1 to 200 characters")),
        None => new_id(prefix::COMMAND),
    };
    if source_id
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > 200)
    {
        return Err(unprocessable("source_id: must be 1 to 200 characters"));
    }
    let ids = message_ids(bot_id, &command_id, messages.len());
    let command = SendCommand {
        v: V1,
        id: Some(command_id.clone()),
        to,
        messages,
        source,
        source_id,
        in_reply_to: None,
        known_recipient: None,
        also_to: Vec::new(),
    };
    let subject = api.bus.subjects().send(bot_id)?;
    api.bus.publish(&subject, &command_id, &command).await?;
    Ok(Accepted {
        id: command_id,
        message_ids: ids,
        status: "queued",
    })
}

/// Checks 1 to 10 messages; the error names the field.
pub(crate) fn check_messages(messages: &[Content], min: usize) -> Result<(), ApiError> {
    if messages.len() < min || messages.len() > 10 {
        return Err(unprocessable(format!(
            "messages: must have between {min} and 10 entries"
        )));
    }
    for (i, m) in messages.iter().enumerate() {
        m.validate()
            .map_err(|e| unprocessable(e.within(&format!("messages[{i}]")).to_string()))?;
    }
    Ok(())
}

/// Refuses up front what the router would refuse, when it can say so: an unknown user, and a
/// free-form message outside the platform's messaging window when the bot has no fallback
/// template for it (422 `outside_window`, naming the message and when the window closed).
/// Accepts when the router cannot answer in time: it checks again and reports a failure as a
/// `message.failed` event (as it does when the window closes between this check and the send).
pub(crate) async fn check_recipient(
    api: &Api,
    bot: &BotAuth,
    to: &Recipient,
    messages: &[Content],
    source: SendSource,
) -> Result<(), ApiError> {
    let bot_id = bot.bot_id.as_str();
    let subject = api
        .bus
        .subjects()
        .rpc("router", router_ops::RESOLVE_RECIPIENT);
    let req = ResolveRecipientRequest {
        v: V1,
        bot_id: bot_id.to_owned(),
        to: to.clone(),
    };
    match api
        .bus
        .request::<_, UserProfile>(&subject, &req, RECIPIENT_CHECK_TIMEOUT)
        .await
    {
        Ok(Ok(user)) => {
            bot.may_send_through(&user.channel.id)?;
            if user.handled_by == Some(patchbay_contract::HandledBy::Human)
                && source != SendSource::Human
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    patchbay_contract::HUMAN_HANDOVER,
                    "a human agent answers this conversation: the bot's messages are held back \
                     until it is handed back (POST /v1/conversations/{id}/handover \
                     {\"to\": \"bot\"}); an agent's messages go with \"source\": \"human\"",
                ));
            }
            let rendered = render_templates(api, bot_id, &user, messages, source).await?;
            check_window(api, bot_id, &user, &rendered, source).await
        }
        Ok(Err(e)) if e.status == 404 => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "user_not_found",
            match to {
                Recipient::User { user_id } => format!("this bot has no user {user_id}"),
                Recipient::Address {
                    platform, address, ..
                } => format!("this bot has no {platform} user at address {address}"),
            },
        )),
        Ok(Err(e)) => Err(e.into()),
        // A token limited to some channels is not taken on trust.
        Err(e @ (BusError::NoResponders(_) | BusError::Unavailable(_)))
            if bot.channels.is_some() =>
        {
            Err(e.into())
        }
        Err(e @ (BusError::NoResponders(_) | BusError::Unavailable(_))) => {
            tracing::warn!(error = %e, "recipient not checked; accepting");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `messages` as the router will send them to `user`: registry templates rendered for the
/// user's platform with the user's name and fields and the send's `meta`. One that cannot be
/// is refused here, naming the message: 422 `unknown_template`, `missing_variables` (naming
/// every variable without a value) or `template_unavailable` (no form for the platform). The
/// router renders again when it sends, and reports a failure then as `message.failed`.
async fn render_templates<'m>(
    api: &Api,
    bot_id: &str,
    user: &UserProfile,
    messages: &'m [Content],
    source: SendSource,
) -> Result<std::borrow::Cow<'m, [Content]>, ApiError> {
    use patchbay_contract::content::TemplateMessage;
    use patchbay_contract::templates::{StoredTemplate, Values};
    let registered = |m: &Content| matches!(m, Content::Template(TemplateMessage::Registered(_)));
    if !messages.iter().any(registered) {
        return Ok(std::borrow::Cow::Borrowed(messages));
    }
    let platform = user.channel.platform;
    let bot = api.view.bot(bot_id).await?;
    let text_first = patchbay_registry::window_for(platform, bot.as_deref()).takes_free_form(
        user.last_inbound_at,
        chrono::Utc::now(),
        source,
    );
    let subject = api.bus.subjects().rpc("router", router_ops::TEMPLATES);
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let Content::Template(TemplateMessage::Registered(named)) = m else {
            out.push(m.clone());
            continue;
        };
        let req = patchbay_contract::TemplateRequest {
            v: V1,
            bot_id: bot_id.to_owned(),
            op: patchbay_contract::TemplateOp::Get {
                id: named.id.clone(),
            },
        };
        let template: StoredTemplate = match api
            .bus
            .request(&subject, &req, RECIPIENT_CHECK_TIMEOUT)
            .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) if e.status == 404 => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_template",
                    format!("messages[{i}].id: this bot has no template {}", named.id),
                ));
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(e @ (BusError::NoResponders(_) | BusError::Unavailable(_))) => {
                tracing::warn!(error = %e, "templates not checked; accepting");
                return Ok(std::borrow::Cow::Borrowed(messages));
            }
            Err(e) => return Err(e.into()),
        };
        let rendered = patchbay_registry::render_template(
            platform,
            &template,
            text_first,
            &Values::of(Some(user), &named.meta),
        )
        .map_err(|e| {
            let e = e.error(&template.def.name);
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                &e.code,
                format!("messages[{i}]: {}", e.message),
            )
        })?;
        out.push(rendered);
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The window check of [`check_recipient`], with the same table the router uses.
async fn check_window(
    api: &Api,
    bot_id: &str,
    user: &UserProfile,
    messages: &[Content],
    source: SendSource,
) -> Result<(), ApiError> {
    let platform = user.channel.platform;
    let bot = api.view.bot(bot_id).await?;
    let policy = patchbay_registry::window_for(platform, bot.as_deref());
    let now = chrono::Utc::now();
    let refused = messages.iter().enumerate().find_map(|(i, m)| {
        match policy.check(user.last_inbound_at, now, m, source) {
            patchbay_contract::windows::Verdict::Closed { closed_at } => Some((i, closed_at)),
            _ => None,
        }
    });
    let Some((i, closed_at)) = refused else {
        return Ok(());
    };
    if bot.is_some_and(|b| b.fallback_templates.contains_key(&platform)) {
        return Ok(());
    }
    let e = policy.refusal(closed_at);
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        patchbay_contract::windows::OUTSIDE_WINDOW,
        format!("messages[{i}]: {}", e.message),
    ))
}
