//! The bot's configuration at Kik (`reference/platforms.md` §5.1): `POST <base>/v1/config`
//! `{"webhook": <url>, "features": {...}, "staticKeyboard"?: {...}}` tells Kik where to post
//! the bot's messages and what to send; `GET <base>/v1/config` reads it back. Kik has no
//! webhook handshake: this call is what connects a bot.
//!
//! [`Configurator`] runs in `outbound-kik` (the only service that opens Kik credentials to call
//! Kik): whenever a Kik channel appears, is enabled or changes in the config view, it reads the
//! bot's configuration and, when the webhook or a feature differs from what Patchbay needs,
//! sets it and reads it back. The webhook is `<PATCHBAY_PUBLIC_URL>/webhooks/kik/<channel id>`;
//! the features:
//!
//! | feature | value | why |
//! |---|---|---|
//! | `receiveReadReceipts` | `true` | they become `message.read` |
//! | `receiveDeliveryReceipts` | `true` | they become `message.delivered` |
//! | `receiveIsTyping` | `false` | Patchbay ignores typing |
//! | `manuallySendReadReceipts` | `false` | Kik marks the user's messages read itself |
//!
//! A static keyboard the bot already has is kept. Failures Kik may get over (no answer, 429,
//! 5xx, a read-back that differs) are tried again after 1 s, 2 s, 4 s, … up to 5 minutes;
//! refusals (a wrong API key) are logged and tried again only when the channel changes. Every
//! replica does this; the read before the write makes the others' attempts a single `GET`.
//! The outcome is logged (with the configuration Kik read back), counted in
//! `patchbay_kik_config_total{outcome}` (`set`, `unchanged`, `retry`, `refused`) and recorded
//! in the `<p>_setup` bucket, where `GET /admin/v1/bots/{bot_id}/channels/{channel_id}` shows
//! it as the channel's `setup` (`configured` with Kik's read-back, `retrying`, `refused`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patchbay_bus::{ConfigView, SetupLog};
use patchbay_config::MasterKey;
use patchbay_contract::{ChannelRecord, Platform, SetupState};
use patchbay_platform::SendError;
use patchbay_platform::ingress::open_credentials;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::KikCredentials;
use crate::outbound::{api_url, call};

/// The configuration endpoint.
pub const CONFIG_PATH: &str = "/v1/config";

/// Kik's feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// Kik posts `read-receipt` messages.
    pub receive_read_receipts: bool,
    /// Kik posts `delivery-receipt` messages.
    pub receive_delivery_receipts: bool,
    /// Kik posts `is-typing` messages.
    pub receive_is_typing: bool,
    /// The bot sends read receipts itself (else Kik does).
    pub manually_send_read_receipts: bool,
}

/// The features Patchbay sets.
pub const FEATURES: Features = Features {
    receive_read_receipts: true,
    receive_delivery_receipts: true,
    receive_is_typing: false,
    manually_send_read_receipts: false,
};

pub use patchbay_platform::setup::{MAX_BACKOFF, POLL, backoff};

/// The webhook URL of `channel_id`: `public_url` and the channel's webhook path.
pub fn webhook_url(public_url: &str, channel_id: &str) -> String {
    patchbay_platform::setup::webhook_url(public_url, &crate::SPEC, channel_id)
}

/// The body of `POST /v1/config` for `webhook`, keeping `static_keyboard` when there is one.
pub fn body(webhook: &str, static_keyboard: Option<&Value>) -> Value {
    let mut b = json!({"webhook": webhook, "features": FEATURES});
    if let Some(k) = static_keyboard.filter(|k| !k.is_null()) {
        b["staticKeyboard"] = k.clone();
    }
    b
}

/// Whether Kik's configuration `found` has `webhook` and every feature Patchbay sets.
pub fn is_set(found: &Value, webhook: &str) -> bool {
    let Ok(Value::Object(want)) = serde_json::to_value(FEATURES) else {
        return false;
    };
    found.get("webhook").and_then(Value::as_str) == Some(webhook)
        && want
            .iter()
            .all(|(k, v)| found.pointer(&format!("/features/{k}")) == Some(v))
}

fn parse(body: &[u8], what: &str) -> Result<Value, SendError> {
    serde_json::from_slice(body).map_err(|_| {
        SendError::permanent(
            "platform_error",
            format!("Kik's answer ({what}) is not JSON"),
            None,
        )
    })
}

/// `GET /v1/config`: the bot's configuration as Kik has it.
pub async fn read(
    http: &reqwest::Client,
    base_url: &str,
    creds: &KikCredentials,
) -> Result<Value, SendError> {
    let url = api_url(base_url, CONFIG_PATH)?;
    parse(&call(http.get(url), creds, "config").await?, "config")
}

