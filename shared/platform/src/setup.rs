//! Channels Patchbay sets up at their platform through the platform's API (Kik's
//! `/v1/config`, Viber's `set_webhook`, LINE's webhook endpoint): the [`ChannelSetup`] each such
//! platform implements, and the [`Configurator`] that runs it for every channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patchbay_bus::{ConfigView, SetupLog};
use patchbay_config::MasterKey;
use patchbay_contract::{ChannelRecord, SetupState};
use tokio_util::sync::CancellationToken;

use crate::SendError;
use crate::ingress::open_credentials;
use crate::spec::PlatformSpec;

/// How often the config view is looked at for new or changed channels.
pub const POLL: Duration = Duration::from_secs(1);
/// The first wait after a failure; doubled each time up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait before attempt `attempt + 1` (1 s, 2 s, 4 s, …, at most 5 minutes).
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX_BACKOFF)
}

/// The webhook URL of `channel_id` on `spec`'s platform: `public_url` and the channel's
/// webhook path.
pub fn webhook_url(public_url: &str, spec: &PlatformSpec, channel_id: &str) -> String {
    format!(
        "{}{}",
        public_url.trim_end_matches('/'),
        (spec.webhook_path)(channel_id)
    )
}

/// What setting a channel up at its platform found.
#[derive(Debug, Clone, PartialEq)]
pub struct Configured {
    /// The configuration was written (and read back); `false`: the platform had it already.
    pub changed: bool,
    /// The configuration the platform read back, shown as the channel's
    /// `setup.platform_config`.
    pub config: serde_json::Value,
}

/// A platform whose channels Patchbay sets up through the platform's API (Kik's
/// configuration, Viber's and LINE's webhook), run by [`Configurator`] in its sender service
/// (the only service that calls the platform with the channel's credentials).
pub trait ChannelSetup: Send + Sync + 'static {
    /// The platform (its webhook path and name).
    const SPEC: &'static PlatformSpec;
    /// Its name in logs and in the recorded details ("Kik").
    const NAME: &'static str;
    /// Whether a channel that is disabled or deleted is undone at the platform
    /// ([`ChannelSetup::remove`]).
    const REMOVES: bool = false;
    /// The channel's credentials.
    type Credentials: serde::de::DeserializeOwned + Clone + Send + Sync + 'static;

    /// Sets the channel up to post to `webhook`: reads the platform's configuration first (so
    /// the replicas doing the same make one write) and, when it differs, writes it and reads it
    /// back (a read-back that differs is a retryable failure).
    fn ensure(
        &self,
        http: &reqwest::Client,
        base_url: &str,
        creds: &Self::Credentials,
        webhook: &str,
    ) -> impl std::future::Future<Output = Result<Configured, SendError>> + Send;

    /// Undoes the setup of a channel that was disabled or deleted (with [`ChannelSetup::REMOVES`]).
    fn remove(
        &self,
        http: &reqwest::Client,
        base_url: &str,
        creds: &Self::Credentials,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        let _ = (http, base_url, creds);
        async { Ok(()) }
    }
}

/// One channel's state: the version configured (or being configured), its opened credentials
/// and API (to undo the setup once the channel is gone), and when to try next.
struct State<C> {
    updated_at: DateTime<Utc>,
    creds: Option<(C, String)>,
    /// The channel left the view: its setup is being undone.
    gone: bool,
    attempt: u32,
    due: Option<Instant>,
}

/// Keeps every enabled channel of `S`'s platform set up at the platform, and undoes it when a
/// channel goes (when the platform needs that).
///
/// Whenever a channel appears, is enabled or changes in the config view, it runs
/// [`ChannelSetup::ensure`] with `<PATCHBAY_PUBLIC_URL>` and the channel's webhook path.
/// Failures the platform may get over (no answer, 429, 5xx, a read-back that differs) are tried
/// again after 1 s, 2 s, 4 s, … up to 5 minutes; refusals (wrong credentials) are logged and
/// tried again only when the channel changes. Every replica does this; the read before the
/// write makes the others' attempts a single read. The outcome is logged, counted in
/// `patchbay_setup_total{platform, outcome}` (`set`, `unchanged`, `removed`, `retry`,
/// `refused`) and recorded in the `<p>_setup` bucket, where the admin API shows it as the
/// channel's `setup`. When a channel is disabled or deleted, [`ChannelSetup::remove`] runs
/// with the credentials opened before; a replica started after that never knew the channel
/// and leaves it.
pub struct Configurator<S: ChannelSetup> {
    setup: S,
    view: ConfigView,
    log: SetupLog,
    key: MasterKey,
    http: reqwest::Client,
    default_base_url: String,
    public_url: String,
}

impl<S: ChannelSetup> std::fmt::Debug for Configurator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configurator")
            .field("platform", &S::SPEC.platform)
            .field("default_base_url", &self.default_base_url)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

fn counted<S: ChannelSetup>(outcome: &'static str) {
    metrics::counter!("patchbay_setup_total", "platform" => S::SPEC.platform.as_str(), "outcome" => outcome)
        .increment(1);
}

