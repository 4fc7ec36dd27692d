//! Authentication extractors: the operator's token for `/admin/v1`, a bot's API key for `/v1`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use patchbay_config::secrets::api_key_hash;
use patchbay_contract::BotRecord;
use patchbay_runtime::ApiError;
use subtle::ConstantTimeEq;

use crate::Api;

pub(crate) use patchbay_runtime::http::bearer_token;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    bearer_token(&parts.headers)
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))
}

/// What a bearer key is, as the rate-limit layer already resolved it for this request (so the
/// key is hashed and looked up once).
#[derive(Debug, Clone)]
pub(crate) struct KeyOwner {
    /// Its bot: `None` when the key is valid but its bot is gone.
    pub(crate) bot: Option<Arc<BotRecord>>,
    /// The key's id.
    pub(crate) key_id: Arc<str>,
    /// Its scopes (`None`: every scope).
    pub(crate) scopes: Option<Arc<[String]>>,
    /// The channels it may send through (a partner's token on an installation of some
    /// channels; `None`: all).
    pub(crate) channels: Option<Arc<[String]>>,
    /// A human agent's invite: the agent's name.
    pub(crate) agent: Option<Arc<str>>,
}

/// Resolves a bearer key: `None` when it is no valid API key, else its owner as in [`KeyOwner`].
pub(crate) async fn key_owner(api: &Api, key: &str) -> Result<Option<KeyOwner>, ApiError> {
    let Some(record) = api.view.api_key(&api_key_hash(key)).await? else {
        return Ok(None);
    };
    Ok(Some(KeyOwner {
        bot: api.view.bot(&record.bot_id).await?,
        key_id: Arc::from(record.key_id.as_str()),
        scopes: record.scopes.as_deref().map(Arc::from),
        channels: record.channels.as_deref().map(Arc::from),
        agent: record.agent.as_deref().map(Arc::from),
    }))
}

/// The caller holds the operator token.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<Arc<Api>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if bool::from(token.as_bytes().ct_eq(api.admin_token.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("invalid operator token"))
        }
    }
}

/// The caller holds a valid API key of an enabled bot, with the scope the route needs
/// ([`crate::scopes`]; 403 `missing_scope` naming it otherwise).
#[derive(Debug)]
pub struct BotAuth {
    /// The bot.
    pub bot_id: String,
    /// The key's scopes (`None`: every scope).
    pub scopes: Option<Arc<[String]>>,
    /// The channels it may send through (`None`: every channel of the bot).
    pub channels: Option<Arc<[String]>>,
    /// The credential's id: an API key's (`key_…`), an access token's, or an agent's (`agt_…`).
    pub key_id: Arc<str>,
    /// A human agent's invite: the agent's name (every send goes out as the agent's).
    pub agent: Option<Arc<str>>,
}

impl BotAuth {
    /// Who a send of this caller comes from: what the body asked for (the bot by default),
    /// and its `source_id`. An agent's sends are always the agent's (`human`, its id); an
    /// agent asking for another source gets 403 `agent_sends_as_human`.
    pub(crate) fn source(
        &self,
        asked: Option<crate::ApiSource>,
        source_id: Option<String>,
    ) -> Result<(patchbay_contract::SendSource, Option<String>), ApiError> {
        use patchbay_contract::SendSource;
        match (&self.agent, asked) {
            (None, asked) => Ok((asked.map_or(SendSource::Api, SendSource::from), source_id)),
            (Some(_), None | Some(crate::ApiSource::Human)) => {
                Ok((SendSource::Human, Some(self.key_id.to_string())))
            }
            (Some(_), Some(_)) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "agent_sends_as_human",
                "an agent's messages go out as the agent's (source human)",
            )),
        }
    }

    /// Refuses a send through `channel_id` that the credential may not use (403
    /// `channel_not_enabled`: a partner's token on an installation of other channels).
    pub(crate) fn may_send_through(&self, channel_id: &str) -> Result<(), ApiError> {
        match &self.channels {
            Some(list) if !list.iter().any(|c| c == channel_id) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "channel_not_enabled",
                format!(
                    "this token's app is enabled on channels {} of the bot, not on {channel_id}",
                    list.join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// The caller holds a partner's key (`ppk_…`), checked by `auth`.
#[derive(Debug)]
pub struct PartnerAuth {
    /// The partner.
    pub partner_id: String,
}

impl FromRequestParts<Arc<Api>> for PartnerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let key = bearer(parts)?;
        if !key.starts_with("ppk_") {
            return Err(ApiError::unauthorized("invalid partner key"));
        }
        let req = patchbay_contract::partners::PartnerRequest {
            v: patchbay_contract::V1,
            op: patchbay_contract::partners::PartnerOp::Authenticate {
                api_key: key.to_owned(),
            },
        };
        let partner: patchbay_contract::partners::Partner =
            crate::ask(api, "auth", patchbay_contract::auth_ops::PARTNERS, &req).await?;
        Ok(PartnerAuth {
            partner_id: partner.id,
        })
    }
}

impl FromRequestParts<Arc<Api>> for BotAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let key = bearer(parts)?;
        let owner = match parts.extensions.get::<KeyOwner>() {
            Some(owner) => owner.clone(),
            None => key_owner(api, key)
                .await?
                .ok_or_else(|| ApiError::unauthorized("invalid API key"))?,
        };
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(axum::extract::MatchedPath::as_str)
            .unwrap_or_default();
        // A route without a scope in the table needs every scope (`*`).
        let needed = crate::scopes::required(&parts.method, route).unwrap_or("*");
        BotAuth::of(owner, needed, &format!("{} {route}", parts.method))
    }
}

impl BotAuth {
    /// The caller a resolved key stands for, when its bot is enabled and the key holds
    /// `needed` ([`crate::scopes::ANY`]: any key), which `what` (a route, a method) needs:
    /// 401, or 403 `missing_scope` naming it, otherwise.
    pub(crate) fn of(owner: KeyOwner, needed: &str, what: &str) -> Result<Self, ApiError> {
        let bot = owner
            .bot
            .filter(|b| b.enabled)
            .ok_or_else(|| ApiError::unauthorized("this API key's bot is disabled or deleted"))?;
        let scopes = owner.scopes;
        if needed != crate::scopes::ANY
            && !patchbay_contract::scopes::grants(scopes.as_deref(), needed)
        {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "missing_scope",
                format!(
                    "this API key lacks the scope {needed} that {what} needs; it has {}",
                    scopes
                        .as_deref()
                        .map_or_else(|| "every scope".to_owned(), |s| s.join(", "))
                ),
            ));
        }
        Ok(BotAuth {
            bot_id: bot.id.clone(),
            scopes,
            channels: owner.channels,
            key_id: owner.key_id,
            agent: owner.agent,
        })
    }
}
