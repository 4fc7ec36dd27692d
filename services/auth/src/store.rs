//! SQL of the `auth` schema.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use patchbay_contract::{
    ApiKeyRecord, BotRecord, BotSummary, ChannelRecord, ChannelRef, FallbackTemplate, Platform,
    PlatformSettings, RateLimit, RpcError, SealedSecret, Tenant, V1, WebhookFlavour,
    WebhookSettings,
};
use sqlx::{PgPool, Row};

pub(crate) fn db(e: sqlx::Error) -> RpcError {
    tracing::error!(error = %e, "auth database error");
    RpcError::new(
        503,
        "unavailable",
        "the database is unavailable; retry shortly",
    )
}

/// A bot to insert with its first secret and key.
pub struct NewBot<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub name: &'a str,
    pub webhook: &'a WebhookSettings,
    pub sealed_secret: &'a str,
    pub key_id: &'a str,
    pub key_hash: &'a str,
    pub key_sealed: &'a str,
}

pub async fn insert_bot(pool: &PgPool, b: &NewBot<'_>) -> Result<DateTime<Utc>, RpcError> {
    let mut tx = pool.begin().await.map_err(db)?;
    let tenant = sqlx::query("select 1 from tenants where id = $1")
        .bind(b.tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    if tenant.is_none() {
        return Err(RpcError::new(
            404,
            "not_found",
            format!("no tenant {}", b.tenant_id),
        ));
    }
    let flavour = flavour_name(b.webhook);
    let created: DateTime<Utc> = sqlx::query(
        "insert into bots (id, tenant_id, name, webhook_url, webhook_flavour, webhook_events,
                           webhook_platforms)
         values ($1, $2, $3, $4, $5, $6, $7) returning created_at",
    )
    .bind(b.id)
    .bind(b.tenant_id)
    .bind(b.name)
    .bind(b.webhook.url.as_deref())
    .bind(flavour)
    .bind(sqlx::types::Json(&b.webhook.events))
    .bind(sqlx::types::Json(&b.webhook.platforms))
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?
    .get(0);
    sqlx::query("insert into webhook_secrets (bot_id, sealed) values ($1, $2)")
        .bind(b.id)
        .bind(b.sealed_secret)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    insert_key(&mut tx, b.id, b.key_id, b.key_hash, b.key_sealed, None).await?;
    tx.commit().await.map_err(db)?;
    Ok(created)
}

/// Stores a new API key of `bot_id`: its hash, to find it, and its sealed form, for BrandChat's
/// signatures.
async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    bot_id: &str,
    key_id: &str,
    key_hash: &str,
    key_sealed: &str,
    scopes: Option<&[String]>,
) -> Result<(), RpcError> {
    sqlx::query(
        "insert into api_keys (id, bot_id, key_hash, sealed, scopes) values ($1, $2, $3, $4, $5)",
    )
    .bind(key_id)
    .bind(bot_id)
    .bind(key_hash)
    .bind(key_sealed)
    .bind(scopes)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Disables (with a reason) or re-enables a bot's callback endpoint.
pub async fn set_webhook_disabled(
    pool: &PgPool,
    bot_id: &str,
    reason: Option<&str>,
) -> Result<(), RpcError> {
    let done = sqlx::query(
        "update bots set webhook_disabled_reason = $2,
                         webhook_disabled_at = case when $2::text is null then null else now() end,
                         updated_at = now()
         where id = $1",
    )
    .bind(bot_id)
    .bind(reason)
    .execute(pool)
    .await
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(RpcError::new(404, "not_found", format!("no bot {bot_id}")));
    }
    Ok(())
}