impl<S: ChannelSetup> Configurator<S> {
    /// Sets up the channels `view` holds with `setup`, with credentials opened by `key`, calling
    /// the platform with `timeout` at the channel's `api_base_url` or `default_base_url`,
    /// webhooks under `public_url`; each outcome is recorded in `log`.
    pub fn new(
        setup: S,
        view: ConfigView,
        log: SetupLog,
        key: MasterKey,
        timeout: Duration,
        default_base_url: &str,
        public_url: &str,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            setup,
            view,
            log,
            key,
            http: crate::http::client_builder(timeout).build()?,
            default_base_url: default_base_url.trim_end_matches('/').to_owned(),
            public_url: public_url.to_owned(),
        })
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), std::convert::Infallible> {
        let mut states: HashMap<String, State<S::Credentials>> = HashMap::new();
        let mut every = tokio::time::interval(POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return Ok(()),
            }
            let channels = self.view.channels(S::SPEC.platform);
            let now = Instant::now();
            for (id, state) in &mut states {
                if !state.gone && !channels.iter().any(|c| &c.id == id) {
                    state.gone = true;
                    state.attempt = 0;
                    state.due = (S::REMOVES && state.creds.is_some()).then_some(now);
                }
            }
            let mut due: Vec<(String, Option<Arc<ChannelRecord>>)> = Vec::new();
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
                let known = states.get(id).and_then(|s| s.creds.clone());
                self.attempt(id, channel.as_deref(), known)
            });
            let results = tokio::select! {
                r = futures::future::join_all(attempts) => r,
                () = shutdown.cancelled() => return Ok(()),
            };
            for ((id, _), (result, creds)) in due.iter().zip(results) {
                let Some(state) = states.get_mut(id) else {
                    continue;
                };
                self.record(id, &result, state.attempt + 1).await;
                if creds.is_some() {
                    state.creds = creds;
                }
                state.due = match result {
                    Ok(_) => None,
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
    async fn record(&self, id: &str, result: &Result<Outcome, SendError>, attempts: u32) {
        let name = S::NAME;
        let (state, detail, config) = match result {
            Ok(Outcome::Set(c)) => (
                SetupState::Configured,
                format!("set at {name} (read back)"),
                Some(c.clone()),
            ),
            Ok(Outcome::Unchanged(c)) => (
                SetupState::Configured,
                format!("{name} had it already (read)"),
                Some(c.clone()),
            ),
            Ok(Outcome::Removed) => (
                SetupState::Configured,
                format!("removed at {name} (the channel is disabled)"),
                Some(serde_json::json!({ "webhook": "" })),
            ),
            Err(e @ SendError::Retryable { .. }) => (SetupState::Retrying, e.to_string(), None),
            Err(SendError::Permanent(e)) => (SetupState::Refused, e.message.clone(), None),
        };
        self.log.record(id, state, detail, config, attempts).await;
    }

    /// Sets up (`channel` present) or undoes (gone, with the credentials opened before) one
    /// channel; returns the outcome and the credentials opened.
    async fn attempt(
        &self,
        id: &str,
        channel: Option<&ChannelRecord>,
        known: Option<(S::Credentials, String)>,
    ) -> (Result<Outcome, SendError>, Option<(S::Credentials, String)>) {
        let name = S::NAME;
        let Some(channel) = channel else {
            let Some((creds, base)) = known else {
                return (Ok(Outcome::Removed), None);
            };
            let result = self.setup.remove(&self.http, &base, &creds).await;
            match &result {
                Ok(()) => {
                    counted::<S>("removed");
                    tracing::info!(channel_id = %id, "{name} setup removed (channel disabled or deleted)");
                }
                Err(e @ SendError::Retryable { .. }) => {
                    counted::<S>("retry");
                    tracing::warn!(channel_id = %id, error = %e, "could not remove the {name} setup; trying again");
                }
                Err(e) => {
                    counted::<S>("refused");
                    tracing::error!(channel_id = %id, error = %e, "{name} refused to remove the setup");
                }
            }
            return (result.map(|()| Outcome::Removed), None);
        };
        let creds: S::Credentials = match open_credentials(&self.key, channel) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(channel_id = %id, error = %e, "cannot open {name} credentials");
                counted::<S>("refused");
                return (
                    Err(SendError::permanent(
                        "channel_misconfigured",
                        format!("the channel's credentials cannot be opened: {e}"),
                        None,
                    )),
                    None,
                );
            }
        };
        let base = channel
            .api_base_url
            .clone()
            .unwrap_or_else(|| self.default_base_url.clone());
        let webhook = webhook_url(&self.public_url, S::SPEC, id);
        let result = match self.setup.ensure(&self.http, &base, &creds, &webhook).await {
            Ok(Configured {
                changed: false,
                config,
            }) => {
                counted::<S>("unchanged");
                tracing::info!(channel_id = %id, %webhook, %config, "{name} already set up");
                Ok(Outcome::Unchanged(config))
            }
            Ok(Configured { config, .. }) => {
                counted::<S>("set");
                tracing::info!(channel_id = %id, %webhook, %config, "{name} set up (read back)");
                Ok(Outcome::Set(config))
            }
            Err(e @ SendError::Retryable { .. }) => {
                counted::<S>("retry");
                tracing::warn!(channel_id = %id, error = %e, "could not set {name} up; trying again");
                Err(e)
            }
            Err(e) => {
                counted::<S>("refused");
                tracing::error!(channel_id = %id, error = %e,
                    "{name} refused the setup; fix the channel's credentials");
                Err(e)
            }
        };
        (result, Some((creds, base)))
    }
}

/// What one attempt did.
enum Outcome {
    Unchanged(serde_json::Value),
    Set(serde_json::Value),
    Removed,
}
