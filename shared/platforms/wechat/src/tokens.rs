//! Access tokens. WeChat gives one access token per AppID at a time: fetching a new one
//! invalidates the previous one (after a short overlap), and fetches are counted against a
//! daily quota. So the whole installation shares one token per AppID, whatever the number of
//! sender replicas: [`SharedTokens`] keeps it in the `<p>_tokens` bucket, and the one replica
//! that finds it due (a tenth of its life left, or refused with 40001 / 42001) claims the
//! refresh with a compare-and-set on the bucket entry before it fetches; the others wait for
//! the new token instead of fetching their own. A token whose answer arrives while NATS is
//! down is used at once and shared as soon as NATS is back (for as long as the claim holds), so
//! an outage does not make another replica fetch a second one.

use std::future::Future;

use patchbay_platform::SendError;

use crate::WechatCredentials;

/// Where a sender gets an Official Account's access token.
pub trait AccessTokens: Send + Sync + 'static {
    /// A valid access token of `creds.app_id`, fetched from `base_url` (`/cgi-bin/token`)
    /// only when no valid one is shared.
    fn get(
        &self,
        creds: &WechatCredentials,
        base_url: &str,
    ) -> impl Future<Output = Result<String, SendError>> + Send;

    /// WeChat refused `token` as invalid or expired (40001, 40014, 42001): the next
    /// [`AccessTokens::get`] of any replica fetches a new one, once for all.
    fn invalidate(&self, creds: &WechatCredentials, token: &str)
    -> impl Future<Output = ()> + Send;
}

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// How long a replica's claim to fetch a token holds before another may take it over (the
/// claimant died or hangs).
const CLAIM_TIMEOUT: TimeDelta = TimeDelta::seconds(15);
/// How long a caller waits for another replica's fetch before giving up (retried later).
const WAIT: Duration = Duration::from_secs(20);
/// How often a waiting caller looks at the shared entry again.
const POLL: Duration = Duration::from_millis(50);
/// The pause between attempts to share a fetched token while NATS does not answer.
const SHARE_RETRY: Duration = Duration::from_millis(250);

/// The shared entry of one AppID (`wechat.<app id>` in the tokens bucket).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    /// The current token, unless it was refused or never fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// When WeChat said it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    /// When it is due for a refresh: a tenth of its life before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_at: Option<DateTime<Utc>>,
    /// The replica fetching a new token, and since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<Claim>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    by: String,
    since: DateTime<Utc>,
}

impl Record {
    fn fresh(&self, now: DateTime<Utc>) -> Option<(&str, DateTime<Utc>)> {
        match (&self.token, self.refresh_at) {
            (Some(t), Some(at)) if now < at => Some((t.as_str(), at)),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

/// The installation's access tokens, shared through the `<p>_tokens` bucket (see the module
/// documentation). One per process; cheap to call on every send (a valid token is answered
/// from memory).
pub struct SharedTokens {
    kv: kv::Store,
    http: reqwest::Client,
    /// This replica's name in claims.
    me: String,
    /// AppID → (token, refresh time), as last read or fetched here.
    local: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
    /// Failed attempts to share a fetched token (also `patchbay_wechat_token_share_failures_total`).
    share_failures: std::sync::atomic::AtomicU64,
    /// Seals the shared entries: an access token is a credential.
    seal: Option<patchbay_config::MasterKey>,
}

impl std::fmt::Debug for SharedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTokens")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn key(app_id: &str) -> String {
    format!("wechat.{app_id}")
}

fn unavailable(what: impl std::fmt::Display) -> SendError {
    SendError::Retryable {
        reason: format!("access token: {what}"),
        after: None,
    }
}

impl SharedTokens {
    /// Tokens kept in `kv` (the `<p>_tokens` bucket), fetched with calls that time out after
    /// `timeout`.
    pub fn new(kv: kv::Store, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            kv,
            http: patchbay_platform::http::client_builder(timeout).build()?,
            me: patchbay_contract::ids::new_id("tkn"),
            local: Mutex::default(),
            share_failures: Default::default(),
            seal: None,
        })
    }

