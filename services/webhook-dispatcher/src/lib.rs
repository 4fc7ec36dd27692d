//! `webhook-dispatcher`: delivers events from `<p>.dispatch.>` to each bot's callback URL,
//! signed per Standard Webhooks (`webhook-id` = event id, stable across retries), and owns the
//! attempt log, the delivered-events record and the outbox (schema `dispatcher`).
//!
//! * a 2xx is a delivery; its body may carry an inline reply (`{"messages": [...]}` or a bare
//!   array), stored as a send command on `<p>.send.<bot>` with an id derived from the event, so
//!   a repeated delivery cannot send the reply twice; a delivered event is never posted again;
//! * anything else (non-2xx, redirect, timeout, connection error) is a failed attempt. The
//!   event is **parked** in the outbox (PostgreSQL) and acknowledged to JetStream, so a failing
//!   tenant never holds messages in the consumer all tenants share. Later events of the same
//!   conversation queue behind it. The scheduler retries the head of each conversation on
//!   `PATCHBAY_WEBHOOK_RETRY_SCHEDULE` (±20 % jitter; `Retry-After` honoured within one to two
//!   times the scheduled delay); after the last attempt the event is dead-lettered and the next
//!   one of the conversation goes;
//! * a failing bot's endpoint opens a short circuit breaker, and each bot may have only a few
//!   attempts in flight per process (more while half the handler slots are free): new events
//!   beyond that are parked at once, so a slow tenant cannot occupy the handlers other tenants
//!   need;
//! * every attempt is logged: status, duration, the first bytes of the response, the error;
//! * callbacks never go to loopback or private addresses unless the operator allows them.

pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use patchbay_bus::consume::DeadLetter;
use patchbay_bus::rpc::{decode, encode};
use patchbay_bus::{Bus, ConfigView, Delivery, Handler, HandlerError};
use patchbay_config::{MasterKey, RetrySchedule};
use patchbay_contract::subjects::Stream;
use patchbay_contract::{
    BotRecord, DeliveryRef, DeliveryState, DispatchJob, EventType, InlineReply,
    ListDeliveriesRequest, Platform, Recipient, ReplayRequest, Replayed, RpcError, SendCommand,
    SendSource, V1, WebhookFlavour, dispatcher_ops, topology,
};
use patchbay_runtime::db::{batch_error, db_error};
use patchbay_runtime::{BoxError, Deps, Service};
use patchbay_store::batch::GroupCommit;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Embedded migrations of schema `dispatcher`.
pub const MIGRATIONS: &[patchbay_store::EmbeddedMigration] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "outbox", include_str!("../migrations/0002_outbox.sql")),
    (
        3,
        "batch_functions",
        include_str!("../migrations/0003_batch_functions.sql"),
    ),
    (
        4,
        "delivery_written_once",
        include_str!("../migrations/0004_delivery_written_once.sql"),
    ),
    (
        5,
        "replay_budget",
        include_str!("../migrations/0005_replay_budget.sql"),
    ),
];

/// Attempts one bot may always have in flight per process; beyond that, its new events are
/// parked unless fewer than half the handler slots are taken (see [`InFlight`]).
const MAX_IN_FLIGHT_PER_BOT: usize = 4;
/// A handler may wait in place for an in-flight slot of a bot whose attempts take less than
/// this (a moving average), for at most [`SLOT_WAIT`], before its event is parked instead (see
/// [`Dispatcher::wait_for_slot`]).
const FAST_ATTEMPT: Duration = Duration::from_millis(50);
const SLOT_WAIT: Duration = Duration::from_millis(100);
/// Longest a failing endpoint's breaker stays open.
const MAX_BREAKER: Duration = Duration::from_secs(30);
/// Parked conversations the scheduler works on at once.
const SCHEDULER_CONCURRENCY: usize = 16;

