//! The bot's webhook at Viber (`reference/platforms.md` §7.1): `set_webhook` with
//! `{"url": <webhook>, "event_types": [...], "send_name": true, "send_photo": true}` tells
//! Viber where to post the bot's callbacks; `get_account_info` reads it back (`webhook`).
//! During `set_webhook` Viber posts a `webhook` check callback to the URL and fails the call
//! unless it gets 200: the ingress answers it once the channel is in its config view (a
//! channel the ingress does not know yet answers 404, and the attempt is tried again).
//!
//! [`Configurator`] runs in `outbound-viber` (the only service that calls Viber with a bot's
//! token): whenever a Viber channel appears, is enabled or changes in the config view, it
//! reads the bot's account and, unless its webhook is already
//! `<PATCHBAY_PUBLIC_URL>/webhooks/viber/<channel id>`, sets it (with every event type
//! Patchbay handles: [`EVENT_TYPES`]; `message` events cannot be filtered out) and reads it
//! back. When a channel is disabled or deleted (it leaves the view), it removes the webhook
//! (`set_webhook` with `"url": ""`) with the credentials it opened before, so Viber stops
//! posting; if a replica starts after that, it never knew the channel and leaves it.
//!
//! Failures Viber may get over (no answer, HTTP 429 or 5xx, a failed check callback, a
//! read-back that differs) are tried again after 1 s, 2 s, 4 s, … up to 5 minutes; refusals
//! (a wrong token) are logged and tried again only when the channel changes. Every replica
//! does this; the read before the write makes the others' attempts a single call. The
//! outcome is logged and counted in `patchbay_viber_webhook_total{outcome}` (`set`,
//! `unchanged`, `removed`, `retry`, `refused`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patchbay_bus::{ConfigView, SetupLog};
use patchbay_config::MasterKey;
use patchbay_contract::{ChannelRecord, Platform, SetupState};
use patchbay_platform::SendError;
use patchbay_platform::ingress::open_credentials;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::ViberCredentials;
use crate::outbound::{ACCOUNT_INFO_PATH, SET_WEBHOOK_PATH, call};

/// The callbacks Patchbay asks for (`message` always comes).
pub const EVENT_TYPES: [&str; 6] = [
    "delivered",
    "seen",
    "failed",
    "subscribed",
    "unsubscribed",
    "conversation_started",
];

pub use patchbay_platform::setup::{MAX_BACKOFF, POLL, backoff};

/// The webhook URL of `channel_id`: `public_url` and the channel's webhook path.
pub fn webhook_url(public_url: &str, channel_id: &str) -> String {
    patchbay_platform::setup::webhook_url(public_url, &crate::SPEC, channel_id)
}

/// The body of `set_webhook` for `url` (`""` removes the webhook).
pub fn body(url: &str) -> Value {
    if url.is_empty() {
        return json!({ "url": "" });
    }
    json!({"url": url, "event_types": EVENT_TYPES, "send_name": true, "send_photo": true})
}