pub async fn bot_exists(pool: &PgPool, id: &str) -> Result<bool, RpcError> {
    Ok(sqlx::query("select 1 from bots where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .is_some())
}

pub async fn insert_channel(
    pool: &PgPool,
    id: &str,
    bot_id: &str,
    platform: Platform,
    sealed: &str,
    api_base_url: Option<&str>,
) -> Result<DateTime<Utc>, RpcError> {
    Ok(sqlx::query(
        "insert into channels (id, bot_id, platform, credentials_sealed, api_base_url)
         values ($1, $2, $3, $4, $5) returning created_at",
    )
    .bind(id)
    .bind(bot_id)
    .bind(platform.as_str())
    .bind(sealed)
    .bind(api_base_url)
    .fetch_one(pool)
    .await
    .map_err(db)?
    .get(0))
}

/// The bot's current record and its API keys (hash, record) that still work.
pub async fn load_bot(
    pool: &PgPool,
    id: &str,
) -> Result<(BotRecord, Vec<(String, ApiKeyRecord)>), RpcError> {
    let row = sqlx::query(
        "select tenant_id, name, enabled, webhook_url, webhook_flavour, webhook_events,
                webhook_platforms, webhook_disabled_reason, rate_per_second, rate_burst,
                fallback_templates, platform_settings, handover_idle_secs, updated_at
         from bots where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .ok_or_else(|| RpcError::new(404, "not_found", format!("no bot {id}")))?;
    let events: sqlx::types::Json<Vec<String>> = row.get("webhook_events");
    let platforms: sqlx::types::Json<Vec<Platform>> = row.get("webhook_platforms");
    let flavour: String = row.get("webhook_flavour");
    let secrets = sqlx::query(
        "select sealed, expires_at from webhook_secrets
         where bot_id = $1 and (expires_at is null or expires_at > now()) order by id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| SealedSecret {
        sealed: r.get("sealed"),
        expires_at: r.get("expires_at"),
    })
    .collect();
    let channels = sqlx::query("select id, platform from channels where bot_id = $1 order by id")
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .filter_map(|r| {
            Some(ChannelRef {
                id: r.get("id"),
                platform: r.get::<String, _>("platform").parse().ok()?,
            })
        })
        .collect();
    let installations = sqlx::query(
        "select i.id, i.app_id, a.partner_id, i.channels, a.definition, a.secret_sealed
         from installations i join apps a on a.id = i.app_id
         where i.bot_id = $1 order by i.id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .filter_map(|r| {
        let def: sqlx::types::Json<patchbay_contract::partners::AppDef> =
            r.try_get("definition").ok()?;
        Some(patchbay_contract::partners::InstallationRef {
            id: r.get("id"),
            app_id: r.get("app_id"),
            partner_id: r.get("partner_id"),
            channels: r.get("channels"),
            events: def.0.events,
            scopes: def.0.scopes,
            callback_url: def.0.callback_url,
            secret: SealedSecret {
                sealed: r.get("secret_sealed"),
                expires_at: None,
            },
        })
    })
    .collect();
    let bot = BotRecord {
        handover_idle_secs: row
            .get::<Option<i32>, _>("handover_idle_secs")
            .and_then(|s| u64::try_from(s).ok()),
        installations,
        channels,
        brandchat_keys: Vec::new(),
        v: V1,
        id: id.to_owned(),
        tenant_id: row.get("tenant_id"),
        name: row.get("name"),
        enabled: row.get("enabled"),
        webhook: WebhookSettings {
            url: row.get("webhook_url"),
            flavour: serde_json::from_value(serde_json::Value::String(flavour)).unwrap_or_default(),
            events: events.0,
            disabled_reason: row.get("webhook_disabled_reason"),
            platforms: platforms.0,
        },
        webhook_secrets: secrets,
        rate_limit: match (
            row.get::<Option<i32>, _>("rate_per_second"),
            row.get::<Option<i32>, _>("rate_burst"),
        ) {
            (Some(p), Some(b)) => Some(RateLimit {
                per_second: u32::try_from(p).unwrap_or(1),
                burst: u32::try_from(b).unwrap_or(1),
            }),
            _ => None,
        },
        fallback_templates: row
            .get::<sqlx::types::Json<BTreeMap<Platform, FallbackTemplate>>, _>("fallback_templates")
            .0,
        platform_settings: row
            .get::<sqlx::types::Json<BTreeMap<Platform, PlatformSettings>>, _>("platform_settings")
            .0,
        updated_at: row.get("updated_at"),
    };
    let keys = sqlx::query(
        "select id, key_hash, expires_at, sealed, scopes, installation_id, channels, agent_name
         from api_keys
         where bot_id = $1 and revoked_at is null and (expires_at is null or expires_at > now())
         order by created_at, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut bot = bot;
    if bot.webhook.flavour == WebhookFlavour::Brandchat {
        bot.brandchat_keys = keys
            .iter()
            .filter_map(|r| {
                Some(SealedSecret {
                    sealed: r.get::<Option<String>, _>("sealed")?,
                    expires_at: r.get("expires_at"),
                })
            })
            .collect();
    }
    let keys = keys
        .into_iter()
        .map(|r| {
            (
                r.get::<String, _>("key_hash"),
                ApiKeyRecord {
                    v: V1,
                    key_id: r.get("id"),
                    bot_id: id.to_owned(),
                    expires_at: r.get("expires_at"),
                    scopes: r.get("scopes"),
                    installation_id: r.get("installation_id"),
                    channels: r.get("channels"),
                    agent: r.get("agent_name"),
                },
            )
        })
        .collect();
    Ok((bot, keys))
}

pub async fn load_channel(pool: &PgPool, id: &str) -> Result<ChannelRecord, RpcError> {
    let row = sqlx::query(
        "select bot_id, platform, credentials_sealed, api_base_url, enabled, updated_at
         from channels where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .ok_or_else(|| RpcError::new(404, "not_found", format!("no channel {id}")))?;
    let platform: String = row.get("platform");
    Ok(ChannelRecord {
        v: V1,
        id: id.to_owned(),
        bot_id: row.get("bot_id"),
        platform: platform
            .parse()
            .map_err(|e: String| RpcError::new(500, "internal", e))?,
        credentials: SealedSecret {
            sealed: row.get("credentials_sealed"),
            expires_at: None,
        },
        api_base_url: row.get("api_base_url"),
        enabled: row.get("enabled"),
        updated_at: row.get("updated_at"),
    })
}

/// 404 unless `done` changed the channel `channel_id` of `bot_id`.
fn one_channel(
    done: &sqlx::postgres::PgQueryResult,
    bot_id: &str,
    channel_id: &str,
) -> Result<(), RpcError> {
    if done.rows_affected() == 0 {
        return Err(RpcError::new(
            404,
            "not_found",
            format!("bot {bot_id} has no channel {channel_id}"),
        ));
    }
    Ok(())
}

/// Enables or disables the channel `channel_id` of `bot_id`.
pub async fn set_channel_enabled(
    pool: &PgPool,
    bot_id: &str,
    channel_id: &str,
    enabled: bool,
) -> Result<(), RpcError> {
    let done = sqlx::query(
        "update channels set enabled = $3, updated_at = now() where id = $1 and bot_id = $2",
    )
    .bind(channel_id)
    .bind(bot_id)
    .bind(enabled)
    .execute(pool)
    .await
    .map_err(db)?;
    one_channel(&done, bot_id, channel_id)
}

/// The custom channels of `bot_id`, with their sealed credentials.
pub async fn custom_channels(
    pool: &PgPool,
    bot_id: &str,
) -> Result<Vec<(String, String)>, RpcError> {
    let rows = sqlx::query(
        "select id, credentials_sealed from channels
         where bot_id = $1 and platform = 'custom' order by id",
    )
    .bind(bot_id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| (r.get("id"), r.get("credentials_sealed")))
        .collect())
}

/// Replaces the sealed credentials of the channel `channel_id` of `bot_id`.
pub async fn replace_credentials(
    pool: &PgPool,
    bot_id: &str,
    channel_id: &str,
    sealed: &str,
) -> Result<(), RpcError> {
    let done = sqlx::query(
        "update channels set credentials_sealed = $3, updated_at = now()
         where id = $1 and bot_id = $2",
    )
    .bind(channel_id)
    .bind(bot_id)
    .bind(sealed)
    .execute(pool)
    .await
    .map_err(db)?;
    one_channel(&done, bot_id, channel_id)
}

/// Ids of every bot and channel.
pub async fn all_ids(pool: &PgPool) -> Result<(Vec<String>, Vec<String>), RpcError> {
    let bots = sqlx::query_scalar("select id from bots order by id")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    let channels = sqlx::query_scalar("select id from channels order by id")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    Ok((bots, channels))
}

fn flavour_name(w: &WebhookSettings) -> String {
    serde_json::to_value(w.flavour)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "native".into())
}

fn not_found(bot_id: &str) -> RpcError {
    RpcError::new(404, "not_found", format!("no bot {bot_id}"))
}

/// Stores a bot's callback settings; a new URL clears a 410 Gone state.
pub async fn update_webhook(
    pool: &PgPool,
    bot_id: &str,
    w: &WebhookSettings,
) -> Result<(), RpcError> {
    let done = sqlx::query(
        "update bots set webhook_url = $2, webhook_flavour = $3, webhook_events = $4,
                         webhook_platforms = $5,
                         webhook_disabled_reason = case when webhook_url is distinct from $2
                                                   then null else webhook_disabled_reason end,
                         webhook_disabled_at = case when webhook_url is distinct from $2
                                               then null else webhook_disabled_at end,
                         updated_at = now()
         where id = $1",
    )
    .bind(bot_id)
    .bind(w.url.as_deref())
    .bind(flavour_name(w))
    .bind(sqlx::types::Json(&w.events))
    .bind(sqlx::types::Json(&w.platforms))
    .execute(pool)
    .await
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(not_found(bot_id));
    }
    Ok(())
}

/// Locks the bot for a rotation (so two rotations take turns) and returns when the current
/// keys or secrets stop working: now + `overlap`, by the database's clock.
async fn begin_rotation(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    bot_id: &str,
    overlap: std::time::Duration,
) -> Result<DateTime<Utc>, RpcError> {
    sqlx::query_scalar(
        "select now() + make_interval(secs => $2) from bots where id = $1 for update",
    )
    .bind(bot_id)
    .bind(overlap.as_secs_f64())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?
    .ok_or_else(|| not_found(bot_id))
}

/// Issues a new API key; the bot's working keys expire after `overlap` (sooner if they
/// already would). Answers when, and the hashes of the keys given an end (their config
/// records change: a key ended at once must leave the config bucket now).
pub async fn rotate_key(
    pool: &PgPool,
    bot_id: &str,
    key_id: &str,
    key_hash: &str,
    key_sealed: &str,
    scopes: Option<&[String]>,
    overlap: std::time::Duration,
) -> Result<(DateTime<Utc>, Vec<String>), RpcError> {
    let mut tx = pool.begin().await.map_err(db)?;
    let until = begin_rotation(&mut tx, bot_id, overlap).await?;
    let ended: Vec<String> = sqlx::query_scalar(
        "update api_keys set expires_at = least(coalesce(expires_at, $2), $2)
         where bot_id = $1 and kind <> 'agent' and revoked_at is null
           and (expires_at is null or expires_at > now())
         returning key_hash",
    )
    .bind(bot_id)
    .bind(until)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    insert_key(&mut tx, bot_id, key_id, key_hash, key_sealed, scopes).await?;
    tx.commit().await.map_err(db)?;
    Ok((until, ended))
}

/// Adds a new webhook secret; the current ones expire after `overlap`.
pub async fn rotate_secret(
    pool: &PgPool,
    bot_id: &str,
    sealed: &str,
    overlap: std::time::Duration,
) -> Result<DateTime<Utc>, RpcError> {
    let mut tx = pool.begin().await.map_err(db)?;
    let until = begin_rotation(&mut tx, bot_id, overlap).await?;
    sqlx::query(
        "update webhook_secrets set expires_at = least(coalesce(expires_at, $2), $2)
         where bot_id = $1 and (expires_at is null or expires_at > now())",
    )
    .bind(bot_id)
    .bind(until)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query("insert into webhook_secrets (bot_id, sealed) values ($1, $2)")
        .bind(bot_id)
        .bind(sealed)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query("update bots set updated_at = now() where id = $1")
        .bind(bot_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(until)
}

/// Revokes a key at once; its hash, so it can be removed from the config bucket.
pub async fn revoke_key(pool: &PgPool, bot_id: &str, key_id: &str) -> Result<String, RpcError> {
    sqlx::query_scalar(
        "update api_keys set revoked_at = coalesce(revoked_at, now())
         where id = $1 and bot_id = $2 returning key_hash",
    )
    .bind(key_id)
    .bind(bot_id)
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .ok_or_else(|| {
        RpcError::new(
            404,
            "not_found",
            format!("bot {bot_id} has no key {key_id}"),
        )
    })
}

/// The config record of the API key hashed `hash`, if it still works (not revoked, not
/// expired).
pub async fn load_key(pool: &PgPool, hash: &str) -> Result<Option<ApiKeyRecord>, RpcError> {
    let row = sqlx::query(
        "select id, bot_id, expires_at, scopes, installation_id, channels, agent_name from api_keys
         where key_hash = $1 and revoked_at is null and (expires_at is null or expires_at > now())",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    Ok(row.map(|r| ApiKeyRecord {
        v: V1,
        key_id: r.get("id"),
        bot_id: r.get("bot_id"),
        expires_at: r.get("expires_at"),
        scopes: r.get("scopes"),
        installation_id: r.get("installation_id"),
        channels: r.get("channels"),
        agent: r.get("agent_name"),
    }))
}

/// Enables or disables a bot, sets its API request limit, its fallback templates and its
/// platform settings (a platform mapped to `None` loses its template or settings); absent
/// values stay.
pub async fn set_bot_state(
    pool: &PgPool,
    bot_id: &str,
    enabled: Option<bool>,
    rate: Option<RateLimit>,
    templates: Option<&BTreeMap<Platform, Option<FallbackTemplate>>>,
    settings: Option<&BTreeMap<Platform, Option<PlatformSettings>>>,
    handover_idle_secs: Option<u64>,
) -> Result<(), RpcError> {
    let set: BTreeMap<Platform, &FallbackTemplate> = templates
        .into_iter()
        .flatten()
        .filter_map(|(p, t)| t.as_ref().map(|t| (*p, t)))
        .collect();
    let removed: Vec<&str> = templates
        .into_iter()
        .flatten()
        .filter(|(_, t)| t.is_none())
        .map(|(p, _)| p.as_str())
        .collect();
    let settings_set: BTreeMap<Platform, &PlatformSettings> = settings
        .into_iter()
        .flatten()
        .filter_map(|(p, s)| s.as_ref().map(|s| (*p, s)))
        .collect();
    let settings_removed: Vec<&str> = settings
        .into_iter()
        .flatten()
        .filter(|(_, s)| s.is_none())
        .map(|(p, _)| p.as_str())
        .collect();
    let done = sqlx::query(
        "update bots set enabled = coalesce($2, enabled),
                         rate_per_second = coalesce($3, rate_per_second),
                         rate_burst = coalesce($4, rate_burst),
                         fallback_templates = (fallback_templates || $5) - $6::text[],
                         platform_settings = (platform_settings || $7) - $8::text[],
                         handover_idle_secs = coalesce($9, handover_idle_secs),
                         updated_at = now()
         where id = $1",
    )
    .bind(bot_id)
    .bind(enabled)
    .bind(rate.map(|r| i32::try_from(r.per_second).unwrap_or(i32::MAX)))
    .bind(rate.map(|r| i32::try_from(r.burst).unwrap_or(i32::MAX)))
    .bind(sqlx::types::Json(&set))
    .bind(&removed)
    .bind(sqlx::types::Json(&settings_set))
    .bind(&settings_removed)
    .bind(handover_idle_secs.map(|s| i32::try_from(s).unwrap_or(i32::MAX)))
    .execute(pool)
    .await
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(not_found(bot_id));
    }
    Ok(())
}

pub async fn insert_tenant(pool: &PgPool, id: &str, name: &str) -> Result<Tenant, RpcError> {
    let created_at: DateTime<Utc> =
        sqlx::query_scalar("insert into tenants (id, name) values ($1, $2) returning created_at")
            .bind(id)
            .bind(name)
            .fetch_one(pool)
            .await
            .map_err(db)?;
    Ok(Tenant {
        id: id.to_owned(),
        name: name.to_owned(),
        bots: 0,
        created_at,
    })
}

pub async fn list_tenants(pool: &PgPool) -> Result<Vec<Tenant>, RpcError> {
    let rows = sqlx::query(
        "select t.id, t.name, t.created_at, count(b.id) as bots
         from tenants t left join bots b on b.tenant_id = t.id
         group by t.id order by t.created_at, t.id",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| Tenant {
            id: r.get("id"),
            name: r.get("name"),
            bots: u64::try_from(r.get::<i64, _>("bots")).unwrap_or(0),
            created_at: r.get("created_at"),
        })
        .collect())
}

