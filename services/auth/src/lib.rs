//! `auth`: the owner of tenants, bots, API keys, webhook secrets and channels (schema `auth`).
//!
//! It answers admin operations by request/reply on `<p>.rpc.auth.<op>`, writes PostgreSQL, and
//! publishes each bot's, channel's and key's current form (secrets sealed) to the config
//! bucket, which every other service watches. At start it republishes everything, so the
//! bucket can always be rebuilt from the database.

mod partners;
mod publish;
mod reseal;
mod store;

pub use reseal::reseal;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use patchbay_bus::rpc::{decode, encode};
use patchbay_config::MasterKey;
use patchbay_config::secrets::{api_key_hash, new_api_key, new_url_token, new_webhook_secret};
use patchbay_contract::ids::{new_id, prefix};
use patchbay_contract::subjects::Bucket;
use patchbay_contract::{
    BotStateRequest, ChannelStateRequest, CreateBotRequest, CreateChannelRequest,
    CreateTenantRequest, CreatedBot, CreatedChannel, IssuedTokens, ListBotsRequest,
    RevokeKeyRequest, RotateRequest, RotatedKey, RotatedSecret, RpcError, TokenRequest,
    UpdateWebhookRequest, V1, VerifyEndpointRequest, WebhookInput, WebhookSettings, auth_ops,
};
use patchbay_runtime::{BoxError, Deps, Service};
use sqlx::PgPool;

/// Embedded migrations of schema `auth`.
pub const MIGRATIONS: &[patchbay_store::EmbeddedMigration] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "webhook_disabled",
        include_str!("../migrations/0002_webhook_disabled.sql"),
    ),
    (
        3,
        "webhook_platforms",
        include_str!("../migrations/0003_webhook_platforms.sql"),
    ),
    (
        4,
        "rate_limits",
        include_str!("../migrations/0004_rate_limits.sql"),
    ),
    (
        5,
        "sealed_api_keys",
        include_str!("../migrations/0005_sealed_api_keys.sql"),
    ),
    (
        6,
        "fallback_templates",
        include_str!("../migrations/0006_fallback_templates.sql"),
    ),
    (
        7,
        "platform_settings",
        include_str!("../migrations/0007_platform_settings.sql"),
    ),
    (
        8,
        "key_scopes",
        include_str!("../migrations/0008_key_scopes.sql"),
    ),
    (9, "tokens", include_str!("../migrations/0009_tokens.sql")),
    (
        10,
        "partners",
        include_str!("../migrations/0010_partners.sql"),
    ),
    (
        11,
        "handover_idle",
        include_str!("../migrations/0011_handover_idle.sql"),
    ),
    (12, "agents", include_str!("../migrations/0012_agents.sql")),
];

/// How long verifying a new callback URL may take (the dispatcher's own timeout applies
/// inside).
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Event subscription patterns a bot may use: the wildcards and every event type.
pub(crate) const KNOWN_EVENTS: &[&str] = &[
    "*",
    "message.*",
    "user.*",
    "message.received",
    "message.sent",
    "message.failed",
    "message.delivered",
    "message.read",
    "message.unsent",
    "user.subscribed",
    "user.unsubscribed",
    "conversation.*",
    "conversation.handover",
    "broadcast.*",
    "broadcast.progress",
    "broadcast.completed",
];

pub(crate) struct Auth {
    pool: PgPool,
    bus: patchbay_bus::Bus,
    /// Revision-checked writes to the config bucket.
    config: publish::ConfigWriter,
    key: MasterKey,
    allow_private: bool,
    /// Default overlap of a key or secret rotation.
    overlap: std::time::Duration,
    /// How long an access token works.
    access_ttl: std::time::Duration,
    /// How long a refresh token works.
    refresh_ttl: std::time::Duration,
}

