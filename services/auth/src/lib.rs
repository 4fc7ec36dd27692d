//! `auth`: the owner of tenants, bots, API keys, webhook secrets and channels (schema `auth`).
//!
//! It answers admin operations by request/reply on `<p>.rpc.auth.<op>`, writes PostgreSQL, and
//! publishes each bot's, channel's and key's current form (secrets sealed) to the config
//! bucket, which every other service watches. At start it republishes everything, so the
//! bucket can always be rebuilt from the database.

mod store;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use patchbay_bus::rpc::{decode, encode};
use patchbay_config::MasterKey;
use patchbay_config::secrets::{api_key_hash, new_api_key, new_webhook_secret};
use patchbay_contract::ids::{new_id, prefix};
use patchbay_contract::subjects::Bucket;
use patchbay_contract::{
    CreateBotRequest, CreateChannelRequest, CreatedBot, CreatedChannel, RpcError, WebhookSettings,
    auth_ops, credentials,
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
];

/// Event subscription patterns a bot may use.
const KNOWN_EVENTS: &[&str] = &[
    "*",
    "message.*",
    "user.*",
    "message.received",
    "message.sent",
    "message.failed",
    "user.subscribed",
    "user.unsubscribed",
];

struct Auth {
    pool: PgPool,
    kv: async_nats::jetstream::kv::Store,
    key: MasterKey,
    allow_private: bool,
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
            kv,
            key,
            allow_private: deps.config.allow_private_callbacks,
        });
        let republish = auth.clone();
        let handler = auth.clone();
        let responder = deps
            .bus
            .responder(deps.bus.subjects().rpc_all("auth"), "auth".into())
            .await?;
        let service = Service::new("auth")
            .task(async move { republish.publish_all().await })
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

fn invalid(field: &str, message: impl std::fmt::Display) -> RpcError {
    RpcError::new(422, "invalid_request", format!("{field}: {message}"))
}

fn internal(e: impl std::fmt::Display) -> RpcError {
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
        let webhook_in = req.webhook.unwrap_or(patchbay_contract::WebhookInput {
            url: None,
            flavour: Default::default(),
            events: None,
        });
        let url = match &webhook_in.url {
            Some(u) => Some(
                patchbay_platform::http::check_callback_url(u, self.allow_private)
                    .await
                    .map_err(|e| invalid("webhook.url", e))?
                    .to_string(),
            ),
            None => None,
        };
        let events = webhook_in
            .events
            .unwrap_or_else(WebhookSettings::default_events);
        if let Some(bad) = events.iter().find(|e| !KNOWN_EVENTS.contains(&e.as_str())) {
            return Err(invalid(
                "webhook.events",
                format!("unknown event {bad:?}; known: {}", KNOWN_EVENTS.join(", ")),
            ));
        }
        let webhook = WebhookSettings {
            url,
            flavour: webhook_in.flavour,
            events,
            disabled_reason: None,
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
        credentials::validate(req.platform, &req.credentials)
            .map_err(|e| invalid(&e.field, e.message))?;
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
        let plain = serde_json::to_vec(&req.credentials).map_err(internal)?;
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
        tracing::info!(channel_id = %id, bot_id = %req.bot_id, platform = %req.platform, "channel created");
        Ok(CreatedChannel {
            webhook_path: format!("/webhooks/{}/{id}", req.platform),
            id,
            bot_id: req.bot_id,
            platform: req.platform,
            created_at,
        })
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

    async fn put<T: serde::Serialize>(&self, key: String, value: &T) -> Result<(), RpcError> {
        let bytes = serde_json::to_vec(value).map_err(internal)?;
        self.kv.put(&key, bytes.into()).await.map_err(|e| {
            tracing::error!(%key, error = %e, "cannot publish config");
            RpcError::new(
                503,
                "unavailable",
                "stored, but not yet published to the services; retry shortly",
            )
        })?;
        Ok(())
    }

    async fn publish_bot(&self, bot_id: &str) -> Result<(), RpcError> {
        let (bot, keys) = store::load_bot(&self.pool, bot_id).await?;
        self.put(patchbay_contract::config_keys::bot(bot_id), &bot)
            .await?;
        for (hash, record) in keys {
            self.put(patchbay_contract::config_keys::api_key(&hash), &record)
                .await?;
        }
        Ok(())
    }

    async fn publish_channel(&self, channel_id: &str) -> Result<(), RpcError> {
        let channel = store::load_channel(&self.pool, channel_id).await?;
        self.put(
            patchbay_contract::config_keys::channel(channel_id),
            &channel,
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