pub async fn list_bots(
    pool: &PgPool,
    tenant_id: Option<&str>,
) -> Result<Vec<BotSummary>, RpcError> {
    let rows = sqlx::query(
        "select b.id, b.tenant_id, b.name, b.enabled, b.webhook_url, b.created_at,
                b.fallback_templates, b.platform_settings, count(c.id) as channels
         from bots b left join channels c on c.bot_id = b.id
         where $1::text is null or b.tenant_id = $1
         group by b.id order by b.created_at, b.id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| BotSummary {
            id: r.get("id"),
            tenant_id: r.get("tenant_id"),
            name: r.get("name"),
            enabled: r.get("enabled"),
            webhook_url: r.get("webhook_url"),
            channels: u64::try_from(r.get::<i64, _>("channels")).unwrap_or(0),
            fallback_templates: r
                .get::<sqlx::types::Json<BTreeMap<Platform, FallbackTemplate>>, _>(
                    "fallback_templates",
                )
                .0,
            platform_settings: r
                .get::<sqlx::types::Json<BTreeMap<Platform, PlatformSettings>>, _>(
                    "platform_settings",
                )
                .0,
            created_at: r.get("created_at"),
        })
        .collect())
}

/// A working API key (not an access token) found by its hash: its id, bot and scopes.
pub struct ExchangeableKey {
    /// The key's id.
    pub key_id: String,
    /// Its bot.
    pub bot_id: String,
    /// Its scopes (`None`: every scope).
    pub scopes: Option<Vec<String>>,
}