struct Dispatcher {
    pool: PgPool,
    bus: Bus,
    view: ConfigView,
    key: MasterKey,
    http: reqwest::Client,
    schedule: RetrySchedule,
    allow_private: bool,
    max_body: usize,
    /// Dead letters one bot may replay a minute (and at most in one call).
    replay_per_minute: u32,
    /// Where BrandChat uploads are served (inline replies may name them by `fileId`).
    public_url: String,
    lease: Duration,
    /// Bots whose endpoint failed recently, and until when to leave them alone.
    breakers: Mutex<HashMap<String, Instant>>,
    /// Attempts in flight.
    in_flight: Mutex<InFlight>,
    /// Set when an event was parked because its bot had its share of attempts in flight; the
    /// next attempt to finish then wakes the scheduler ([`Dispatcher::wake`]) instead of
    /// leaving the event to its next tick.
    parked_for_slots: std::sync::atomic::AtomicBool,
    /// Wakes the scheduler before its tick.
    wake: tokio::sync::Notify,
    /// Wakes the handlers waiting for an in-flight slot when one is released.
    slot_freed: tokio::sync::Notify,
    /// Attempts in flight (all bots) below which a bot may exceed [`MAX_IN_FLIGHT_PER_BOT`]:
    /// half the consumer's handler slots.
    shared_slots: usize,
    /// Bodies of 2xx answers whose follow-up (inline reply, record) has not been stored yet:
    /// a retry after a bus hiccup reuses the answer instead of posting the event again.
    answered: Mutex<HashMap<String, String>>,
    /// Group commit of the hot path's two statements (see [`patchbay_store::batch`]).
    admissions: GroupCommit<store::Admission, (DeliveryState, bool)>,
    attempts: GroupCommit<store::Attempt, ()>,
}

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let key = deps.config.require_master_key()?;
        let pool = deps.database("dispatcher", MIGRATIONS).await?;
        let allow_private = deps.config.allow_private_callbacks;
        let timeout = Duration::from_millis(deps.config.webhook_timeout_ms);
        let http = patchbay_platform::webhook::tenant_client(
            timeout,
            allow_private,
            concat!("Patchbay-Webhooks/", env!("CARGO_PKG_VERSION")),
        )?;
        let schedule = deps.config.webhook_retry_schedule.clone();
        let spec = topology::dispatcher(deps.bus.subjects(), 10);
        let admissions = {
            let pool = pool.clone();
            GroupCommit::start("dispatcher_admit", move |b| {
                let pool = pool.clone();
                async move { store::admit(&pool, b).await }
            })
        };
        let attempts = {
            let pool = pool.clone();
            // History, written after the tenant answered and the inline reply is stored: at
            // low rates it waits for company (`PATCHBAY_RECORD_LINGER_MS`).
            GroupCommit::lingering(
                "dispatcher_attempts",
                Duration::from_millis(deps.config.record_linger_ms),
                move |b| {
                    let pool = pool.clone();
                    async move { store::record_attempt(&pool, b).await }
                },
            )
        };
        let dispatcher = Arc::new(Dispatcher {
            pool,
            admissions,
            attempts,
            bus: deps.bus.clone(),
            view: deps.view.clone(),
            key,
            http,
            schedule,
            allow_private,
            max_body: deps.config.webhook_response_max_bytes,
            replay_per_minute: deps.config.replay_per_minute,
            public_url: deps.config.public_url.clone(),
            lease: timeout * 2 + Duration::from_secs(5),
            breakers: Mutex::default(),
            in_flight: Mutex::default(),
            parked_for_slots: std::sync::atomic::AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            slot_freed: tokio::sync::Notify::new(),
            shared_slots: deps.config.consumer_concurrency / 2,
            answered: Mutex::default(),
        });
        let scheduler = dispatcher.clone().schedule_loop(deps.shutdown.clone());
        let responder = deps
            .bus
            .responder(
                deps.bus.subjects().rpc_all("dispatcher"),
                "webhook-dispatcher".into(),
            )
            .await?;
        let rpc = dispatcher.clone();
        Ok(Service::new("webhook-dispatcher")
            .task(deps.consumer::<DispatchJob, _>(spec, Arc::new(Intake(dispatcher))))
            .task(async move {
                scheduler.await;
                Ok::<(), BoxError>(())
            })
            .task(responder.serve(
                deps.config.consumer_concurrency,
                move |op, body| {
                    let d = rpc.clone();
                    async move { d.answer(&op, body).await }
                },
                deps.shutdown.clone(),
            )))
    })
}

/// Attempts in flight in this process. A bot may always have [`MAX_IN_FLIGHT_PER_BOT`]; more
/// only while fewer than half the handler slots are taken by attempts, so a lone busy tenant
/// is not parked (and delayed by the scheduler) while the handlers sit idle, yet slow tenants
/// together hold no more than half of them beyond their own few.
#[derive(Default)]
struct InFlight {
    per_bot: HashMap<String, usize>,
    total: usize,
    /// Handlers waiting for a slot, per bot.
    waiting: HashMap<String, usize>,
    /// How long each bot's attempts take: an exponentially weighted moving average.
    attempt_time: HashMap<String, Duration>,
}

/// The result of one attempt.
struct Outcome {
    status: Option<u16>,
    body: String,
    error: Option<String>,
    retry_after: Option<Duration>,
}

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let unit = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(0.8 + 0.4 * unit)
}

impl Dispatcher {
    /// The delay before attempt `attempts + 1`, honouring `Retry-After` within 1–2× of it.
    fn next_delay(&self, attempts: u64, retry_after: Option<Duration>) -> Duration {
        let idx = usize::try_from(attempts).unwrap_or(usize::MAX);
        let scheduled = self
            .schedule
            .0
            .get(idx)
            .or(self.schedule.0.last())
            .copied()
            .unwrap_or(Duration::from_secs(5));
        match retry_after {
            // The tenant asked for more time: never sooner than it asked (within the bound),
            // jitter only adding to it.
            Some(ra) if ra > scheduled => {
                let asked = ra.min(scheduled * 2);
                jitter(asked).max(asked)
            }
            _ => jitter(scheduled).max(Duration::from_millis(100)),
        }
    }

    /// The newest working API key of a `brandchat` bot: BrandChat signs with the key itself.
    fn brandchat_key(&self, bot: &BotRecord) -> Result<String, HandlerError> {
        let now = chrono::Utc::now();
        let sealed = bot
            .brandchat_keys
            .iter()
            .rev()
            .find(|k| k.expires_at.is_none_or(|t| t > now))
            .ok_or_else(|| {
                HandlerError::retry(format!(
                    "bot {} has no API key readable for BrandChat signatures; rotate its key",
                    bot.id
                ))
            })?;
        let key = self
            .key
            .open(
                &patchbay_contract::brandchat::key_owner(&bot.id),
                &sealed.sealed,
            )
            .map_err(|e| HandlerError::retry(format!("bot {}: {e}", bot.id)))?;
        Ok(String::from_utf8_lossy(&key).into_owned())
    }

    /// The `webhook-signature` of a partner app's delivery: its secret, sealed for the app.
    fn app_signature(
        &self,
        app: &patchbay_contract::partners::InstallationRef,
        id: &str,
        ts: i64,
        body: &[u8],
    ) -> Result<String, HandlerError> {
        let secret = self
            .key
            .open(&app.app_id, &app.secret.sealed)
            .map_err(|e| HandlerError::retry(format!("app {}: {e}", app.app_id)))?;
        patchbay_platform::webhook::sign(&String::from_utf8_lossy(&secret), id, ts, body)
            .map_err(HandlerError::reject)
    }