/// `POST /v1/config` with `body`: the configuration as Kik confirms it.
pub async fn write(
    http: &reqwest::Client,
    base_url: &str,
    creds: &KikCredentials,
    body: &Value,
) -> Result<Value, SendError> {
    let url = api_url(base_url, CONFIG_PATH)?;
    parse(
        &call(http.post(url).json(body), creds, "config").await?,
        "config",
    )
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Kik had the configuration already (as read).
    Unchanged(Value),
    /// It was set; the configuration as read back.
    Set(Value),
}

/// Reads the bot's configuration and, unless it already has `webhook` and [`FEATURES`], sets
/// them (keeping its static keyboard) and reads it back. A read-back without them is a
/// retryable failure.
pub async fn ensure(
    http: &reqwest::Client,
    base_url: &str,
    creds: &KikCredentials,
    webhook: &str,
) -> Result<Outcome, SendError> {
    let found = match read(http, base_url, creds).await {
        Ok(found) => Some(found),
        // Nothing to keep, but the write may still work (a bot never configured).
        Err(SendError::Permanent(e)) if e.code != "unauthorized" => None,
        Err(e) => return Err(e),
    };
    if let Some(found) = &found
        && is_set(found, webhook)
    {
        return Ok(Outcome::Unchanged(found.clone()));
    }
    let keyboard = found.as_ref().and_then(|f| f.get("staticKeyboard"));
    write(http, base_url, creds, &body(webhook, keyboard)).await?;
    let back = read(http, base_url, creds).await?;
    if is_set(&back, webhook) {
        Ok(Outcome::Set(back))
    } else {
        Err(SendError::Retryable {
            reason: format!("Kik's configuration read back is not the one set: {back}"),
            after: None,
        })
    }
}

/// One channel's state: the version configured (or being configured), and when to try next.
#[derive(Debug)]
struct State {
    updated_at: DateTime<Utc>,
    attempt: u32,
    due: Option<Instant>,
}

/// Keeps every enabled Kik channel's bot configured at Kik.
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
    metrics::counter!("patchbay_kik_config_total", "outcome" => outcome).increment(1);
}