/// A new token: `prefix` and 32 random bytes, as an API key's.
pub(crate) fn token(prefix: &str) -> Result<String, patchbay_config::secrets::SecretError> {
    Ok(format!("{prefix}{}", new_url_token()?))
}

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let key = deps.config.require_master_key()?;
        let pool = deps.database("auth", MIGRATIONS).await?;
        let bucket = deps.bus.subjects().bucket(Bucket::Config);
        let kv = deps.bus.jetstream().get_key_value(&bucket).await?;
        let auth = Arc::new(Auth {
            pool,
            bus: deps.bus.clone(),
            config: publish::ConfigWriter::new(kv),
            key,
            allow_private: deps.config.allow_private_callbacks,
            overlap: std::time::Duration::from_millis(deps.config.key_rotation_overlap_ms),
            access_ttl: std::time::Duration::from_millis(deps.config.access_token_ttl_ms),
            refresh_ttl: std::time::Duration::from_millis(deps.config.refresh_token_ttl_ms),
        });
        let sweeper = auth.clone();
        let sweeper_stop = deps.shutdown.clone();
        let republish = auth.clone();
        let handler = auth.clone();
        let responder = deps
            .bus
            .responder(deps.bus.subjects().rpc_all("auth"), "auth".into())
            .await?;
        let service = Service::new("auth")
            .task(async move { republish.publish_all().await })
            .task(async move {
                sweeper.sweep_tokens(sweeper_stop).await;
                Ok::<(), BoxError>(())
            })
            .task(responder.serve(
                deps.config.consumer_concurrency,
                move |op, body| {
                    let auth = handler.clone();
                    async move { auth.dispatch(&op, body).await }
                },
                deps.shutdown.clone(),
            ));
        Ok(service)
    })
}

pub(crate) fn invalid(field: &str, message: impl std::fmt::Display) -> RpcError {
    RpcError::new(422, "invalid_request", format!("{field}: {message}"))
}

pub(crate) fn internal(e: impl std::fmt::Display) -> RpcError {
    tracing::error!(error = %e, "auth operation failed");
    RpcError::new(500, "internal", "internal error; see the auth service logs")
}