    /// Shared entries sealed with `key` (the AppID's entry name as associated data), so no
    /// token is in the bucket in clear. Every replica must use the same key.
    #[must_use]
    pub fn sealed_with(mut self, key: Option<patchbay_config::MasterKey>) -> Self {
        self.seal = key;
        self
    }

    fn encode(&self, app_id: &str, record: &Record) -> Result<Vec<u8>, SendError> {
        let json = serde_json::to_vec(record).map_err(unavailable)?;
        match &self.seal {
            Some(k) => Ok(k
                .seal(&key(app_id), &json)
                .map_err(unavailable)?
                .into_bytes()),
            None => Ok(json),
        }
    }

    /// An entry that cannot be read (sealed with another key, corrupt) counts as none: the
    /// next caller claims and fetches a fresh token.
    fn decode(&self, app_id: &str, value: &[u8]) -> Record {
        let json = match &self.seal {
            Some(k) => match k.open(&key(app_id), std::str::from_utf8(value).unwrap_or_default()) {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(app_id, error = %e, "an access token entry cannot be opened; ignored");
                    return Record::default();
                }
            },
            None => value.to_vec(),
        };
        serde_json::from_slice(&json).unwrap_or_default()
    }

    fn remembered(&self, app_id: &str, now: DateTime<Utc>) -> Option<String> {
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local
            .get(app_id)
            .filter(|(_, refresh_at)| now < *refresh_at)
            .map(|(t, _)| t.clone())
    }

    fn remember(&self, app_id: &str, token: &str, refresh_at: DateTime<Utc>) {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app_id.to_owned(), (token.to_owned(), refresh_at));
    }

    /// The shared entry and its revision (0: none yet).
    async fn read(&self, app_id: &str) -> Result<(Record, u64), SendError> {
        let entry = self.kv.entry(key(app_id)).await.map_err(unavailable)?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                (self.decode(app_id, &e.value), e.revision)
            }
            Some(e) => (Record::default(), e.revision),
            None => (Record::default(), 0),
        })
    }

    /// Writes `record` if the entry is still at `revision`: its new revision, or `None` when
    /// another replica changed it first.
    async fn swap(
        &self,
        app_id: &str,
        record: &Record,
        revision: u64,
    ) -> Result<Option<u64>, SendError> {
        let value = self.encode(app_id, record)?;
        patchbay_bus::write_at(
            &self.kv,
            &key(app_id),
            value.into(),
            (revision != 0).then_some(revision),
        )
        .await
        .map_err(|_| unavailable("the tokens bucket refused a write"))
    }

    /// Shares a token this call fetched while holding the claim at `revision`. The token is
    /// valid whatever happens here, so this never fails the call: it keeps trying through a
    /// NATS outage for as long as the claim keeps the other replicas waiting, because a
    /// replica that found the claim lapsed and no token would fetch another one, and that
    /// fetch would invalidate this one. It stops when another replica took the claim over
    /// (that one's token will win) or an unanswered write turns out to have landed.
    async fn share(&self, app_id: &str, record: &Record, revision: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let attempt = self.swap(app_id, record, revision).await;
            match attempt {
                Ok(Some(_)) => return,
                Ok(None) => {
                    // Changed since the claim: by an earlier attempt whose answer was lost, or
                    // by a replica that took the lapsed claim over.
                    if let Ok((now, _)) = self.read(app_id).await
                        && now.token != record.token
                    {
                        tracing::warn!(
                            app_id,
                            "another replica took the access-token claim over before this one's token was shared"
                        );
                    }
                    return;
                }
                Err(e) => {
                    self.share_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!("patchbay_wechat_token_share_failures_total").increment(1);
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(app_id, error = %e, "could not share the new access token");
                        return;
                    }
                    tracing::warn!(app_id, error = %e, "sharing the new access token; trying again");
                    tokio::time::sleep(SHARE_RETRY).await;
                }
            }
        }
    }

    /// Fetches a new token from WeChat (this replica holds the claim).
    async fn fetch(
        &self,
        creds: &WechatCredentials,
        base_url: &str,
    ) -> Result<(String, i64), SendError> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/cgi-bin/token", base_url.trim_end_matches('/')),
            &[
                ("grant_type", "client_credential"),
                ("appid", creds.app_id.as_str()),
                ("secret", creds.app_secret.as_str()),
            ],
        )
        .map_err(|e| unavailable(format!("the API base URL: {e}")))?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        if response.status().is_server_error() {
            return Err(unavailable(format!(
                "WeChat answered {}",
                response.status()
            )));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        match (answer.access_token, answer.errcode.unwrap_or(0)) {
            (Some(token), 0) => Ok((token, answer.expires_in.unwrap_or(7200).max(1))),
            (_, -1) => Err(unavailable("WeChat is busy (-1)")),
            (_, code) => Err(SendError::permanent(
                "unauthorized",
                format!(
                    "WeChat refused the channel's app_id or app_secret for an access token ({code}: {})",
                    answer.errmsg.unwrap_or_default()
                ),
                Some(code),
            )),
        }
    }
}