    /// The bot's newest signing secret, as the tenant holds it (one signature only: Web1on1's
    /// `X-Hub-Signature` carries one).
    fn newest_secret(&self, bot: &BotRecord) -> Result<String, HandlerError> {
        let now = chrono::Utc::now();
        let sealed = bot
            .webhook_secrets
            .iter()
            .rev()
            .find(|s| s.expires_at.is_none_or(|t| t > now))
            .ok_or_else(|| {
                HandlerError::retry(format!("bot {} has no valid signing secret", bot.id))
            })?;
        let secret = self
            .key
            .open(&bot.id, &sealed.sealed)
            .map_err(|e| HandlerError::retry(format!("bot {}: {e}", bot.id)))?;
        Ok(String::from_utf8_lossy(&secret).into_owned())
    }

    fn signatures(
        &self,
        bot: &BotRecord,
        id: &str,
        ts: i64,
        body: &[u8],
    ) -> Result<String, HandlerError> {
        let now = chrono::Utc::now();
        let mut sigs = Vec::new();
        for s in bot
            .webhook_secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|t| t > now))
        {
            let secret = self
                .key
                .open(&bot.id, &s.sealed)
                .map_err(|e| HandlerError::retry(format!("bot {}: {e}", bot.id)))?;
            let secret = String::from_utf8_lossy(&secret);
            sigs.push(
                patchbay_platform::webhook::sign(&secret, id, ts, body)
                    .map_err(HandlerError::reject)?,
            );
        }
        if sigs.is_empty() {
            return Err(HandlerError::retry(format!(
                "bot {} has no valid signing secret",
                bot.id
            )));
        }
        Ok(sigs.join(" "))
    }

    async fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Outcome {
        if let Some(why) = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| patchbay_platform::webhook::refused_literal(&u, self.allow_private))
        {
            return Outcome {
                status: None,
                body: String::new(),
                error: Some(format!("callback URL refused: {why}")),
                retry_after: None,
            };
        }
        let sent = self
            .http
            .post(url)
            .headers(patchbay_platform::http::trace_headers())
            .header("content-type", "application/json");
        let sent = headers
            .into_iter()
            .fold(sent, |r, (name, value)| r.header(name, value))
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "connection failed"
                };
                return Outcome {
                    status: None,
                    body: String::new(),
                    error: Some(format!("{what}: {}", e.without_url())),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = patchbay_platform::webhook::retry_after(response.headers());
        let mut buf = Vec::new();
        let mut error = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_body.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if room < chunk.len() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the response: {}", e.without_url()));
                    break;
                }
            }
        }
        if !(200..300).contains(&status) && error.is_none() {
            error = Some(format!("HTTP {status}"));
        }
        Outcome {
            status: Some(status),
            body: String::from_utf8_lossy(&buf).into_owned(),
            error,
            retry_after,
        }
    }

    /// Turns a 2xx body into a send command, if it holds an inline reply. Returns how many
    /// messages it sends, and a note for the attempt log when the body looked like a reply but
    /// was not a valid one.
    async fn inline_reply(
        &self,
        job: &DispatchJob,
        flavour: WebhookFlavour,
        body: &str,
    ) -> Result<(u32, Option<String>), HandlerError> {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
            return Ok((0, None));
        };
        // chat-api's webhook answer "does not matter": nothing in it is sent.
        if flavour == WebhookFlavour::ChatApi
            || !(value.is_array() || value.get("messages").is_some())
        {
            return Ok((0, None));
        }
        let Some(reply_to) = job.event.reply_to() else {
            return Ok((
                0,
                Some(format!(
                    "inline reply ignored: a {} event has no user to reply to",
                    job.event.event_type.as_str()
                )),
            ));
        };
        let messages = if flavour == WebhookFlavour::Web1on1 {
            // Web1on1's answer: `{"token": …, "messages": [{"text": …}, …]}`.
            let given = value["messages"].as_array().cloned().unwrap_or_default();
            let mut out = Vec::with_capacity(given.len());
            for (i, m) in given.iter().enumerate() {
                match patchbay_contract::web1on1::translate(m) {
                    Ok(patchbay_contract::web1on1::Translated::Send(c)) => out.push(c),
                    Ok(_) => {
                        return Ok((
                            0,
                            Some(format!(
                                "inline reply ignored: messages[{i}]: templates and commands \
                                 go through POST /web1on1/v2/conversations/{{id}}/messages"
                            )),
                        ));
                    }
                    Err(e) => {
                        return Ok((0, Some(format!("inline reply ignored: messages[{i}]: {e}"))));
                    }
                }
            }
            out
        } else if flavour == WebhookFlavour::Brandchat {
            // BrandChat's reply: a JSON array of its messages, all valid or none sent.
            match serde_json::from_value::<Vec<patchbay_contract::brandchat::BrandchatMessage>>(
                value,
            )
            .map_err(|e| e.to_string())
            .and_then(|m| {
                let files = |id: i64| {
                    patchbay_contract::brandchat::file_url(&self.public_url, &job.event.bot_id, id)
                };
                patchbay_contract::brandchat::contents(&m, false, &files).map_err(|e| e.to_string())
            }) {
                Ok(m) => m,
                Err(e) => return Ok((0, Some(format!("inline reply ignored: {e}")))),
            }
        } else {
            match serde_json::from_value::<InlineReply>(value) {
                Ok(r) => r.into_messages(),
                Err(e) => return Ok((0, Some(format!("inline reply ignored: {e}")))),
            }
        };
        if messages.is_empty() {
            return Ok((0, None));
        }
        if messages.len() > 10 {
            return Ok((0, Some("inline reply ignored: at most 10 messages".into())));
        }
        for (i, m) in messages.iter().enumerate() {
            if let Err(e) = m.validate() {
                return Ok((
                    0,
                    Some(format!(
                        "inline reply ignored: {}",
                        e.within(&format!("messages[{i}]"))
                    )),
                ));
            }
        }
        let count = u32::try_from(messages.len()).unwrap_or(10);
        let id = format!("inline:{}", job.event.id);
        let command = SendCommand {
            v: V1,
            id: Some(id.clone()),
            to: Recipient::User {
                user_id: reply_to.to_owned(),
            },
            messages,
            source: SendSource::Inline,
            source_id: None,
            in_reply_to: Some(job.event.id.clone()),
            known_recipient: job.known_recipient(),
            also_to: Vec::new(),
        };
        let subject = self.bus.subjects().send(&job.event.bot_id)?;
        self.bus.publish(&subject, &id, &command).await?;
        Ok((count, None))
    }

    /// Tells a custom channel's request waiting for this event's replies what became of it
    /// (core NATS; nobody may be listening).
    async fn announce(&self, job: &DispatchJob, delivered: bool, replies: u32) {
        if job.event.channel.as_ref().map(|c| c.platform) != Some(Platform::Custom)
            || job.event.event_type != EventType::MessageReceived
        {
            return;
        }
        self.bus
            .announce_custom_outcome(&job.event.id, delivered, replies)
            .await;
    }
}

