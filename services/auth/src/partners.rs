//! Partners, their apps and the apps' installations on bots (`patchbay_contract::partners`),
//! answered over `<p>.rpc.auth.partners` (sealed both ways: keys and tokens cross it). Every
//! operation is scoped: a partner's apps and installations by `partner_id`, a bot's
//! installations by `bot_id`; the API names the caller's own. A change that moves an
//! installation republishes its bot (the record carries the installations) and the tokens it
//! ends.

use chrono::{DateTime, Utc};
use patchbay_config::secrets::{api_key_hash, new_webhook_secret};
use patchbay_contract::ids::{new_id, prefix};
use patchbay_contract::partners::{
    App, AppDef, CreatedApp, CreatedPartner, Installation, Partner, PartnerOp, PartnerRequest,
};
use patchbay_contract::{IssuedAccessToken, RpcError};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::store::db;
use crate::{Auth, KNOWN_EVENTS, internal, invalid, token};

fn json<T: serde::Serialize>(v: &T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(internal)
}

fn not_found(what: &str, id: &str) -> RpcError {
    RpcError::new(404, "not_found", format!("no {what} {id}"))
}

const APP_COLUMNS: &str = "a.id, a.partner_id, p.name as partner_name, a.definition, \
                           a.created_at, a.updated_at";
const INSTALLATION_COLUMNS: &str = "i.id, i.app_id, a.definition, a.partner_id, b.tenant_id, \
                                    i.bot_id, i.channels, i.created_at";