impl AccessTokens for SharedTokens {
    async fn get(&self, creds: &WechatCredentials, base_url: &str) -> Result<String, SendError> {
        let app_id = creds.app_id.as_str();
        if let Some(t) = self.remembered(app_id, Utc::now()) {
            return Ok(t);
        }
        // This call's own name in claims: another call of this process claiming the refresh
        // is waited for like another replica (sharing the process's name let two concurrent
        // calls each take the claim and fetch).
        let me = format!("{}/{}", self.me, patchbay_contract::ids::new_id("get"));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = Utc::now();
            let (record, revision) = self.read(app_id).await?;
            if let Some((token, refresh_at)) = record.fresh(now) {
                let token = token.to_owned();
                self.remember(app_id, &token, refresh_at);
                return Ok(token);
            }
            let claimed_elsewhere = record
                .claim
                .as_ref()
                .is_some_and(|c| c.by != me && now - c.since < CLAIM_TIMEOUT);
            if !claimed_elsewhere {
                let claim = Record {
                    claim: Some(Claim {
                        by: me.clone(),
                        since: now,
                    }),
                    ..record.clone()
                };
                if let Some(claimed) = self.swap(app_id, &claim, revision).await? {
                    let fetched = self.fetch(creds, base_url).await;
                    let (token, expires_in) = match fetched {
                        Ok(t) => t,
                        Err(e) => {
                            // Give the claim back, so another try need not wait for it to lapse.
                            let _ = self
                                .kv
                                .put(
                                    key(app_id),
                                    self.encode(app_id, &record).unwrap_or_default().into(),
                                )
                                .await;
                            return Err(e);
                        }
                    };
                    let now = Utc::now();
                    let refresh_at = now + TimeDelta::milliseconds(expires_in * 900);
                    let record = Record {
                        token: Some(token.clone()),
                        expires_at: Some(now + TimeDelta::seconds(expires_in)),
                        refresh_at: Some(refresh_at),
                        claim: None,
                    };
                    // Kept here first: the token is valid even if sharing it fails.
                    self.remember(app_id, &token, refresh_at);
                    self.share(app_id, &record, claimed).await;
                    tracing::info!(app_id, expires_in, "WeChat access token fetched and shared");
                    return Ok(token);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(unavailable(
                    "another replica's fetch did not finish in time",
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn invalidate(&self, creds: &WechatCredentials, token: &str) {
        let app_id = creds.app_id.as_str();
        {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            if local.get(app_id).is_some_and(|(t, _)| t == token) {
                local.remove(app_id);
            }
        }
        // Only the token that was refused: a replica that already shared a newer one keeps it.
        let Ok((record, revision)) = self.read(app_id).await else {
            return;
        };
        if record.token.as_deref() == Some(token) {
            let refused = Record {
                token: None,
                expires_at: None,
                refresh_at: None,
                claim: record.claim.clone(),
            };
            if let Err(e) = self.swap(app_id, &refused, revision).await {
                tracing::warn!(app_id, error = %e, "could not mark a refused access token");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use patchbay_testkit::eventually;
    use patchbay_testkit::nats::NatsServer;
    use patchbay_testkit::wechat::FakeWechat;
    use std::sync::Arc;

    fn creds() -> WechatCredentials {
        WechatCredentials {
            app_id: fx::APP_ID.into(),
            app_secret: "app-secret".into(),
            token: fx::TOKEN.into(),
            encoding_aes_key: None,
            customer_service_api: true,
        }
    }

    /// Every replica asks `n` times at once; all get the same token.
    async fn all_ask(replicas: &[SharedTokens], base_url: &str, n: usize) -> String {
        let c = creds();
        let asks = replicas
            .iter()
            .flat_map(|r| (0..n).map(|_| r.get(&c, base_url)))
            .collect::<Vec<_>>();
        let got: Vec<String> = futures::future::join_all(asks)
            .await
            .into_iter()
            .map(|t| t.expect("a token"))
            .collect();
        assert!(got.iter().all(|t| *t == got[0]), "one token for all");
        got[0].clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_replicas_fetch_one_token_per_period_and_one_after_a_refusal() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await.expect("nats-server");
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let kv = js
            .create_key_value(kv::Config {
                bucket: "t_tokens".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let fake = FakeWechat::start().await;
        fake.add_app(fx::APP_ID, "app-secret");
        // Long enough that a loaded machine answers every ask of a period within it (the
        // token is due after nine tenths of it).
        fake.set_token_ttl(Duration::from_secs(10));
        let base = fake.base_url();
        let replicas: Vec<SharedTokens> = (0..3)
            .map(|_| SharedTokens::new(kv.clone(), Duration::from_secs(5)).unwrap())
            .collect();

        // Period 1: fifteen concurrent asks, one fetch.
        let first = all_ask(&replicas, &base, 5).await;
        assert_eq!(fake.token_fetches(fx::APP_ID), 1);
        assert_eq!(fake.current_token(fx::APP_ID), Some(first.clone()));

        // Period 2: once the shared token is due (its refresh time, as shared), one more.
        let (record, _) = replicas[0].read(fx::APP_ID).await.unwrap();
        let due = record.refresh_at.expect("a refresh time");
        assert!(
            due < record.expires_at.unwrap(),
            "refreshed before it expires"
        );
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_millis(50)).await;
        let second = all_ask(&replicas, &base, 5).await;
        assert_ne!(second, first);
        assert_eq!(fake.token_fetches(fx::APP_ID), 2);

        // Refused (another process fetched one, so WeChat answers 40001): every replica
        // reports it, one fetch follows.
        fake.rotate_token(fx::APP_ID);
        let c = creds();
        futures::future::join_all(replicas.iter().map(|r| r.invalidate(&c, &second))).await;
        let third = all_ask(&replicas, &base, 5).await;
        assert_eq!(fake.token_fetches(fx::APP_ID), 3);
        assert_eq!(fake.current_token(fx::APP_ID), Some(third));
    }

    /// The answer to a token fetch arrives while NATS is down: the replica that fetched it
    /// keeps trying to share it until NATS is back, so the other replica, waiting on its claim,
    /// takes that token instead of fetching one that would invalidate it. (Giving up at the
    /// first failed write, as an early version did, left the claim to lapse: 2 fetches.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_fetched_through_a_nats_outage_is_still_shared() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut nats = NatsServer::start().await.expect("nats-server");
        let url = nats.url();
        let bucket = || async {
            let mut js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
            // Writes into the outage fail fast instead of after the default 5 s.
            js.set_timeout(Duration::from_millis(300));
            js.create_key_value(kv::Config {
                bucket: "t_tokens".into(),
                ..Default::default()
            })
            .await
            .unwrap()
        };
        let fake = FakeWechat::start().await;
        fake.add_app(fx::APP_ID, "app-secret");
        let base = fake.base_url();
        let first = Arc::new(SharedTokens::new(bucket().await, Duration::from_secs(5)).unwrap());
        let second = SharedTokens::new(bucket().await, Duration::from_secs(5)).unwrap();

        let answer = fake.hold_token_answers();
        let fetching = tokio::spawn({
            let (first, base) = (first.clone(), base.clone());
            async move { first.get(&creds(), &base).await }
        });
        // The fetch reached WeChat (so `first` holds the claim); NATS goes down before the
        // answer arrives.
        eventually(WAIT, "the fetch at WeChat", || async {
            (fake.token_fetches(fx::APP_ID) == 1).then_some(())
        })
        .await;
        nats.kill();
        answer.send_replace(true);
        eventually(WAIT, "a failed share", || async {
            (first
                .share_failures
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0)
            .then_some(())
        })
        .await;
        nats.restart().await.expect("nats-server again");

        let token = fetching.await.unwrap().expect("the fetched token");
        assert_eq!(second.get(&creds(), &base).await.expect("a token"), token);
        assert_eq!(fake.token_fetches(fx::APP_ID), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_secret_is_permanent_and_releases_the_claim() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await.expect("nats-server");
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let kv = js
            .create_key_value(kv::Config {
                bucket: "t_tokens".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let fake = FakeWechat::start().await;
        fake.add_app(fx::APP_ID, "another-secret");
        let tokens = SharedTokens::new(kv, Duration::from_secs(5)).unwrap();
        let Err(SendError::Permanent(e)) = tokens.get(&creds(), &fake.base_url()).await else {
            panic!("a wrong secret is permanent");
        };
        assert_eq!(
            (e.code.as_str(), e.platform_code),
            ("unauthorized", Some(40001))
        );
        let (record, _) = tokens.read(fx::APP_ID).await.unwrap();
        assert!(record.claim.is_none(), "the claim was given back");
        // Fixed by the operator: the next send fetches at once.
        fake.add_app(fx::APP_ID, "app-secret");
        assert!(tokens.get(&creds(), &fake.base_url()).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_tokens_are_sealed_in_the_bucket() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await.expect("nats-server");
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let kv = js
            .create_key_value(kv::Config {
                bucket: "t_tokens".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let fake = FakeWechat::start().await;
        fake.add_app(fx::APP_ID, "app-secret");
        let master = || {
            Some(
                patchbay_config::MasterKey::from_base64(
                    &patchbay_config::MasterKey::generate_base64().unwrap(),
                )
                .unwrap(),
            )
        };
        let key = master();
        let tokens = SharedTokens::new(kv.clone(), Duration::from_secs(5))
            .unwrap()
            .sealed_with(key.clone());
        let token = tokens.get(&creds(), &fake.base_url()).await.unwrap();
        let stored = kv.get(super::key(fx::APP_ID)).await.unwrap().unwrap();
        assert!(
            !String::from_utf8_lossy(&stored).contains(&token),
            "the token is in the bucket in clear"
        );
        // Another replica with the same key reuses it; none is fetched again.
        let other = SharedTokens::new(kv.clone(), Duration::from_secs(5))
            .unwrap()
            .sealed_with(key);
        assert_eq!(other.get(&creds(), &fake.base_url()).await.unwrap(), token);
        assert_eq!(fake.token_fetches(fx::APP_ID), 1);
        // Without the key the entry reads as none.
        let stranger = SharedTokens::new(kv, Duration::from_secs(5))
            .unwrap()
            .sealed_with(master());
        assert!(stranger.read(fx::APP_ID).await.unwrap().0.token.is_none());
    }
}