/// The webhook the account has (`get_account_info`), `""` when none.
pub async fn read(
    http: &reqwest::Client,
    base_url: &str,
    creds: &ViberCredentials,
) -> Result<String, SendError> {
    let info = call(http, base_url, creds, ACCOUNT_INFO_PATH, &json!({})).await?;
    Ok(info
        .get("webhook")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

/// `set_webhook` with `url` (`""` removes it): Viber's answer.
pub async fn write(
    http: &reqwest::Client,
    base_url: &str,
    creds: &ViberCredentials,
    url: &str,
) -> Result<Value, SendError> {
    match call(http, base_url, creds, SET_WEBHOOK_PATH, &body(url)).await {
        // The check callback failed (Viber names the URL): the ingress may not know the
        // channel yet. Tried again.
        Err(SendError::Permanent(d)) if d.platform_code == Some(1) => Err(SendError::Retryable {
            reason: d.message,
            after: None,
        }),
        other => other,
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The account had the webhook already.
    Unchanged,
    /// It was set (and read back).
    Set,
}

/// Reads the account's webhook and, unless it is `url`, sets it and reads it back. A
/// read-back without it is a retryable failure.
pub async fn ensure(
    http: &reqwest::Client,
    base_url: &str,
    creds: &ViberCredentials,
    url: &str,
) -> Result<Outcome, SendError> {
    if read(http, base_url, creds).await? == url {
        return Ok(Outcome::Unchanged);
    }
    write(http, base_url, creds, url).await?;
    let back = read(http, base_url, creds).await?;
    if back == url {
        Ok(Outcome::Set)
    } else {
        Err(SendError::Retryable {
            reason: format!("Viber's webhook read back is {back:?}, not the one set"),
            after: None,
        })
    }
}

/// One channel's state: the version configured (or being configured), its opened credentials
/// and API (to remove the webhook once the channel is gone), and when to try next.
struct State {
    updated_at: DateTime<Utc>,
    creds: Option<(ViberCredentials, String)>,
    /// The channel left the view: its webhook is being removed.
    gone: bool,
    attempt: u32,
    due: Option<Instant>,
}

/// Keeps every enabled Viber channel's webhook set at Viber, and removes it when a channel
/// goes.
pub struct Configurator {
    view: ConfigView,
    log: SetupLog,
    key: MasterKey,
    http: reqwest::Client,
    default_base_url: String,
    public_url: String,
}

impl std::fmt::Debug for Configurator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configurator")
            .field("default_base_url", &self.default_base_url)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

fn counted(outcome: &'static str) {
    metrics::counter!("patchbay_viber_webhook_total", "outcome" => outcome).increment(1);
}

impl Configurator {
    /// Configures the channels `view` holds, with credentials opened by `key`, calling Viber
    /// with `timeout` at the channel's `api_base_url` or `default_base_url`, webhooks under
    /// `public_url`; each outcome is recorded in `log`.
    pub fn new(
        view: ConfigView,
        log: SetupLog,
        key: MasterKey,
        timeout: Duration,
        default_base_url: &str,
        public_url: &str,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            view,
            log,
            key,
            http: patchbay_platform::http::client_builder(timeout).build()?,
            default_base_url: default_base_url.trim_end_matches('/').to_owned(),
            public_url: public_url.to_owned(),
        })
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), std::convert::Infallible> {
        let mut states: HashMap<String, State> = HashMap::new();
        let mut every = tokio::time::interval(POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return Ok(()),
            }
            let channels = self.view.channels(Platform::Viber);
            let now = Instant::now();
            for (id, state) in &mut states {
                if !state.gone && !channels.iter().any(|c| &c.id == id) {
                    state.gone = true;
                    state.attempt = 0;
                    state.due = state.creds.as_ref().map(|_| now);
                }
            }
            let mut due: Vec<(String, Option<std::sync::Arc<ChannelRecord>>)> = Vec::new();
            for c in channels {
                let state = states.entry(c.id.clone()).or_insert(State {
                    updated_at: c.updated_at,
                    creds: None,
                    gone: false,
                    attempt: 0,
                    due: Some(now),
                });
                if state.gone || state.updated_at != c.updated_at {
                    *state = State {
                        updated_at: c.updated_at,
                        creds: state.creds.take(),
                        gone: false,
                        attempt: 0,
                        due: Some(now),
                    };
                }
                if state.due.is_some_and(|d| d <= now) {
                    due.push((c.id.clone(), Some(c)));
                }
            }
            for (id, state) in &states {
                if state.gone && state.due.is_some_and(|d| d <= now) {
                    due.push((id.clone(), None));
                }
            }
            let attempts = due.iter().map(|(id, channel)| {
                let state = states.get(id);
                self.attempt(id, channel.as_deref(), state.and_then(|s| s.creds.clone()))
            });
            let results = tokio::select! {
                r = futures::future::join_all(attempts) => r,
                () = shutdown.cancelled() => return Ok(()),
            };
            for ((id, channel), (result, creds)) in due.iter().zip(results) {
                let Some(state) = states.get_mut(id) else {
                    continue;
                };
                self.record(id, channel.is_some(), &result, state.attempt + 1)
                    .await;
                if creds.is_some() {
                    state.creds = creds;
                }
                state.due = match result {
                    Ok(()) => None,
                    Err(SendError::Retryable { after, .. }) => {
                        let wait = after.unwrap_or_default().max(backoff(state.attempt));
                        state.attempt = state.attempt.saturating_add(1);
                        Some(Instant::now() + wait)
                    }
                    Err(SendError::Permanent(_)) => None,
                };
            }
            states.retain(|_, s| !(s.gone && s.due.is_none()));
        }
    }

    /// Records the outcome of an attempt in the setup bucket, where the admin API shows it
    /// with the channel.
    async fn record(&self, id: &str, set: bool, result: &Result<(), SendError>, attempts: u32) {
        let webhook = if set {
            webhook_url(&self.public_url, id)
        } else {
            String::new()
        };
        let (state, detail, config) = match result {
            Ok(()) if set => (
                SetupState::Configured,
                "webhook set at Viber (read back)".to_owned(),
                Some(serde_json::json!({ "webhook": webhook })),
            ),
            Ok(()) => (
                SetupState::Configured,
                "webhook removed at Viber (the channel is disabled)".to_owned(),
                Some(serde_json::json!({ "webhook": "" })),
            ),
            Err(e @ SendError::Retryable { .. }) => (SetupState::Retrying, e.to_string(), None),
            Err(SendError::Permanent(e)) => (SetupState::Refused, e.message.clone(), None),
        };
        self.log.record(id, state, detail, config, attempts).await;
    }

    /// Sets (`channel` present) or removes (gone, with the credentials opened before) one
    /// channel's webhook; returns the outcome and the credentials opened.
    async fn attempt(
        &self,
        id: &str,
        channel: Option<&ChannelRecord>,
        known: Option<(ViberCredentials, String)>,
    ) -> (Result<(), SendError>, Option<(ViberCredentials, String)>) {
        let Some(channel) = channel else {
            let Some((creds, base)) = known else {
                return (Ok(()), None);
            };
            return (self.remove(id, &creds, &base).await, None);
        };
        let creds: ViberCredentials = match open_credentials(&self.key, channel) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(channel_id = %id, error = %e, "cannot open Viber credentials");
                counted("refused");
                return (
                    Err(SendError::permanent("channel_misconfigured", e, None)),
                    None,
                );
            }
        };
        let base = channel
            .api_base_url
            .clone()
            .unwrap_or_else(|| self.default_base_url.clone());
        let result = self.configure(id, &creds, &base).await;
        (result, Some((creds, base)))
    }

    async fn configure(
        &self,
        id: &str,
        creds: &ViberCredentials,
        base: &str,
    ) -> Result<(), SendError> {
        let webhook = webhook_url(&self.public_url, id);
        match ensure(&self.http, base, creds, &webhook).await {
            Ok(Outcome::Unchanged) => {
                counted("unchanged");
                tracing::info!(channel_id = %id, %webhook, "Viber webhook already set");
                Ok(())
            }
            Ok(Outcome::Set) => {
                counted("set");
                tracing::info!(channel_id = %id, %webhook, "Viber webhook set (read back)");
                Ok(())
            }
            Err(e @ SendError::Retryable { .. }) => {
                counted("retry");
                tracing::warn!(channel_id = %id, error = %e,
                    "could not set the Viber webhook; trying again");
                Err(e)
            }
            Err(e) => {
                counted("refused");
                tracing::error!(channel_id = %id, error = %e,
                    "Viber refused the webhook; fix the channel's credentials");
                Err(e)
            }
        }
    }

    async fn remove(
        &self,
        id: &str,
        creds: &ViberCredentials,
        base: &str,
    ) -> Result<(), SendError> {
        match write(&self.http, base, creds, "").await {
            Ok(_) => {
                counted("removed");
                tracing::info!(channel_id = %id, "Viber webhook removed (channel disabled or deleted)");
                Ok(())
            }
            Err(e @ SendError::Retryable { .. }) => {
                counted("retry");
                tracing::warn!(channel_id = %id, error = %e,
                    "could not remove the Viber webhook; trying again");
                Err(e)
            }
            Err(e) => {
                counted("refused");
                tracing::error!(channel_id = %id, error = %e, "Viber refused to remove the webhook");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use patchbay_testkit::viber::{Failure, FakeViber};
    use std::sync::{Arc, Mutex};

    fn creds() -> ViberCredentials {
        ViberCredentials {
            auth_token: fx::AUTH_TOKEN.into(),
            sender_name: None,
            sender_avatar: None,
        }
    }

    /// A webhook endpoint that answers `status` and records the signed bodies it got.
    async fn endpoint(status: u16) -> (String, Arc<Mutex<Vec<Value>>>) {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let signed = crate::inbound::verify_signature(fx::AUTH_TOKEN, &headers, &body);
                    if signed.is_ok() {
                        seen.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                    }
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/webhooks/viber/ch_1",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, got)
    }

    #[test]
    fn the_body_names_the_url_and_events_and_empty_removes() {
        assert_eq!(
            webhook_url("https://pb.example/", "ch_1"),
            "https://pb.example/webhooks/viber/ch_1"
        );
        assert_eq!(
            body("https://pb.example/webhooks/viber/ch_1"),
            json!({"url": "https://pb.example/webhooks/viber/ch_1",
                   "event_types": ["delivered", "seen", "failed", "subscribed", "unsubscribed",
                                   "conversation_started"],
                   "send_name": true, "send_photo": true})
        );
        assert_eq!(body(""), json!({"url": ""}));
        let waits: Vec<u64> = (0..12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[tokio::test]
    async fn ensure_sets_after_the_check_callback_reads_back_and_then_leaves_it_alone() {
        let viber = FakeViber::start().await;
        viber.add_bot(fx::AUTH_TOKEN, "Shop");
        let (hook, got) = endpoint(200).await;
        let http = patchbay_platform::http::client_builder(Duration::from_secs(5))
            .build()
            .unwrap();
        let base = viber.base_url();
        assert_eq!(
            ensure(&http, &base, &creds(), &hook).await.unwrap(),
            Outcome::Set
        );
        assert_eq!(
            viber.webhook(fx::AUTH_TOKEN).as_deref(),
            Some(hook.as_str())
        );
        let checks = got.lock().unwrap().clone();
        assert_eq!(checks.len(), 1, "one signed check callback");
        assert_eq!(checks[0]["event"], "webhook");
        let paths: Vec<String> = viber.calls().into_iter().map(|c| c.path).collect();
        assert_eq!(
            paths,
            [ACCOUNT_INFO_PATH, SET_WEBHOOK_PATH, ACCOUNT_INFO_PATH]
        );
        assert_eq!(viber.calls_to(SET_WEBHOOK_PATH)[0].body, body(&hook));
        assert_eq!(
            ensure(&http, &base, &creds(), &hook).await.unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(viber.calls().len(), 4, "one read only");

        write(&http, &base, &creds(), "").await.unwrap();
        assert_eq!(viber.webhook(fx::AUTH_TOKEN).as_deref(), Some(""));

        // An endpoint that does not answer 200: Viber refuses (status 1), tried again.
        let (refusing, _) = endpoint(404).await;
        let e = ensure(&http, &base, &creds(), &refusing).await.unwrap_err();
        assert!(matches!(e, SendError::Retryable { .. }), "{e:?}");
        viber.fail_next(SET_WEBHOOK_PATH, [Failure::Http(503)]);
        let e = ensure(&http, &base, &creds(), &hook).await.unwrap_err();
        assert!(matches!(e, SendError::Retryable { .. }), "{e:?}");
        let wrong = ViberCredentials {
            auth_token: "wrong".into(),
            ..creds()
        };
        let Err(SendError::Permanent(d)) = ensure(&http, &base, &wrong, &hook).await else {
            panic!("refusal expected");
        };
        assert_eq!(
            (d.code.as_str(), d.platform_code),
            ("unauthorized", Some(2))
        );
    }
}