/// What became of one attempt.
enum Attempted {
    /// 2xx: delivered.
    Delivered,
    /// Failed: retry after this delay (already including `Retry-After` and jitter).
    Failed {
        /// Why.
        reason: String,
        /// Suggested delay before the next attempt.
        retry_after: Option<Duration>,
    },
    /// Nothing to do: the bot is gone or has no callback URL.
    Skipped,
    /// The endpoint is disabled (it answered 410 Gone): dead-letter without attempts.
    Disabled(String),
}

/// `url` with `bot=<bot id>` added to its query, as BrandChat's clients check it.
fn with_bot(url: &str, bot_id: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair("bot", bot_id);
            u.into()
        }
        Err(_) => url.to_owned(),
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Dispatcher {
    fn breaker_open(&self, bot_id: &str) -> Option<Instant> {
        let now = Instant::now();
        let mut b = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        match b.get(bot_id) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                b.remove(bot_id);
                None
            }
            None => None,
        }
    }

    fn trip_breaker(&self, bot_id: &str, delay: Duration) {
        let until = Instant::now() + delay.min(MAX_BREAKER);
        self.breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bot_id.to_owned(), until);
    }

    fn reset_breaker(&self, bot_id: &str) {
        self.breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(bot_id);
    }

    /// Takes an in-flight slot for `bot_id`, or `None` when the bot has its share already.
    fn slot(self: &Arc<Self>, bot_id: &str) -> Option<Slot> {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let InFlight { per_bot, total, .. } = &mut *m;
        let n = per_bot.entry(bot_id.to_owned()).or_insert(0);
        if *n >= MAX_IN_FLIGHT_PER_BOT && *total >= self.shared_slots {
            return None;
        }
        *n += 1;
        *total += 1;
        Some(Slot {
            dispatcher: self.clone(),
            bot_id: bot_id.to_owned(),
        })
    }

    /// A slot for `bot_id` once one is released, waiting in place at most [`SLOT_WAIT`], when
    /// its attempts are fast (under [`FAST_ATTEMPT`] on average, so a slot is due within
    /// milliseconds) and fewer than half the handler slots wait for it already; `None`: park
    /// instead. Waiting keeps a busy but healthy tenant's events off the outbox (a parked event
    /// costs five more statements and waits for the scheduler); a slow tenant's events are
    /// parked at once, so its handlers never wait.
    async fn wait_for_slot(self: &Arc<Self>, bot_id: &str) -> Option<Slot> {
        {
            let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let fast = m
                .attempt_time
                .get(bot_id)
                .is_some_and(|t| *t < FAST_ATTEMPT);
            let waiting = m.waiting.get(bot_id).copied().unwrap_or(0);
            if !fast || waiting >= self.shared_slots.max(1) {
                return None;
            }
            *m.waiting.entry(bot_id.to_owned()).or_insert(0) += 1;
        }
        let deadline = tokio::time::Instant::now() + SLOT_WAIT;
        let slot = loop {
            let freed = self.slot_freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a slot released in between is not missed.
            freed.as_mut().enable();
            if let Some(slot) = self.slot(bot_id) {
                break Some(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break None;
            }
        };
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = m.waiting.get_mut(bot_id) {
            *w -= 1;
            if *w == 0 {
                m.waiting.remove(bot_id);
            }
        }
        slot
    }

    /// Folds one attempt's duration into the bot's moving average.
    fn note_attempt_time(&self, bot_id: &str, took: Duration) {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let t = m.attempt_time.entry(bot_id.to_owned()).or_insert(took);
        *t = (*t * 4 + took) / 5;
    }

    /// One attempt to deliver `job` (attempt number `attempt`), logged. `slot`, the in-flight
    /// slot the attempt was admitted with, is given back as soon as the tenant has answered:
    /// it counts requests at the tenant, and logging the attempt and publishing the inline
    /// reply (slow only when this machine is) would otherwise hold it, so that a fast tenant's
    /// next events were parked for want of slots the tenant was not using.
    async fn deliver(
        &self,
        job: &Arc<DispatchJob>,
        attempt: u64,
        slot: Option<Slot>,
    ) -> Result<Attempted, HandlerError> {
        let Some(bot) = self.view.bot(&job.event.bot_id).await? else {
            tracing::info!(bot_id = %job.event.bot_id, event_id = %job.event.id, "bot no longer exists; event dropped");
            return Ok(Attempted::Skipped);
        };
        // A partner app's copy goes to the app's callback while the app is enabled on the bot.
        let app = match &job.event.installation {
            Some(ctx) => match bot.installations.iter().find(|i| i.id == ctx.id) {
                Some(i) => Some(i.clone()),
                None => {
                    tracing::info!(bot_id = %bot.id, installation_id = %ctx.id, event_id = %job.event.id, "app no longer enabled on the bot; event dropped");
                    return Ok(Attempted::Skipped);
                }
            },
            None => None,
        };
        if app.is_none()
            && let Some(reason) = &bot.webhook.disabled_reason
        {
            return Ok(Attempted::Disabled(format!("endpoint disabled: {reason}")));
        }
        let url = match (&app, bot.webhook.url.clone()) {
            (Some(i), _) => i.callback_url.clone(),
            (None, Some(url)) => url,
            (None, None) => {
                tracing::info!(bot_id = %bot.id, event_id = %job.event.id, "bot has no callback URL; event not delivered");
                return Ok(Attempted::Skipped);
            }
        };
        let earlier = self
            .answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job.event.id)
            .cloned();
        let started = Instant::now();
        let outcome = match earlier {
            // Posted and answered 2xx already; only the follow-up failed.
            Some(body) => Outcome {
                status: Some(200),
                body,
                error: None,
                retry_after: None,
            },
            None => {
                let flavour = match &app {
                    Some(_) => WebhookFlavour::Native,
                    None => bot.webhook.flavour,
                };
                let (url, headers, body) = match flavour {
                    WebhookFlavour::Native => {
                        let body = serde_json::to_vec(&job.event).map_err(HandlerError::reject)?;
                        let ts = chrono::Utc::now().timestamp();
                        let signature = match &app {
                            Some(i) => self.app_signature(i, &job.event.id, ts, &body)?,
                            None => self.signatures(&bot, &job.event.id, ts, &body)?,
                        };
                        let headers = vec![
                            ("webhook-id", job.event.id.clone()),
                            ("webhook-timestamp", ts.to_string()),
                            ("webhook-signature", signature),
                        ];
                        (url.clone(), headers, body)
                    }
                    WebhookFlavour::Brandchat => {
                        let Some(body) = patchbay_contract::brandchat::callback_body(&job.event)
                        else {
                            tracing::debug!(event_id = %job.event.id, "BrandChat has no such event; not delivered");
                            return Ok(Attempted::Skipped);
                        };
                        let body = serde_json::to_vec(&body).map_err(HandlerError::reject)?;
                        let key = match self.brandchat_key(&bot) {
                            Ok(k) => k,
                            Err(e) => {
                                return Ok(Attempted::Failed {
                                    reason: e.to_string(),
                                    retry_after: None,
                                });
                            }
                        };
                        let headers = vec![
                            (
                                "x-chat-signature",
                                patchbay_platform::webhook::chat_signature(&key, &body),
                            ),
                            ("webhook-id", job.event.id.clone()),
                        ];
                        (with_bot(&url, &bot.id), headers, body)
                    }
                    WebhookFlavour::Web1on1 => {
                        let Some(body) =
                            patchbay_contract::web1on1::callback_body(&job.event, &bot.tenant_id)
                        else {
                            tracing::debug!(event_id = %job.event.id, "Web1on1 has no such event; not delivered");
                            return Ok(Attempted::Skipped);
                        };
                        let body = serde_json::to_vec(&body).map_err(HandlerError::reject)?;
                        let secret = self.newest_secret(&bot)?;
                        let signature = format!(
                            "sha1={}",
                            patchbay_platform::webhook::chat_signature(&secret, &body)
                        );
                        let headers = vec![
                            (patchbay_contract::web1on1::SIGNATURE_HEADER, signature),
                            ("webhook-id", job.event.id.clone()),
                        ];
                        (url.clone(), headers, body)
                    }
                    WebhookFlavour::ChatApi => {
                        let Some(body) = patchbay_contract::chat_api::callback_body(
                            &job.event,
                            job.reply_address.as_deref(),
                        ) else {
                            tracing::debug!(event_id = %job.event.id, "chat-api has no such event; not delivered");
                            return Ok(Attempted::Skipped);
                        };
                        let body = serde_json::to_vec(&body).map_err(HandlerError::reject)?;
                        // chat-api signs nothing; the event id still lets a receiver dedupe.
                        (
                            url.clone(),
                            vec![("webhook-id", job.event.id.clone())],
                            body,
                        )
                    }
                };
                let outcome = self.post(&url, headers, body).await;
                if outcome.error.is_none() {
                    self.answered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(job.event.id.clone(), outcome.body.clone());
                }
                outcome
            }
        };
        let took = started.elapsed();
        drop(slot);
        self.note_attempt_time(job.lane(), took);
        let ok = outcome.error.is_none();
        metrics::histogram!("patchbay_webhook_attempt_seconds").record(took.as_secs_f64());
        metrics::counter!("patchbay_webhook_attempts_total", "outcome" => if ok { "delivered" } else { "failed" }).increment(1);
        if ok {
            // The reply first, the record second: a crash in between re-posts the event (same
            // webhook-id; the reply's command id is derived from it, so it is not sent twice),
            // while the other order would lose the reply.
            let (replies, note) = match &app {
                Some(i) if !patchbay_contract::scopes::grants(Some(&i.scopes), "messages:send") => {
                    let answered = !outcome.body.trim().is_empty();
                    (
                        0,
                        answered.then(|| {
                            "the app's scopes do not include messages:send: its answer was not \
                             sent"
                                .to_owned()
                        }),
                    )
                }
                Some(_) => {
                    self.inline_reply(job, WebhookFlavour::Native, &outcome.body)
                        .await?
                }
                None => {
                    self.inline_reply(job, bot.webhook.flavour, &outcome.body)
                        .await?
                }
            };
            // A custom channel's request waiting for the replies need not wait for the log.
            self.announce(job, true, replies).await;
            self.attempts
                .submit(store::Attempt {
                    job: job.clone(),
                    attempt,
                    url: url.clone(),
                    delivered: true,
                    status_code: outcome.status,
                    duration: took,
                    response_body: outcome.body,
                    error: note,
                })
                .await
                .map_err(batch_error)?;
            self.answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&job.event.id);
            self.reset_breaker(job.lane());
            return Ok(Attempted::Delivered);
        }
        self.announce(job, false, 0).await;
        self.attempts
            .submit(store::Attempt {
                job: job.clone(),
                attempt,
                url: url.clone(),
                delivered: false,
                status_code: outcome.status,
                duration: took,
                response_body: outcome.body,
                error: outcome.error.clone(),
            })
            .await
            .map_err(batch_error)?;
        if outcome.status == Some(410) && app.is_none() {
            let reason = format!(
                "{url} answered 410 Gone at {}",
                chrono::Utc::now().to_rfc3339()
            );
            let req = patchbay_contract::WebhookStateRequest {
                v: V1,
                bot_id: bot.id.clone(),
                reason: Some(reason.clone()),
            };
            let subject = self
                .bus
                .subjects()
                .rpc("auth", patchbay_contract::auth_ops::DISABLE_WEBHOOK);
            self.bus
                .request_sealed::<_, ()>(&subject, &req, Duration::from_secs(5))
                .await?
                .map_err(|e| HandlerError::unavailable(format!("disabling the endpoint: {e}")))?;
            return Ok(Attempted::Disabled(format!(
                "callback answered 410 Gone; endpoint disabled ({reason})"
            )));
        }
        let whose = match &app {
            Some(i) => format!("app {}'s callback for bot {}", i.app_id, bot.id),
            None => format!("callback to bot {}", bot.id),
        };
        Ok(Attempted::Failed {
            reason: format!("{whose} failed: {}", outcome.error.unwrap_or_default()),
            retry_after: outcome.retry_after,
        })
    }

    /// Stores the event on the dead-letter stream.
    async fn dead_letter(
        &self,
        job: &DispatchJob,
        attempts: u64,
        reason: &str,
    ) -> Result<(), HandlerError> {
        let subject = self.bus.subjects().dispatch(&job.event.bot_id)?;
        let letter = DeadLetter {
            consumer: "webhook-dispatcher",
            stream: self.bus.subjects().stream(Stream::Dispatch),
            subject,
            stream_sequence: 0,
            delivered: attempts,
            reason: reason.to_owned(),
            payload: serde_json::to_vec(job)
                .map_err(HandlerError::reject)?
                .into(),
            headers: None,
        };
        letter
            .store_with_id(&self.bus, &patchbay_contract::ids::new_id("dlq"))
            .await?;
        store::mark_failed(&self.pool, job, reason)
            .await
            .map_err(db_error)?;
        tracing::warn!(event_id = %job.event.id, %reason, "event dead-lettered");
        metrics::counter!("patchbay_webhook_dead_letters_total").increment(1);
        Ok(())
    }

    /// After failed attempt number `attempts`: park for the next attempt, or dead-letter.
    /// Returns whether the event is still waiting.
    async fn after_failure(
        &self,
        job: &DispatchJob,
        parked_id: Option<i64>,
        attempts: u64,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Result<bool, HandlerError> {
        if attempts >= self.schedule.0.len() as u64 {
            self.dead_letter(
                job,
                attempts,
                &format!("gave up after {attempts} attempts: {reason}"),
            )
            .await?;
            if let Some(id) = parked_id {
                store::unpark(&self.pool, id).await.map_err(db_error)?;
            }
            return Ok(false);
        }
        let delay = self.next_delay(attempts, retry_after);
        self.trip_breaker(job.lane(), delay);
        let next = chrono::Utc::now() + to_chrono(delay);
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        match parked_id {
            Some(id) => store::reschedule(&self.pool, id, attempts, next)
                .await
                .map_err(db_error)?,
            None => store::park(&self.pool, job, attempts, next)
                .await
                .map_err(db_error)?,
        }
        Ok(true)
    }

    /// Retries parked events: the due head of each conversation, then its successors while
    /// they go through, until shutdown.
    async fn schedule_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.wake.notified() => {}
                () = shutdown.cancelled() => return,
            }
            let heads =
                match store::claim_due_heads(&self.pool, SCHEDULER_CONCURRENCY as i64, self.lease)
                    .await
                {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the outbox");
                        continue;
                    }
                };
            let mut set = tokio::task::JoinSet::new();
            for head in heads {
                let me = self.clone();
                set.spawn(async move { me.drain(head).await });
            }
            while set.join_next().await.is_some() {}
        }
    }

    /// Works through one conversation's parked events, starting at its leased head.
    async fn drain(&self, first: store::Parked) {
        let conversation = first.job.lane_conversation();
        let mut current = Some(first);
        while let Some(p) = current.take() {
            match self.retry_parked(&p).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(event_id = %p.job.event.id, error = %e, "outbox retry failed; will try again");
                    let next = chrono::Utc::now() + chrono::Duration::seconds(1);
                    let _ = store::reschedule(&self.pool, p.id, p.attempts, next).await;
                    return;
                }
            }
            current = match store::claim_next(&self.pool, &conversation, self.lease).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    None
                }
            };
        }
    }

    /// One parked event; `Ok(true)` when it is done (delivered, dropped or dead-lettered) and
    /// the conversation may go on.
    async fn retry_parked(&self, p: &store::Parked) -> Result<bool, HandlerError> {
        let job = &p.job;
        if store::status(&self.pool, &job.event.id)
            .await
            .map_err(db_error)?
            == Some(DeliveryState::Delivered)
        {
            store::unpark(&self.pool, p.id).await.map_err(db_error)?;
            return Ok(true);
        }
        if let Some(until) = self.breaker_open(job.lane()) {
            let next =
                chrono::Utc::now() + to_chrono(until.saturating_duration_since(Instant::now()));
            store::reschedule(&self.pool, p.id, p.attempts, next)
                .await
                .map_err(db_error)?;
            return Ok(false);
        }
        let attempt = u64::try_from(p.attempts).unwrap_or(0) + 1;
        match self.deliver(job, attempt, None).await? {
            Attempted::Delivered | Attempted::Skipped => {
                store::unpark(&self.pool, p.id).await.map_err(db_error)?;
                Ok(true)
            }
            Attempted::Disabled(reason) => {
                self.dead_letter(job, attempt, &reason).await?;
                store::unpark(&self.pool, p.id).await.map_err(db_error)?;
                Ok(true)
            }
            Attempted::Failed {
                reason,
                retry_after,
            } => {
                let waiting = self
                    .after_failure(job, Some(p.id), attempt, &reason, retry_after)
                    .await?;
                Ok(!waiting)
            }
        }
    }
}