fn app_of(r: &PgRow) -> Result<App, RpcError> {
    let def: sqlx::types::Json<AppDef> = r.try_get("definition").map_err(internal)?;
    Ok(App {
        id: r.get("id"),
        partner_id: r.get("partner_id"),
        partner_name: r.get("partner_name"),
        def: def.0,
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

fn installation_of(r: &PgRow) -> Result<Installation, RpcError> {
    let def: sqlx::types::Json<AppDef> = r.try_get("definition").map_err(internal)?;
    Ok(Installation {
        id: r.get("id"),
        app_id: r.get("app_id"),
        app_name: def.0.name,
        partner_id: r.get("partner_id"),
        tenant_id: r.get("tenant_id"),
        bot_id: r.get("bot_id"),
        channels: r.get("channels"),
        scopes: def.0.scopes,
        events: def.0.events,
        created_at: r.get("created_at"),
    })
}

impl Auth {
    /// One partner operation; the answer as JSON.
    pub(crate) async fn partners(&self, req: PartnerRequest) -> Result<Value, RpcError> {
        match req.op {
            PartnerOp::CreatePartner { name } => {
                if name.trim().is_empty() || name.chars().count() > 100 {
                    return Err(invalid("name", "must be 1 to 100 characters"));
                }
                let api_key = token("ppk_").map_err(internal)?;
                let id = new_id(prefix::PARTNER);
                let created_at: DateTime<Utc> = sqlx::query_scalar(
                    "insert into partners (id, name, key_hash) values ($1, $2, $3)
                     returning created_at",
                )
                .bind(&id)
                .bind(&name)
                .bind(api_key_hash(&api_key))
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                tracing::info!(partner_id = %id, "partner added");
                json(&CreatedPartner {
                    partner: Partner {
                        id,
                        name,
                        created_at,
                    },
                    api_key,
                })
            }
            PartnerOp::ListPartners => {
                let rows = sqlx::query("select id, name, created_at from partners order by id")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
                let partners: Vec<Partner> = rows
                    .iter()
                    .map(|r| Partner {
                        id: r.get("id"),
                        name: r.get("name"),
                        created_at: r.get("created_at"),
                    })
                    .collect();
                json(&partners)
            }
            PartnerOp::Authenticate { api_key } => {
                let row =
                    sqlx::query("select id, name, created_at from partners where key_hash = $1")
                        .bind(api_key_hash(&api_key))
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db)?
                        .ok_or_else(|| RpcError::new(401, "unauthorized", "invalid partner key"))?;
                json(&Partner {
                    id: row.get("id"),
                    name: row.get("name"),
                    created_at: row.get("created_at"),
                })
            }
            PartnerOp::CreateApp { partner_id, app } => {
                let app = self.checked(app).await?;
                let id = new_id(prefix::APP);
                let secret = new_webhook_secret().map_err(internal)?;
                let sealed = self.key.seal(&id, secret.as_bytes()).map_err(internal)?;
                sqlx::query(
                    "insert into apps (id, partner_id, definition, secret_sealed)
                     values ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(&partner_id)
                .bind(sqlx::types::Json(&app))
                .bind(&sealed)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                tracing::info!(%partner_id, app_id = %id, "app published");
                let app = self.app(&id, Some(&partner_id)).await?;
                json(&CreatedApp {
                    app,
                    webhook_secret: secret,
                })
            }
            PartnerOp::ListApps { partner_id } => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "select {APP_COLUMNS} from apps a join partners p on p.id = a.partner_id
                     where a.partner_id = $1 order by a.id"
                )))
                .bind(&partner_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                json(&rows.iter().map(app_of).collect::<Result<Vec<_>, _>>()?)
            }
            PartnerOp::GetApp { app_id, partner_id } => {
                json(&self.app(&app_id, partner_id.as_deref()).await?)
            }
            PartnerOp::ReplaceApp {
                partner_id,
                app_id,
                app,
            } => {
                let app = self.checked(app).await?;
                let done = sqlx::query(
                    "update apps set definition = $3, updated_at = now()
                     where id = $1 and partner_id = $2",
                )
                .bind(&app_id)
                .bind(&partner_id)
                .bind(sqlx::types::Json(&app))
                .execute(&self.pool)
                .await
                .map_err(db)?;
                if done.rows_affected() == 0 {
                    return Err(not_found("app", &app_id));
                }
                for bot_id in self.bots_of_app(&app_id).await? {
                    self.publish_bot(&bot_id).await?;
                }
                tracing::info!(%partner_id, %app_id, "app replaced");
                json(&self.app(&app_id, Some(&partner_id)).await?)
            }
            PartnerOp::DeleteApp { partner_id, app_id } => {
                let bots = self.bots_of_app(&app_id).await?;
                let tokens = self.token_hashes("a.id = $1", &app_id).await?;
                let done = sqlx::query("delete from apps where id = $1 and partner_id = $2")
                    .bind(&app_id)
                    .bind(&partner_id)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                if done.rows_affected() == 0 {
                    return Err(not_found("app", &app_id));
                }
                self.republish(&bots, &tokens).await?;
                tracing::info!(%partner_id, %app_id, installations = bots.len(), "app withdrawn");
                Ok(Value::Null)
            }
            PartnerOp::Enable {
                bot_id,
                app_id,
                channels,
            } => {
                self.app(&app_id, None).await?;
                if let Some(list) = &channels {
                    self.check_channels(&bot_id, list).await?;
                }
                let id = new_id(prefix::INSTALLATION);
                let installed: String = sqlx::query_scalar(
                    "insert into installations (id, app_id, bot_id, channels)
                     values ($1, $2, $3, $4)
                     on conflict (app_id, bot_id) do update set channels = excluded.channels
                     returning id",
                )
                .bind(&id)
                .bind(&app_id)
                .bind(&bot_id)
                .bind(&channels)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
                // The channels may have changed: tokens carry them, so the installation's
                // tokens follow.
                sqlx::query("update api_keys set channels = $2 where installation_id = $1")
                    .bind(&installed)
                    .bind(&channels)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                self.publish_bot(&bot_id).await?;
                tracing::info!(%bot_id, %app_id, installation_id = %installed, channels = ?channels, "app enabled");
                json(&self.installation(&installed).await?)
            }
            PartnerOp::Disable { bot_id, app_id } => {
                let Some(id): Option<String> = sqlx::query_scalar(
                    "select id from installations where bot_id = $1 and app_id = $2",
                )
                .bind(&bot_id)
                .bind(&app_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?
                else {
                    return Err(RpcError::new(
                        404,
                        "not_found",
                        format!("app {app_id} is not enabled on this bot"),
                    ));
                };
                let tokens = self.token_hashes("i.id = $1", &id).await?;
                sqlx::query("delete from installations where id = $1")
                    .bind(&id)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                self.republish(std::slice::from_ref(&bot_id), &tokens)
                    .await?;
                tracing::info!(%bot_id, %app_id, installation_id = %id, tokens = tokens.len(), "app disabled");
                Ok(Value::Null)
            }
            PartnerOp::Installations { bot_id, partner_id } => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "select {INSTALLATION_COLUMNS} from installations i
                     join apps a on a.id = i.app_id join bots b on b.id = i.bot_id
                     where ($1::text is null or i.bot_id = $1)
                       and ($2::text is null or a.partner_id = $2)
                       and ($1::text is not null or $2::text is not null)
                     order by i.id"
                )))
                .bind(&bot_id)
                .bind(&partner_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                json(
                    &rows
                        .iter()
                        .map(installation_of)
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            PartnerOp::InstallationToken {
                partner_id,
                installation_id,
            } => {
                let access_token = token("pbat_").map_err(internal)?;
                let hash = api_key_hash(&access_token);
                let row = sqlx::query(
                    "insert into api_keys (id, bot_id, key_hash, kind, scopes, expires_at,
                                           installation_id, channels)
                     select $1, i.bot_id, $2, 'access',
                            array(select jsonb_array_elements_text(a.definition -> 'scopes')),
                            now() + make_interval(secs => $5), i.id, i.channels
                     from installations i join apps a on a.id = i.app_id
                     where i.id = $3 and a.partner_id = $4
                     returning bot_id, scopes, channels",
                )
                .bind(new_id(prefix::ACCESS_TOKEN))
                .bind(&hash)
                .bind(&installation_id)
                .bind(&partner_id)
                .bind(crate::store::secs(self.access_ttl))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?
                .ok_or_else(|| not_found("installation", &installation_id))?;
                self.publish_key(&hash).await?;
                let bot_id: String = row.get("bot_id");
                tracing::info!(%partner_id, %installation_id, %bot_id, "installation token issued");
                json(&IssuedAccessToken {
                    access_token,
                    expires_in: self.access_ttl.as_secs(),
                    bot_id,
                    installation_id,
                    scopes: row
                        .get::<Option<Vec<String>>, _>("scopes")
                        .unwrap_or_default(),
                    channels: row.get("channels"),
                })
            }
        }
    }

    /// `app` checked, its callback URL's address too.
    async fn checked(&self, mut app: AppDef) -> Result<AppDef, RpcError> {
        app.check(KNOWN_EVENTS)
            .map_err(|e| invalid(&e.field, &e.message))?;
        app.callback_url =
            patchbay_platform::http::check_callback_url(&app.callback_url, self.allow_private)
                .await
                .map_err(|e| invalid("callback_url", e))?
                .to_string();
        Ok(app)
    }

    /// App `id`, a partner's own when `partner_id` is given.
    async fn app(&self, id: &str, partner_id: Option<&str>) -> Result<App, RpcError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {APP_COLUMNS} from apps a join partners p on p.id = a.partner_id
             where a.id = $1 and ($2::text is null or a.partner_id = $2)"
        )))
        .bind(id)
        .bind(partner_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found("app", id))?;
        app_of(&row)
    }

    async fn installation(&self, id: &str) -> Result<Installation, RpcError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {INSTALLATION_COLUMNS} from installations i
             join apps a on a.id = i.app_id join bots b on b.id = i.bot_id where i.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found("installation", id))?;
        installation_of(&row)
    }

    /// Every channel of `list` is the bot's (422 naming the first that is not).
    async fn check_channels(&self, bot_id: &str, list: &[String]) -> Result<(), RpcError> {
        if list.is_empty() {
            return Err(invalid(
                "channels",
                "name at least one channel, or leave it out for all of them",
            ));
        }
        let own: Vec<String> = sqlx::query_scalar("select id from channels where bot_id = $1")
            .bind(bot_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        match list.iter().find(|c| !own.contains(c)) {
            Some(c) => Err(invalid("channels", format!("the bot has no channel {c}"))),
            None => Ok(()),
        }
    }

    async fn bots_of_app(&self, app_id: &str) -> Result<Vec<String>, RpcError> {
        sqlx::query_scalar("select bot_id from installations where app_id = $1")
            .bind(app_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    /// The hashes of the access tokens of the installations `filter` selects (by `$1`), so
    /// their published records can be removed once the installations are gone.
    async fn token_hashes(&self, filter: &str, arg: &str) -> Result<Vec<String>, RpcError> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select k.key_hash from api_keys k join installations i on i.id = k.installation_id
             join apps a on a.id = i.app_id where {filter}"
        )))
        .bind(arg)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn republish(&self, bots: &[String], tokens: &[String]) -> Result<(), RpcError> {
        for hash in tokens {
            self.publish_key(hash).await?;
        }
        for bot_id in bots {
            self.publish_bot(bot_id).await?;
        }
        Ok(())
    }
}