impl Configurator {
    /// Configures the channels `view` holds, with credentials opened by `key`, calling Kik with
    /// `timeout` at the channel's `api_base_url` or `default_base_url`, webhooks under
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
            let channels = self.view.channels(Platform::Kik);
            states.retain(|id, _| channels.iter().any(|c| &c.id == id));
            let now = Instant::now();
            let mut due = Vec::new();
            for c in channels {
                let state = states.entry(c.id.clone()).or_insert(State {
                    updated_at: c.updated_at,
                    attempt: 0,
                    due: Some(now),
                });
                if state.updated_at != c.updated_at {
                    *state = State {
                        updated_at: c.updated_at,
                        attempt: 0,
                        due: Some(now),
                    };
                }
                if state.due.is_some_and(|d| d <= now) {
                    due.push(c);
                }
            }
            let attempts = due.iter().map(|c| {
                let attempt = states.get(&c.id).map_or(0, |s| s.attempt);
                self.configure(c, attempt + 1)
            });
            let results = tokio::select! {
                r = futures::future::join_all(attempts) => r,
                () = shutdown.cancelled() => return Ok(()),
            };
            for (c, result) in due.iter().zip(results) {
                let Some(state) = states.get_mut(&c.id) else {
                    continue;
                };
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
        }
    }

    /// Configures one channel's bot (the `attempts`-th time since it changed), logging and
    /// recording the outcome.
    async fn configure(&self, channel: &ChannelRecord, attempts: u32) -> Result<(), SendError> {
        let id = channel.id.as_str();
        let creds: KikCredentials = match open_credentials(&self.key, channel) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(channel_id = %channel.id, error = %e, "cannot open Kik credentials");
                counted("refused");
                let detail = format!("the channel's credentials cannot be opened: {e}");
                self.log
                    .record(id, SetupState::Refused, detail, None, attempts)
                    .await;
                return Err(SendError::permanent("channel_misconfigured", e, None));
            }
        };
        let base = channel
            .api_base_url
            .as_deref()
            .unwrap_or(&self.default_base_url);
        let webhook = webhook_url(&self.public_url, &channel.id);
        match ensure(&self.http, base, &creds, &webhook).await {
            Ok(Outcome::Unchanged(found)) => {
                counted("unchanged");
                tracing::info!(channel_id = %channel.id, bot = %creds.username, config = %found,
                    "Kik bot already configured");
                let detail = "Kik already had the webhook and features (read)";
                self.log
                    .record(id, SetupState::Configured, detail, Some(found), attempts)
                    .await;
                Ok(())
            }
            Ok(Outcome::Set(back)) => {
                counted("set");
                tracing::info!(channel_id = %channel.id, bot = %creds.username, config = %back,
                    "Kik bot configured (read back)");
                let detail = "webhook and features set (read back)";
                self.log
                    .record(id, SetupState::Configured, detail, Some(back), attempts)
                    .await;
                Ok(())
            }
            Err(e @ SendError::Retryable { .. }) => {
                counted("retry");
                tracing::warn!(channel_id = %channel.id, bot = %creds.username, error = %e,
                    "could not configure the Kik bot; trying again");
                self.log
                    .record(id, SetupState::Retrying, e.to_string(), None, attempts)
                    .await;
                Err(e)
            }
            Err(e) => {
                counted("refused");
                tracing::error!(channel_id = %channel.id, bot = %creds.username, error = %e,
                    "Kik refused the bot's configuration; fix the channel's credentials");
                self.log
                    .record(id, SetupState::Refused, e.to_string(), None, attempts)
                    .await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures as fx;
    use patchbay_testkit::kik::{Failure, FakeKik};

    fn creds() -> KikCredentials {
        KikCredentials {
            username: fx::BOT.into(),
            api_key: fx::API_KEY.into(),
        }
    }

    const HOOK: &str = "https://pb.example/webhooks/kik/ch_1";

    #[test]
    fn the_body_names_the_webhook_and_features_and_keeps_a_static_keyboard() {
        assert_eq!(webhook_url("https://pb.example/", "ch_1"), HOOK);
        let features = json!({"receiveReadReceipts": true, "receiveDeliveryReceipts": true,
                              "receiveIsTyping": false, "manuallySendReadReceipts": false});
        assert_eq!(
            body(HOOK, None),
            json!({"webhook": HOOK, "features": features})
        );
        let keyboard =
            json!({"type": "suggested", "responses": [{"type": "text", "body": "Menu"}]});
        assert_eq!(body(HOOK, Some(&keyboard))["staticKeyboard"], keyboard);
        assert!(
            body(HOOK, Some(&Value::Null))
                .get("staticKeyboard")
                .is_none()
        );

        assert!(is_set(&body(HOOK, None), HOOK));
        assert!(!is_set(
            &body(HOOK, None),
            "https://elsewhere/webhooks/kik/ch_1"
        ));
        let mut typing = body(HOOK, None);
        typing["features"]["receiveIsTyping"] = json!(true);
        assert!(!is_set(&typing, HOOK));
        assert!(!is_set(&json!({"webhook": HOOK}), HOOK), "features missing");
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (0..12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn ensure_sets_reads_back_and_then_leaves_it_alone() {
        let kik = FakeKik::start().await;
        kik.add_bot(fx::BOT, fx::API_KEY);
        let http = patchbay_platform::http::client_builder(Duration::from_secs(5))
            .build()
            .unwrap();
        let base = kik.base_url();
        let Outcome::Set(back) = ensure(&http, &base, &creds(), HOOK).await.unwrap() else {
            panic!("set expected");
        };
        assert!(is_set(&back, HOOK), "{back}");
        assert_eq!(kik.config(fx::BOT), Some(back.clone()));
        let calls: Vec<_> = kik
            .calls_to(CONFIG_PATH)
            .into_iter()
            .map(|c| (c.method, c.status))
            .collect();
        assert_eq!(
            calls,
            [
                ("GET".into(), 200),
                ("POST".into(), 200),
                ("GET".into(), 200)
            ]
        );
        assert_eq!(kik.calls_to(CONFIG_PATH)[1].body, body(HOOK, None));

        assert_eq!(
            ensure(&http, &base, &creds(), HOOK).await.unwrap(),
            Outcome::Unchanged(back)
        );
        assert_eq!(kik.calls_to(CONFIG_PATH).len(), 4, "one GET only");

        kik.fail_next(CONFIG_PATH, [Failure::ServerError]);
        let e = ensure(&http, &base, &creds(), "https://new/webhooks/kik/ch_1").await;
        assert!(matches!(e, Err(SendError::Retryable { .. })), "{e:?}");
        let wrong = KikCredentials {
            username: fx::BOT.into(),
            api_key: "wrong".into(),
        };
        let Err(SendError::Permanent(d)) = ensure(&http, &base, &wrong, HOOK).await else {
            panic!("refusal expected");
        };
        assert_eq!(d.code, "unauthorized");
    }
}