fn rpc_db(e: sqlx::Error) -> RpcError {
    tracing::error!(error = %e, "delivery query failed");
    RpcError::new(
        503,
        "unavailable",
        "the database is unavailable; retry shortly",
    )
}

impl Dispatcher {
    /// The delivery API, by request/reply.
    async fn answer(&self, op: &str, body: bytes::Bytes) -> Vec<u8> {
        match op {
            dispatcher_ops::LIST => encode(match decode::<ListDeliveriesRequest>(&body) {
                Ok(req) => store::list(&self.pool, &req).await.map_err(rpc_db),
                Err(e) => Err(e),
            }),
            dispatcher_ops::GET => encode(match decode::<DeliveryRef>(&body) {
                Ok(r) => store::detail(&self.pool, &r.bot_id, &r.event_id)
                    .await
                    .map_err(rpc_db)
                    .and_then(|d| d.ok_or_else(|| not_found(&r.event_id))),
                Err(e) => Err(e),
            }),
            dispatcher_ops::RETRY => encode(match decode::<DeliveryRef>(&body) {
                Ok(r) => self.retry(&r).await,
                Err(e) => Err(e),
            }),
            dispatcher_ops::REPLAY => encode(match decode::<ReplayRequest>(&body) {
                Ok(r) => self.replay(&r).await,
                Err(e) => Err(e),
            }),
            dispatcher_ops::VERIFY_ENDPOINT => encode(
                match decode::<patchbay_contract::VerifyEndpointRequest>(&body) {
                    Ok(r) => self.verify_endpoint(&r).await,
                    Err(e) => Err(e),
                },
            ),
            other => encode::<()>(Err(RpcError::new(
                404,
                "unknown_operation",
                format!("webhook-dispatcher has no operation {other:?}"),
            ))),
        }
    }