impl Auth {
    async fn dispatch(&self, op: &str, body: Bytes) -> Vec<u8> {
        match op {
            auth_ops::CREATE_BOT => encode(match decode(&body) {
                Ok(req) => self.create_bot(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::CREATE_CHANNEL => encode(match decode(&body) {
                Ok(req) => self.create_channel(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::DISABLE_WEBHOOK | auth_ops::ENABLE_WEBHOOK => encode(
                match decode::<patchbay_contract::WebhookStateRequest>(&body) {
                    Ok(req) => {
                        let reason = (op == auth_ops::DISABLE_WEBHOOK)
                            .then(|| req.reason.unwrap_or_else(|| "disabled".into()));
                        self.set_webhook_state(&req.bot_id, reason).await
                    }
                    Err(e) => Err(e),
                },
            ),
            auth_ops::UPDATE_WEBHOOK => encode(match decode(&body) {
                Ok(req) => self.update_webhook(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::PARTNERS => encode(match decode(&body) {
                Ok(req) => self.partners(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::API_CHAT => encode(match decode(&body) {
                Ok(req) => self.api_chat(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::AGENTS => match decode::<patchbay_contract::AgentRequest>(&body) {
                Ok(req) => self.agents(req).await,
                Err(e) => encode::<()>(Err(e)),
            },
            auth_ops::ISSUE_TOKENS => encode(match decode(&body) {
                Ok(req) => self.issue_tokens(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::ROTATE_KEY => encode(match decode(&body) {
                Ok(req) => self.rotate_key(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::ROTATE_SECRET => encode(match decode(&body) {
                Ok(req) => self.rotate_secret(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::REVOKE_KEY => encode(match decode(&body) {
                Ok(req) => self.revoke_key(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::SET_BOT_STATE => encode(match decode::<BotStateRequest>(&body) {
                Ok(req) => self.set_bot_state(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::SET_CHANNEL_STATE => encode(match decode::<ChannelStateRequest>(&body) {
                Ok(req) => self.set_channel_state(req).await,
                Err(e) => Err(e),
            }),
            auth_ops::CREATE_TENANT => encode(match decode::<CreateTenantRequest>(&body) {
                Ok(req) => {
                    let name = req.name.trim();
                    if name.is_empty() || name.chars().count() > 200 {
                        Err(invalid("name", "must be 1 to 200 characters"))
                    } else {
                        store::insert_tenant(&self.pool, &new_id(prefix::TENANT), name).await
                    }
                }
                Err(e) => Err(e),
            }),
            auth_ops::LIST_TENANTS => encode(store::list_tenants(&self.pool).await),
            auth_ops::LIST_BOTS => encode(match decode::<ListBotsRequest>(&body) {
                Ok(req) => store::list_bots(&self.pool, req.tenant_id.as_deref()).await,
                Err(e) => Err(e),
            }),
            other => encode::<()>(Err(RpcError::new(
                404,
                "unknown_operation",
                format!("auth has no operation {other:?}"),
            ))),
        }
    }

    async fn create_bot(&self, req: CreateBotRequest) -> Result<CreatedBot, RpcError> {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        let tenant_id = req.tenant_id.unwrap_or_else(|| "ten_default".into());
        let webhook = match req.webhook {
            Some(input) => self.webhook_settings(input, None).await?,
            None => WebhookSettings {
                url: None,
                flavour: Default::default(),
                events: WebhookSettings::default_events(),
                disabled_reason: None,
                platforms: Vec::new(),
            },
        };
        let bot_id = new_id(prefix::BOT);
        let api_key = new_api_key().map_err(internal)?;
        let secret = new_webhook_secret().map_err(internal)?;
        let sealed = self
            .key
            .seal(&bot_id, secret.as_bytes())
            .map_err(internal)?;
        let created_at = store::insert_bot(
            &self.pool,
            &store::NewBot {
                id: &bot_id,
                tenant_id: &tenant_id,
                name,
                webhook: &webhook,
                sealed_secret: &sealed,
                key_id: &new_id(prefix::KEY),
                key_hash: &api_key_hash(&api_key),
                key_sealed: &self.seal_key(&bot_id, &api_key)?,
            },
        )
        .await?;
        self.publish_bot(&bot_id).await?;
        tracing::info!(%bot_id, %tenant_id, "bot created");
        Ok(CreatedBot {
            id: bot_id,
            tenant_id,
            name: name.to_owned(),
            api_key,
            webhook_secret: secret,
            webhook,
            created_at,
        })
    }

    async fn create_channel(&self, req: CreateChannelRequest) -> Result<CreatedChannel, RpcError> {
        let spec = patchbay_registry::spec(req.platform).map_err(|e| invalid("platform", e))?;
        let completed = (spec.credentials)(req.credentials).map_err(|e| match e {
            patchbay_registry::CredentialsError::Invalid(e) => invalid(&e.field, e.message),
            patchbay_registry::CredentialsError::Internal(e) => internal(e),
        })?;
        if let Some(u) = &req.api_base_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid("api_base_url", "must be an http or https URL"));
        }
        if !store::bot_exists(&self.pool, &req.bot_id).await? {
            return Err(RpcError::new(
                404,
                "not_found",
                format!("no bot {}", req.bot_id),
            ));
        }
        let id = new_id(prefix::CHANNEL);
        let plain = serde_json::to_vec(&completed.stored).map_err(internal)?;
        let sealed = self.key.seal(&id, &plain).map_err(internal)?;
        let created_at = store::insert_channel(
            &self.pool,
            &id,
            &req.bot_id,
            req.platform,
            &sealed,
            req.api_base_url.as_deref(),
        )
        .await?;
        self.publish_channel(&id).await?;
        // The bot's record lists its channels.
        self.publish_bot(&req.bot_id).await?;
        tracing::info!(channel_id = %id, bot_id = %req.bot_id, platform = %req.platform, "channel created");
        Ok(CreatedChannel {
            webhook_path: (spec.webhook_path)(&id),
            generated: completed.generated,
            id,
            bot_id: req.bot_id,
            platform: req.platform,
            created_at,
        })
    }

    /// Validates callback settings, starting from `current` (absent input fields keep its
    /// values).
    async fn webhook_settings(
        &self,
        input: WebhookInput,
        current: Option<&WebhookSettings>,
    ) -> Result<WebhookSettings, RpcError> {
        let url = match &input.url {
            Some(u) => Some(
                patchbay_platform::http::check_callback_url(u, self.allow_private)
                    .await
                    .map_err(|e| invalid("webhook.url", e))?
                    .to_string(),
            ),
            None => current.and_then(|c| c.url.clone()),
        };
        let events = input
            .events
            .or_else(|| current.map(|c| c.events.clone()))
            .unwrap_or_else(WebhookSettings::default_events);
        if events.is_empty() {
            return Err(invalid("webhook.events", "subscribe to at least one event"));
        }
        if let Some(bad) = events.iter().find(|e| !KNOWN_EVENTS.contains(&e.as_str())) {
            return Err(invalid(
                "webhook.events",
                format!("unknown event {bad:?}; known: {}", KNOWN_EVENTS.join(", ")),
            ));
        }
        let mut platforms = input
            .platforms
            .or_else(|| current.map(|c| c.platforms.clone()))
            .unwrap_or_default();
        platforms.sort_by_key(|p| p.as_str());
        platforms.dedup();
        Ok(WebhookSettings {
            url,
            flavour: input
                .flavour
                .or_else(|| current.map(|c| c.flavour))
                .unwrap_or_default(),
            events,
            disabled_reason: current.and_then(|c| c.disabled_reason.clone()),
            platforms,
        })
    }

    /// `PUT /v1/webhook`: a new URL must echo the subscription challenge before it is used.
    async fn update_webhook(&self, req: UpdateWebhookRequest) -> Result<WebhookSettings, RpcError> {
        let (current, _) = store::load_bot(&self.pool, &req.bot_id).await?;
        let verify_token = req
            .webhook
            .verify_token
            .clone()
            .unwrap_or_else(|| req.bot_id.clone());
        let mut next = self
            .webhook_settings(req.webhook, Some(&current.webhook))
            .await?;
        // A URL answers its flavour's challenge. chat-api never challenged a webhook URL, and
        // its clients' endpoints do not answer one: such a URL is taken as given (its events
        // are unsigned as there).
        if let Some(url) = next
            .url
            .clone()
            .filter(|u| Some(u) != current.webhook.url.as_ref())
            .filter(|_| next.flavour.challenge() != patchbay_contract::Challenge::None)
        {
            let subject = self.bus.subjects().rpc(
                "dispatcher",
                patchbay_contract::dispatcher_ops::VERIFY_ENDPOINT,
            );
            let check = VerifyEndpointRequest {
                v: V1,
                url,
                verify_token,
                challenge: next.flavour.challenge(),
            };
            // The verify token is the tenant's secret.
            self.bus
                .request_sealed::<_, ()>(&subject, &check, VERIFY_TIMEOUT)
                .await
                .map_err(|e| RpcError::new(503, "unavailable", e.to_string()))??;
            next.disabled_reason = None;
        }
        store::update_webhook(&self.pool, &req.bot_id, &next).await?;
        self.publish_bot(&req.bot_id).await?;
        tracing::info!(bot_id = %req.bot_id, url = ?next.url, "webhook settings changed");
        Ok(next)
    }

    fn overlap_of(&self, req: &RotateRequest) -> Result<std::time::Duration, RpcError> {
        match req.overlap_seconds {
            None => Ok(self.overlap),
            Some(s) if s <= 30 * 24 * 3600 => Ok(std::time::Duration::from_secs(s)),
            Some(_) => Err(invalid("overlap_seconds", "at most 30 days")),
        }
    }

    /// An API key sealed for its bot (the associated data tells it from the bot's webhook
    /// secrets).
    fn seal_key(&self, bot_id: &str, api_key: &str) -> Result<String, RpcError> {
        self.key
            .seal(
                &patchbay_contract::brandchat::key_owner(bot_id),
                api_key.as_bytes(),
            )
            .map_err(internal)
    }

    async fn rotate_key(&self, req: RotateRequest) -> Result<RotatedKey, RpcError> {
        let overlap = self.overlap_of(&req)?;
        if let Some(scopes) = &req.scopes {
            patchbay_contract::scopes::check(scopes).map_err(|m| invalid("scopes", &m))?;
        }
        let api_key = new_api_key().map_err(internal)?;
        let key_id = new_id(prefix::KEY);
        let (until, ended) = store::rotate_key(
            &self.pool,
            &req.bot_id,
            &key_id,
            &api_key_hash(&api_key),
            &self.seal_key(&req.bot_id, &api_key)?,
            req.scopes.as_deref(),
            overlap,
        )
        .await?;
        self.publish_bot(&req.bot_id).await?;
        // The keys given an end: one that already ended (no overlap) is not among the bot's
        // working keys that publish_bot republished, and must leave the bucket now.
        for hash in ended {
            self.publish_key(&hash).await?;
        }
        tracing::info!(bot_id = %req.bot_id, %key_id, previous_expire_at = %until, "API key rotated");
        let scopes = patchbay_contract::scopes::granted(req.scopes.as_deref());
        Ok(RotatedKey {
            key_id,
            api_key,
            previous_expire_at: until,
            scopes,
        })
    }

    /// A bot's API chat channel ([`patchbay_contract::ApiChatRequest`]): its custom channel
    /// of the `uchat` flavour, whose webhook is read, set (after UChat's challenge; the
    /// channel is created when the bot has none) or removed. `None` after a removal.
    async fn api_chat(
        &self,
        req: patchbay_contract::ApiChatRequest,
    ) -> Result<Option<patchbay_contract::ApiChat>, RpcError> {
        // One operation on a bot's API chat channel at a time, across replicas: two first
        // sets at once would otherwise each create a channel.
        let mut lock = self.pool.acquire().await.map_err(store::db)?;
        let name = format!("api_chat:{}", req.bot_id);
        sqlx::query("select pg_advisory_lock(hashtext($1))")
            .bind(&name)
            .execute(&mut *lock)
            .await
            .map_err(store::db)?;
        let result = self.api_chat_locked(req).await;
        let unlocked = sqlx::query("select pg_advisory_unlock(hashtext($1))")
            .bind(&name)
            .execute(&mut *lock)
            .await;
        if unlocked.is_err() {
            // Closing the session releases its locks.
            drop(lock.detach());
        }
        result
    }

    async fn api_chat_locked(
        &self,
        req: patchbay_contract::ApiChatRequest,
    ) -> Result<Option<patchbay_contract::ApiChat>, RpcError> {
        use patchbay_contract::{ApiChat, ApiChatOp};
        use patchbay_custom::{CustomCredentials, CustomFlavour};
        if !store::bot_exists(&self.pool, &req.bot_id).await? {
            return Err(RpcError::new(
                404,
                "not_found",
                format!("no bot {}", req.bot_id),
            ));
        }
        let mut found = None;
        for (id, sealed) in store::custom_channels(&self.pool, &req.bot_id).await? {
            let plain = self.key.open(&id, &sealed).map_err(internal)?;
            let creds: CustomCredentials = serde_json::from_slice(&plain).map_err(internal)?;
            if creds.flavour == Some(CustomFlavour::Uchat) {
                found = Some((id, creds));
                break;
            }
        }
        let answer = |id: String, c: &CustomCredentials| ApiChat {
            channel_id: id,
            webhook_url: c.event_webhook_url.clone(),
            verification_key: c.verification_key.clone(),
        };
        match req.op {
            ApiChatOp::Get => {
                let (id, creds) = found.ok_or_else(|| {
                    RpcError::new(404, "not_found", "no API chat webhook was set for this bot")
                })?;
                Ok(Some(answer(id, &creds)))
            }
            ApiChatOp::Set {
                webhook_url,
                verification_key,
            } => {
                let url =
                    patchbay_platform::http::check_callback_url(&webhook_url, self.allow_private)
                        .await
                        .map_err(|e| invalid("webhook_url", e))?
                        .to_string();
                if verification_key.is_empty()
                    || verification_key.len() > 256
                    || !verification_key.chars().all(|c| c.is_ascii_graphic())
                {
                    return Err(invalid(
                        "webhook_verification_key",
                        "must be 1 to 256 printable ASCII characters without spaces",
                    ));
                }
                let subject = self.bus.subjects().rpc(
                    "dispatcher",
                    patchbay_contract::dispatcher_ops::VERIFY_ENDPOINT,
                );
                let check = VerifyEndpointRequest {
                    v: V1,
                    url: url.clone(),
                    verify_token: verification_key.clone(),
                    challenge: patchbay_contract::Challenge::HubForm,
                };
                self.bus
                    .request_sealed::<_, ()>(&subject, &check, VERIFY_TIMEOUT)
                    .await
                    .map_err(|e| RpcError::new(503, "unavailable", e.to_string()))??;
                let Some((id, mut creds)) = found else {
                    let created = self
                        .create_channel(CreateChannelRequest {
                            v: V1,
                            bot_id: req.bot_id.clone(),
                            platform: patchbay_contract::Platform::Custom,
                            credentials: serde_json::json!({
                                "flavour": "uchat",
                                "event_webhook_url": url,
                                "verification_key": verification_key,
                            }),
                            api_base_url: None,
                        })
                        .await?;
                    return Ok(Some(ApiChat {
                        channel_id: created.id,
                        webhook_url: Some(url),
                        verification_key: Some(verification_key),
                    }));
                };
                creds.event_webhook_url = Some(url);
                creds.verification_key = Some(verification_key);
                self.replace_credentials(&req.bot_id, &id, &creds).await?;
                Ok(Some(answer(id, &creds)))
            }
            ApiChatOp::Remove => {
                let Some((id, mut creds)) = found else {
                    return Ok(None);
                };
                creds.event_webhook_url = None;
                creds.verification_key = None;
                self.replace_credentials(&req.bot_id, &id, &creds).await?;
                Ok(None)
            }
        }
    }

    /// Seals and stores a custom channel's new credentials, and republishes the channel.
    async fn replace_credentials(
        &self,
        bot_id: &str,
        channel_id: &str,
        creds: &patchbay_custom::CustomCredentials,
    ) -> Result<(), RpcError> {
        let plain = serde_json::to_vec(creds).map_err(internal)?;
        let sealed = self.key.seal(channel_id, &plain).map_err(internal)?;
        store::replace_credentials(&self.pool, bot_id, channel_id, &sealed).await?;
        self.publish_channel(channel_id).await?;
        tracing::info!(%channel_id, %bot_id, "custom channel credentials replaced");
        Ok(())
    }

    /// A bot's human agents ([`patchbay_contract::AgentRequest`]).
    async fn agents(&self, req: patchbay_contract::AgentRequest) -> Vec<u8> {
        use patchbay_contract::{Agent, AgentOp};
        let bot_id = req.bot_id;
        match req.op {
            AgentOp::Invite { name } => encode(
                async {
                    let name = name.trim();
                    if name.is_empty() || name.chars().count() > 100 {
                        return Err(invalid("name", "must be 1 to 100 characters"));
                    }
                    let invite = token("pbag_").map_err(internal)?;
                    let id = new_id(prefix::AGENT);
                    let hash = api_key_hash(&invite);
                    let created_at =
                        store::insert_agent(&self.pool, &bot_id, &id, name, &hash).await?;
                    self.publish_key(&hash).await?;
                    tracing::info!(%bot_id, agent_id = %id, "agent invited");
                    Ok(Agent {
                        id,
                        name: name.to_owned(),
                        created_at,
                        invite: Some(invite),
                    })
                }
                .await,
            ),
            AgentOp::List => encode(store::list_agents(&self.pool, &bot_id).await),
            AgentOp::Revoke { agent_id } => encode(
                async {
                    let hash = store::revoke_agent(&self.pool, &bot_id, &agent_id).await?;
                    self.publish_key(&hash).await?;
                    tracing::info!(%bot_id, %agent_id, "agent revoked");
                    Ok(())
                }
                .await,
            ),
        }
    }

    async fn rotate_secret(&self, req: RotateRequest) -> Result<RotatedSecret, RpcError> {
        let overlap = self.overlap_of(&req)?;
        let secret = new_webhook_secret().map_err(internal)?;
        let sealed = self
            .key
            .seal(&req.bot_id, secret.as_bytes())
            .map_err(internal)?;
        let until = store::rotate_secret(&self.pool, &req.bot_id, &sealed, overlap).await?;
        self.publish_bot(&req.bot_id).await?;
        tracing::info!(bot_id = %req.bot_id, previous_expire_at = %until, "webhook secret rotated");
        Ok(RotatedSecret {
            webhook_secret: secret,
            previous_expire_at: until,
        })
    }

    async fn revoke_key(&self, req: RevokeKeyRequest) -> Result<(), RpcError> {
        let hash = store::revoke_key(&self.pool, &req.bot_id, &req.key_id).await?;
        self.publish_key(&hash).await?;
        // The tokens exchanged for it end with it.
        for token in store::revoke_families_of(&self.pool, &req.key_id).await? {
            self.publish_key(&token).await?;
        }
        // A BrandChat bot's record carries its working keys for signatures.
        self.publish_bot(&req.bot_id).await?;
        tracing::info!(bot_id = %req.bot_id, key_id = %req.key_id, "API key revoked");
        Ok(())
    }

    /// `POST /v1/auth/token`: an API key, or a refresh token, for an access token (with the
    /// key's scopes) and the next refresh token. Every failure is a 401 that says why.
    async fn issue_tokens(&self, req: TokenRequest) -> Result<IssuedTokens, RpcError> {
        let refused = |code: &str, message: &str| RpcError::new(401, code, message);
        let access_token = token("pbat_").map_err(internal)?;
        let refresh_token = token("pbrt_").map_err(internal)?;
        let (access_id, refresh_id) = (new_id(prefix::ACCESS_TOKEN), new_id(prefix::REFRESH_TOKEN));
        let (access_hash, refresh_hash) =
            (api_key_hash(&access_token), api_key_hash(&refresh_token));
        let family = new_id(prefix::TOKEN_FAMILY);
        let new = store::NewTokens {
            family_id: &family,
            access_id: &access_id,
            access_hash: &access_hash,
            access_ttl: self.access_ttl,
            refresh_id: &refresh_id,
            refresh_hash: &refresh_hash,
            refresh_ttl: self.refresh_ttl,
        };
        let key = match (&req.api_key, &req.refresh_token) {
            (Some(api_key), None) => {
                let key = store::exchangeable_key(&self.pool, &api_key_hash(api_key))
                    .await?
                    .ok_or_else(|| {
                        refused(
                            "invalid_api_key",
                            "no working API key of any bot (an access token cannot be exchanged)",
                        )
                    })?;
                store::issue_tokens(&self.pool, &key, &new).await?;
                key
            }
            (None, Some(refresh)) => {
                match store::refresh_tokens(&self.pool, &api_key_hash(refresh), &new).await? {
                    store::Refreshed::Issued(key) => key,
                    store::Refreshed::Unknown => {
                        return Err(refused("invalid_refresh_token", "no such refresh token"));
                    }
                    store::Refreshed::Expired => {
                        return Err(refused(
                            "invalid_refresh_token",
                            "the refresh token has expired; exchange the API key again",
                        ));
                    }
                    store::Refreshed::Revoked => {
                        return Err(refused(
                            "invalid_refresh_token",
                            "the refresh token was revoked (with its API key, or its family)",
                        ));
                    }
                    store::Refreshed::KeyGone => {
                        return Err(refused(
                            "invalid_refresh_token",
                            "the API key it was exchanged for was revoked or has expired",
                        ));
                    }
                    store::Refreshed::Reused(hashes) => {
                        for hash in &hashes {
                            self.publish_key(hash).await?;
                        }
                        tracing::warn!(
                            revoked = hashes.len(),
                            "a used refresh token was presented again: its family is revoked"
                        );
                        return Err(refused(
                            "refresh_token_reused",
                            "this refresh token was used before: every token of its family is \
                             revoked; exchange the API key again",
                        ));
                    }
                }
            }
            _ => {
                return Err(invalid(
                    "api_key",
                    "give either api_key or refresh_token, not both",
                ));
            }
        };
        self.publish_key(&access_hash).await?;
        tracing::info!(bot_id = %key.bot_id, key_id = %key.key_id, token_id = %access_id, "access token issued");
        let scopes = patchbay_contract::scopes::granted(key.scopes.as_deref());
        Ok(IssuedTokens {
            access_token,
            token_type: "Bearer".into(),
            expires_in: self.access_ttl.as_secs(),
            refresh_token,
            refresh_expires_in: self.refresh_ttl.as_secs(),
            scopes,
        })
    }

    /// Once a minute, takes access tokens that expired or were revoked out of the config
    /// bucket and deletes them, with refresh tokens a day past their expiry. Each replica does
    /// it; removing a removed entry changes nothing.
    async fn sweep_tokens(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let swept = async {
                let hashes = store::stale_tokens(&self.pool).await?;
                for hash in &hashes {
                    self.publish_key(hash).await?;
                }
                store::forget_tokens(&self.pool, &hashes).await?;
                Ok::<usize, RpcError>(hashes.len())
            };
            match swept.await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(tokens = n, "expired access tokens swept"),
                Err(e) => {
                    tracing::warn!(error = %e.message, "sweeping expired tokens failed; next minute")
                }
            }
        }
    }

    async fn set_bot_state(&self, req: BotStateRequest) -> Result<(), RpcError> {
        if let Some(r) = req.rate_limit
            && (r.per_second == 0 || r.burst == 0 || r.per_second > 100_000 || r.burst > 100_000)
        {
            return Err(invalid(
                "rate_limit",
                "per_second and burst must be between 1 and 100000",
            ));
        }
        for (platform, template) in req.fallback_templates.iter().flatten() {
            if let Some(t) = template {
                t.validate(&patchbay_registry::window(*platform))
                    .map_err(|e| RpcError::new(422, "invalid_request", e.to_string()))?;
            }
        }
        if let Some(secs) = req.handover_idle_secs
            && !(60..=7 * 24 * 3600).contains(&secs)
        {
            return Err(invalid(
                "handover_idle_minutes",
                "must be between 1 and 10080 (7 days)",
            ));
        }
        for (platform, settings) in req.platform_settings.iter().flatten() {
            if let Some(s) = settings {
                patchbay_registry::check_settings(*platform, s)
                    .map_err(|e| RpcError::new(422, "invalid_request", e.to_string()))?;
            }
        }
        store::set_bot_state(
            &self.pool,
            &req.bot_id,
            req.enabled,
            req.rate_limit,
            req.fallback_templates.as_ref(),
            req.platform_settings.as_ref(),
            req.handover_idle_secs,
        )
        .await?;
        tracing::info!(bot_id = %req.bot_id, enabled = ?req.enabled, rate_limit = ?req.rate_limit, fallback_templates = ?req.fallback_templates, platform_settings = ?req.platform_settings, "bot state changed");
        self.publish_bot(&req.bot_id).await
    }

    async fn set_channel_state(&self, req: ChannelStateRequest) -> Result<(), RpcError> {
        store::set_channel_enabled(&self.pool, &req.bot_id, &req.channel_id, req.enabled).await?;
        self.publish_channel(&req.channel_id).await?;
        tracing::info!(bot_id = %req.bot_id, channel_id = %req.channel_id, enabled = req.enabled, "channel state changed");
        Ok(())
    }

    async fn set_webhook_state(
        &self,
        bot_id: &str,
        reason: Option<String>,
    ) -> Result<(), RpcError> {
        store::set_webhook_disabled(&self.pool, bot_id, reason.as_deref()).await?;
        tracing::warn!(%bot_id, reason = ?reason, "webhook endpoint state changed");
        self.publish_bot(bot_id).await
    }

    /// Publishes the bot's record and each of its working keys.
    pub(crate) async fn publish_bot(&self, bot_id: &str) -> Result<(), RpcError> {
        let (_, keys) = store::load_bot(&self.pool, bot_id).await?;
        self.config
            .sync(&patchbay_contract::config_keys::bot(bot_id), || async {
                Ok(Some(store::load_bot(&self.pool, bot_id).await?.0))
            })
            .await?;
        for (hash, _) in keys {
            self.publish_key(&hash).await?;
        }
        Ok(())
    }

    /// Publishes the key hashed `hash` if it works, removes it if not (revoked, expired).
    pub(crate) async fn publish_key(&self, hash: &str) -> Result<(), RpcError> {
        self.config
            .sync(&patchbay_contract::config_keys::api_key(hash), || {
                store::load_key(&self.pool, hash)
            })
            .await
    }

    async fn publish_channel(&self, channel_id: &str) -> Result<(), RpcError> {
        self.config
            .sync(
                &patchbay_contract::config_keys::channel(channel_id),
                || async { Ok(Some(store::load_channel(&self.pool, channel_id).await?)) },
            )
            .await
    }

    /// Republishes every bot, key and channel to the config bucket.
    async fn publish_all(&self) -> Result<(), BoxError> {
        let (bots, channels) = store::all_ids(&self.pool).await.map_err(|e| e.message)?;
        for id in &bots {
            self.publish_bot(id).await.map_err(|e| e.message)?;
        }
        for id in &channels {
            self.publish_channel(id).await.map_err(|e| e.message)?;
        }
        tracing::info!(
            bots = bots.len(),
            channels = channels.len(),
            "config bucket republished"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::KNOWN_EVENTS;
    use patchbay_contract::EventType;

    #[test]
    fn every_event_type_can_be_subscribed_to() {
        for t in EventType::ALL {
            assert!(KNOWN_EVENTS.contains(&t.as_str()), "{}", t.as_str());
        }
        let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        for pattern in KNOWN_EVENTS {
            assert!(
                pattern.ends_with('*') || names.contains(pattern),
                "{pattern} names no event type"
            );
        }
    }
}
