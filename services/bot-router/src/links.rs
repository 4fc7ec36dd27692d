//! Patchbay links for web views: a URL button whose URL contains `:code` is sent as
//! `<public_url>/go/<token>` instead, the token bound to the bot, the recipient and the
//! original URL in the links bucket (TTL `PATCHBAY_LINK_TTL_MS`). The `api` service answers
//! `/go/<token>` by minting a one-time code and redirecting to the original URL with it.
//!
//! This runs in the router's send handler, after the messages are stored (they keep the
//! tenant's URL; the token is a credential and stays out of PostgreSQL) and before the
//! outbound jobs are published, so every platform's sender gets the rewritten content.

use async_nats::jetstream::kv;
use patchbay_bus::HandlerError;
use patchbay_bus::quota::Quota;
use patchbay_contract::content::{Button, Card, DEFAULT_LINK_REUSE_SECONDS};
use patchbay_contract::{Content, LinkRecord, V1};

/// The placeholder a tenant puts in a URL button to ask for a one-time code.
pub const CODE_PLACEHOLDER: &str = ":code";

/// Writes link records and rewrites content.
pub struct Links {
    store: kv::Store,
    public_url: String,
    ttl: std::time::Duration,
    /// Links per bot and link lifetime.
    quota: Quota,
}

/// A bot created as many links as its quota allows in this link lifetime.
#[derive(Debug)]
pub struct OverQuota(pub u64);

impl Links {
    /// Links in `store`, served under `public_url`, valid for `ttl`, at most `quota`'s per bot.
    pub fn new(store: kv::Store, public_url: &str, ttl: std::time::Duration, quota: Quota) -> Self {
        Self {
            store,
            public_url: public_url.trim_end_matches('/').to_owned(),
            ttl,
            quota,
        }
    }

    /// `content` with every URL button containing `:code` replaced by a fresh Patchbay link
    /// for `user_id` of `bot_id`; other content is returned unchanged. `Err(OverQuota)` inside
    /// when the bot has no links left in this link lifetime.
    pub async fn rewrite(
        &self,
        bot_id: &str,
        user_id: &str,
        content: &Content,
    ) -> Result<Result<Content, OverQuota>, HandlerError> {
        let mut out = content.clone();
        match &mut out {
            Content::Buttons { buttons, .. } => {
                if let Err(e) = self.rewrite_buttons(bot_id, user_id, buttons).await? {
                    return Ok(Err(e));
                }
            }
            Content::Carousel { cards } => {
                for Card { buttons, .. } in cards.iter_mut() {
                    if let Err(e) = self.rewrite_buttons(bot_id, user_id, buttons).await? {
                        return Ok(Err(e));
                    }
                }
            }
            _ => {}
        }
        Ok(Ok(out))
    }

    async fn rewrite_buttons(
        &self,
        bot_id: &str,
        user_id: &str,
        buttons: &mut [Button],
    ) -> Result<Result<(), OverQuota>, HandlerError> {
        for b in buttons {
            if let Button::Url {
                url, reuse_seconds, ..
            } = b
                && url.contains(CODE_PLACEHOLDER)
            {
                if !self.quota.take(bot_id).await? {
                    return Ok(Err(OverQuota(self.quota.limit())));
                }
                let reuse = reuse_seconds.unwrap_or(DEFAULT_LINK_REUSE_SECONDS);
                *url = self.link(bot_id, user_id, url, reuse).await?;
                // The platform gets a plain URL button.
                *reuse_seconds = None;
            }
        }
        Ok(Ok(()))
    }

    /// Stores a new link for `url` and returns its public address.
    async fn link(
        &self,
        bot_id: &str,
        user_id: &str,
        url: &str,
        reuse_seconds: u32,
    ) -> Result<String, HandlerError> {
        let token = patchbay_config::secrets::new_url_token()
            .map_err(|e| HandlerError::retry(format!("link token: {e}")))?;
        let ttl = chrono::Duration::from_std(self.ttl)
            .map_err(|e| HandlerError::reject(format!("link TTL: {e}")))?;
        let record = LinkRecord {
            v: V1,
            bot_id: bot_id.to_owned(),
            user_id: user_id.to_owned(),
            url: url.to_owned(),
            expires_at: chrono::Utc::now() + ttl,
            reuse_seconds,
            opened_at: None,
            opener: None,
            codes_minted: 0,
        };
        let body = serde_json::to_vec(&record)
            .map_err(|e| HandlerError::reject(format!("link record: {e}")))?;
        self.store
            .create(&token, body.into())
            .await
            .map_err(|e| HandlerError::unavailable(format!("links bucket: {e}")))?;
        Ok(format!("{}/go/{token}", self.public_url))
    }
}