    /// Checks that a callback URL echoes a fresh `hub.challenge` (GET with `hub.mode=subscribe`
    /// and the tenant's `hub.verify_token`), through the same guarded client as callbacks: no
    /// private addresses, no redirects, the per-attempt timeout.
    async fn verify_endpoint(
        &self,
        r: &patchbay_contract::VerifyEndpointRequest,
    ) -> Result<(), RpcError> {
        let failed = |why: String| {
            RpcError::new(
                422,
                "webhook_verification_failed",
                format!("{}: {why}", r.url),
            )
        };
        let mut url = reqwest::Url::parse(&r.url).map_err(|e| failed(e.to_string()))?;
        if let Some(why) = patchbay_platform::webhook::refused_literal(&url, self.allow_private) {
            return Err(failed(why));
        }
        let challenge = patchbay_contract::ids::new_id("chl");
        let request = match r.challenge {
            patchbay_contract::Challenge::TypeSubscribe => {
                url.query_pairs_mut()
                    .append_pair("type", "subscribe")
                    .append_pair("challenge", &challenge);
                self.http.get(url)
            }
            patchbay_contract::Challenge::HubForm => {
                let form = serde_urlencoded::to_string([
                    ("hub_mode", "subscribe"),
                    ("hub_verify_token", r.verify_token.as_str()),
                    ("hub_challenge", challenge.as_str()),
                ])
                .map_err(|e| failed(e.to_string()))?;
                self.http
                    .post(url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form)
            }
            patchbay_contract::Challenge::Hub | patchbay_contract::Challenge::None => {
                url.query_pairs_mut()
                    .append_pair("hub.mode", "subscribe")
                    .append_pair("hub.challenge", &challenge)
                    .append_pair("hub.verify_token", &r.verify_token);
                self.http.get(url)
            }
        };
        let mut response = request
            .headers(patchbay_platform::http::trace_headers())
            .send()
            .await
            .map_err(|e| failed(format!("the challenge request failed: {}", e.without_url())))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!(
                "answered the challenge with HTTP {}",
                status.as_u16()
            )));
        }
        let mut buf = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buf.extend_from_slice(&chunk);
            if buf.len() > 4096 {
                break;
            }
        }
        if String::from_utf8_lossy(&buf).trim() != challenge {
            return Err(failed(
                "did not answer with the challenge value as its body".into(),
            ));
        }
        tracing::info!(url = %r.url, "callback endpoint verified");
        Ok(())
    }

    /// Publishes a reopened job again; a fresh `Nats-Msg-Id`, the same event (and webhook-id).
    async fn redispatch(&self, job: &DispatchJob) -> Result<(), RpcError> {
        let subject = self
            .bus
            .subjects()
            .dispatch(&job.event.bot_id)
            .map_err(|e| RpcError::new(400, "invalid_request", e.to_string()))?;
        let id = format!(
            "again:{}:{}",
            job.event.id,
            patchbay_contract::ids::new_id("r")
        );
        self.bus.publish(&subject, &id, job).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot publish a retry");
            RpcError::new(
                503,
                "unavailable",
                "cannot queue the retry; try again shortly",
            )
        })?;
        Ok(())
    }

    async fn retry(&self, r: &DeliveryRef) -> Result<patchbay_contract::Delivery, RpcError> {
        let (delivery, job) = store::reopen(&self.pool, &r.bot_id, &r.event_id)
            .await
            .map_err(rpc_db)?
            .ok_or_else(|| not_found(&r.event_id))?;
        self.redispatch(&job).await?;
        Ok(delivery)
    }

    /// Reopens the bot's dead letters of the window, the oldest first: at most `limit` and
    /// what is left of the bot's budget of `replay_per_minute` a minute (429 with
    /// `Retry-After` when none is). `more` says whether the window has others.
    async fn replay(&self, r: &ReplayRequest) -> Result<Replayed, RpcError> {
        let reopened = store::reopen_failed(&self.pool, r, self.replay_per_minute)
            .await
            .map_err(rpc_db)?;
        let (jobs, more) = match reopened {
            store::Reopened::Jobs { jobs, more } => (jobs, more),
            store::Reopened::Paced { retry_after } => {
                return Err(RpcError::new(
                    429,
                    "replay_paced",
                    format!(
                        "this bot replayed {} dead letters in the last minute, its limit; \
                         replay the rest after {retry_after} s",
                        self.replay_per_minute
                    ),
                )
                .retry_after(retry_after));
            }
        };
        for job in &jobs {
            self.redispatch(job).await?;
        }
        tracing::info!(bot_id = %r.bot_id, replayed = jobs.len(), more, "dead letters replayed");
        Ok(Replayed {
            replayed: u32::try_from(jobs.len()).unwrap_or(u32::MAX),
            more,
        })
    }
}