/// The API key hashed `hash`, if it works and is a key (an access token cannot be exchanged).
pub async fn exchangeable_key(
    pool: &PgPool,
    hash: &str,
) -> Result<Option<ExchangeableKey>, RpcError> {
    let row = sqlx::query(
        "select id, bot_id, scopes from api_keys
         where key_hash = $1 and kind = 'key' and revoked_at is null
           and (expires_at is null or expires_at > now())",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    Ok(row.map(|r| ExchangeableKey {
        key_id: r.get("id"),
        bot_id: r.get("bot_id"),
        scopes: r.get("scopes"),
    }))
}

/// A new access token and refresh token of one family, to store.
pub struct NewTokens<'a> {
    /// The family.
    pub family_id: &'a str,
    /// The access token's id and SHA-256 hex.
    pub access_id: &'a str,
    /// SHA-256 hex of the access token.
    pub access_hash: &'a str,
    /// How long it works.
    pub access_ttl: std::time::Duration,
    /// The refresh token's id.
    pub refresh_id: &'a str,
    /// SHA-256 hex of the refresh token.
    pub refresh_hash: &'a str,
    /// How long it works.
    pub refresh_ttl: std::time::Duration,
}

/// `d` in seconds, as `make_interval(secs => …)` takes them.
pub(crate) fn secs(d: std::time::Duration) -> f64 {
    f64::from(u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

async fn insert_tokens(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &ExchangeableKey,
    t: &NewTokens<'_>,
) -> Result<(), RpcError> {
    sqlx::query(
        "insert into api_keys (id, bot_id, key_hash, kind, family_id, scopes, expires_at)
         values ($1, $2, $3, 'access', $4, $5, now() + make_interval(secs => $6))",
    )
    .bind(t.access_id)
    .bind(&key.bot_id)
    .bind(t.access_hash)
    .bind(t.family_id)
    .bind(&key.scopes)
    .bind(secs(t.access_ttl))
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query(
        "insert into refresh_tokens (id, family_id, bot_id, key_id, token_hash, scopes, expires_at)
         values ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
    )
    .bind(t.refresh_id)
    .bind(t.family_id)
    .bind(&key.bot_id)
    .bind(&key.key_id)
    .bind(t.refresh_hash)
    .bind(&key.scopes)
    .bind(secs(t.refresh_ttl))
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Stores the first tokens of a new family for `key`.
pub async fn issue_tokens(
    pool: &PgPool,
    key: &ExchangeableKey,
    t: &NewTokens<'_>,
) -> Result<(), RpcError> {
    let mut tx = pool.begin().await.map_err(db)?;
    insert_tokens(&mut tx, key, t).await?;
    tx.commit().await.map_err(db)
}

/// What presenting a refresh token came to.
pub enum Refreshed {
    /// It worked: `t` is stored in its family, and it is used up.
    Issued(ExchangeableKey),
    /// No such token.
    Unknown,
    /// It expired.
    Expired,
    /// It was revoked (with its API key, or its family) before it was used.
    Revoked,
    /// Its API key was revoked or has expired: the family ends with it.
    KeyGone,
    /// It was used before (or its family revoked): every token of the family is revoked now;
    /// the access tokens' hashes, to remove them from the config bucket.
    Reused(Vec<String>),
}

/// Uses the refresh token hashed `hash` and, in the same transaction, stores `t` in its family;
/// a token presented a second time revokes its whole family instead.
pub async fn refresh_tokens(
    pool: &PgPool,
    hash: &str,
    t: &NewTokens<'_>,
) -> Result<Refreshed, RpcError> {
    let mut tx = pool.begin().await.map_err(db)?;
    let Some(row) = sqlx::query(
        "select id, family_id, bot_id, key_id, scopes, expires_at <= now() as expired,
                used_at is not null as used, revoked_at is not null as revoked
         from refresh_tokens where token_hash = $1 for update",
    )
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?
    else {
        return Ok(Refreshed::Unknown);
    };
    let family: String = row.get("family_id");
    if row.get::<bool, _>("used") {
        sqlx::query(
            "update refresh_tokens set revoked_at = coalesce(revoked_at, now())
             where family_id = $1",
        )
        .bind(&family)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let hashes: Vec<String> = sqlx::query_scalar(
            "update api_keys set revoked_at = coalesce(revoked_at, now())
             where family_id = $1 and kind = 'access' returning key_hash",
        )
        .bind(&family)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        return Ok(Refreshed::Reused(hashes));
    }
    if row.get::<bool, _>("revoked") {
        return Ok(Refreshed::Revoked);
    }
    if row.get::<bool, _>("expired") {
        return Ok(Refreshed::Expired);
    }
    let key = ExchangeableKey {
        key_id: row.get("key_id"),
        bot_id: row.get("bot_id"),
        scopes: row.get("scopes"),
    };
    let key_works: bool = sqlx::query_scalar(
        "select exists (select 1 from api_keys where id = $1 and revoked_at is null
                          and (expires_at is null or expires_at > now()))",
    )
    .bind(&key.key_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    if !key_works {
        return Ok(Refreshed::KeyGone);
    }
    sqlx::query("update refresh_tokens set used_at = now() where id = $1")
        .bind(row.get::<String, _>("id"))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let t = NewTokens {
        family_id: &family,
        ..*t
    };
    insert_tokens(&mut tx, &key, &t).await?;
    tx.commit().await.map_err(db)?;
    Ok(Refreshed::Issued(key))
}

/// Revokes every token exchanged for key `key_id` (it was revoked); the access tokens' hashes,
/// to remove them from the config bucket.
pub async fn revoke_families_of(pool: &PgPool, key_id: &str) -> Result<Vec<String>, RpcError> {
    let mut tx = pool.begin().await.map_err(db)?;
    let families: Vec<String> = sqlx::query_scalar(
        "update refresh_tokens set revoked_at = coalesce(revoked_at, now())
         where key_id = $1 returning family_id",
    )
    .bind(key_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let hashes: Vec<String> = sqlx::query_scalar(
        "update api_keys set revoked_at = coalesce(revoked_at, now())
         where kind = 'access' and family_id = any($1) and revoked_at is null
         returning key_hash",
    )
    .bind(&families)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(hashes)
}

/// Access tokens that expired (or were revoked) over a minute ago: their hashes, for the
/// config bucket, after which [`forget_tokens`] deletes them.
pub async fn stale_tokens(pool: &PgPool) -> Result<Vec<String>, RpcError> {
    sqlx::query_scalar(
        "select key_hash from api_keys
         where kind = 'access'
           and least(expires_at, coalesce(revoked_at, expires_at)) < now() - interval '1 minute'
         limit 1000",
    )
    .fetch_all(pool)
    .await
    .map_err(db)
}

/// Deletes the access tokens hashed `hashes` and the refresh tokens that expired a day ago.
pub async fn forget_tokens(pool: &PgPool, hashes: &[String]) -> Result<(), RpcError> {
    sqlx::query("delete from api_keys where kind = 'access' and key_hash = any($1)")
        .bind(hashes)
        .execute(pool)
        .await
        .map_err(db)?;
    sqlx::query("delete from refresh_tokens where expires_at < now() - interval '1 day'")
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

/// A new agent of `bot_id` whose invite hashes to `invite_hash`; when it was created.
pub async fn insert_agent(
    pool: &PgPool,
    bot_id: &str,
    agent_id: &str,
    name: &str,
    invite_hash: &str,
) -> Result<DateTime<Utc>, RpcError> {
    sqlx::query_scalar(
        "insert into api_keys (id, bot_id, key_hash, scopes, kind, agent_name)
         select $1, id, $3, $4, 'agent', $5 from bots where id = $2
         returning created_at",
    )
    .bind(agent_id)
    .bind(bot_id)
    .bind(invite_hash)
    .bind(
        patchbay_contract::scopes::AGENT
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .ok_or_else(|| not_found(bot_id))
}

/// The bot's agents whose invites still work, oldest first.
pub async fn list_agents(
    pool: &PgPool,
    bot_id: &str,
) -> Result<Vec<patchbay_contract::Agent>, RpcError> {
    let rows = sqlx::query(
        "select id, agent_name, created_at from api_keys
         where bot_id = $1 and kind = 'agent' and revoked_at is null
         order by created_at, id",
    )
    .bind(bot_id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|r| patchbay_contract::Agent {
            id: r.get("id"),
            name: r.get::<Option<String>, _>("agent_name").unwrap_or_default(),
            created_at: r.get("created_at"),
            invite: None,
        })
        .collect())
}

/// Revokes an agent's invite at once; its hash, so it can be removed from the config bucket.
pub async fn revoke_agent(pool: &PgPool, bot_id: &str, agent_id: &str) -> Result<String, RpcError> {
    sqlx::query_scalar(
        "update api_keys set revoked_at = coalesce(revoked_at, now())
         where id = $1 and bot_id = $2 and kind = 'agent' returning key_hash",
    )
    .bind(agent_id)
    .bind(bot_id)
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .ok_or_else(|| {
        RpcError::new(
            404,
            "not_found",
            format!("bot {bot_id} has no agent {agent_id}"),
        )
    })
}