fn not_found(event_id: &str) -> RpcError {
    RpcError::new(404, "not_found", format!("no delivery of event {event_id}"))
}

/// An in-flight slot of one bot; released when dropped.
struct Slot {
    dispatcher: Arc<Dispatcher>,
    bot_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self
            .dispatcher
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let InFlight { per_bot, total, .. } = &mut *m;
        if let Some(n) = per_bot.get_mut(&self.bot_id) {
            *n = n.saturating_sub(1);
            *total = total.saturating_sub(1);
            if *n == 0 {
                per_bot.remove(&self.bot_id);
            }
        }
        drop(m);
        self.dispatcher.slot_freed.notify_waiters();
        if self
            .dispatcher
            .parked_for_slots
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.dispatcher.wake.notify_one();
        }
    }
}

/// The consumer side: deliver at once when nothing stands in the way, otherwise park.
struct Intake(Arc<Dispatcher>);

impl Handler<DispatchJob> for Intake {
    fn key(&self, job: &DispatchJob) -> Option<String> {
        Some(job.lane_conversation())
    }

    async fn handle(&self, d: Delivery<DispatchJob>) -> Result<(), HandlerError> {
        let me = &self.0;
        // Shared with the batch without a copy.
        let job = Arc::new(d.payload);
        // Delivered, or dead-lettered, already: a redelivery. (Retries and replays set the
        // delivery back to pending before they publish the job again; a new event has no
        // delivery yet, which its first outcome creates.)
        let (state, parked) = me
            .admissions
            .submit(store::Admission(job.clone()))
            .await
            .map_err(batch_error)?;
        if state != DeliveryState::Pending {
            return Ok(());
        }
        let now = chrono::Utc::now();
        if parked {
            // Earlier events of this conversation are waiting: queue behind them.
            return store::park(&me.pool, &job, 0, now).await.map_err(db_error);
        }
        if let Some(until) = me.breaker_open(job.lane()) {
            let next = now + to_chrono(until.saturating_duration_since(Instant::now()));
            return store::park(&me.pool, &job, 0, next).await.map_err(db_error);
        }
        let slot = match me.slot(job.lane()) {
            Some(slot) => Some(slot),
            None => me.wait_for_slot(job.lane()).await,
        };
        let Some(slot) = slot else {
            // This bot already has its share of attempts in flight, and enough handlers
            // waiting for one. Due at once: the next attempt of this replica to finish wakes
            // the scheduler.
            store::park(&me.pool, &job, 0, now)
                .await
                .map_err(db_error)?;
            me.parked_for_slots
                .store(true, std::sync::atomic::Ordering::Release);
            return Ok(());
        };
        match me.deliver(&job, 1, Some(slot)).await? {
            Attempted::Delivered | Attempted::Skipped => Ok(()),
            Attempted::Disabled(reason) => me.dead_letter(&job, 1, &reason).await,
            Attempted::Failed {
                reason,
                retry_after,
            } => me
                .after_failure(&job, None, 1, &reason, retry_after)
                .await
                .map(|_| ()),
        }
    }
}
