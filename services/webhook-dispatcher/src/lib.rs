//! `webhook-dispatcher`: delivers events from `<p>.dispatch.>` to each bot's callback URL,
//! signed per Standard Webhooks (`webhook-id` = event id, stable across retries), and owns the
//! attempt log (schema `dispatcher`).
//!
//! * a 2xx is a delivery; its body may carry an inline reply (`{"messages": [...]}` or a bare
//!   array), stored as a send command on `<p>.send.<bot>` with an id derived from the event, so
//!   a repeated delivery cannot send the reply twice;
//! * anything else (non-2xx, redirect, timeout, connection error) is a failed attempt, retried
//!   on `PATCHBAY_WEBHOOK_RETRY_SCHEDULE` with ±20 % jitter, a `Retry-After` honoured within
//!   one to two times the scheduled delay; after the last attempt the event is dead-lettered;
//! * every attempt is logged: status, duration, the first bytes of the response, the error;
//! * callbacks never go to loopback or private addresses unless the operator allows them.

mod resolver;
pub mod signing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use patchbay_bus::{Bus, ConfigView, Delivery, Handler, HandlerError};
use patchbay_config::{MasterKey, RetrySchedule};
use patchbay_contract::{
    BotRecord, DispatchJob, InlineReply, Recipient, SendCommand, SendSource, V1, topology,
};
use patchbay_runtime::{BoxError, Deps, Service};
use sqlx::PgPool;

/// Embedded migrations of schema `dispatcher`.
pub const MIGRATIONS: &[patchbay_store::EmbeddedMigration] =
    &[(1, "init", include_str!("../migrations/0001_init.sql"))];

struct Dispatcher {
    pool: PgPool,
    bus: Bus,
    view: ConfigView,
    key: MasterKey,
    http: reqwest::Client,
    schedule: RetrySchedule,
    allow_private: bool,
    max_body: usize,
}

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let key = deps.config.require_master_key()?;
        let pool = deps.database("dispatcher", MIGRATIONS).await?;
        let allow_private = deps.config.allow_private_callbacks;
        let http = patchbay_platform::http::client_builder(Duration::from_millis(
            deps.config.webhook_timeout_ms,
        ))
        .dns_resolver(Arc::new(resolver::GuardedResolver { allow_private }))
        .user_agent(concat!("Patchbay-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?;
        let schedule = deps.config.webhook_retry_schedule.clone();
        let attempts = u32::try_from(schedule.0.len()).unwrap_or(u32::MAX);
        let spec = topology::dispatcher(deps.bus.subjects(), attempts);
        let handler = Arc::new(Dispatcher {
            pool,
            bus: deps.bus.clone(),
            view: deps.view.clone(),
            key,
            http,
            schedule,
            allow_private,
            max_body: deps.config.webhook_response_max_bytes,
        });
        Ok(Service::new("webhook-dispatcher").task(deps.consumer::<DispatchJob, _>(spec, handler)))
    })
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
    /// The delay before attempt `delivered + 1`, honouring `Retry-After` within 1–2× of it.
    fn next_delay(&self, delivered: u64, retry_after: Option<Duration>) -> Duration {
        let idx = usize::try_from(delivered).unwrap_or(usize::MAX);
        let scheduled = self
            .schedule
            .0
            .get(idx)
            .or(self.schedule.0.last())
            .copied()
            .unwrap_or(Duration::from_secs(5));
        let base = match retry_after {
            Some(ra) if ra > scheduled => ra.min(scheduled * 2),
            _ => scheduled,
        };
        jitter(base).max(Duration::from_millis(100))
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
            sigs.push(signing::sign(&secret, id, ts, body).map_err(HandlerError::reject)?);
        }
        if sigs.is_empty() {
            return Err(HandlerError::retry(format!(
                "bot {} has no valid signing secret",
                bot.id
            )));
        }
        Ok(sigs.join(" "))
    }

    async fn post(&self, url: &str, id: &str, ts: i64, signature: &str, body: Vec<u8>) -> Outcome {
        // Host names go through the guarded resolver; IP literals bypass it, so check them here.
        let literal = reqwest::Url::parse(url).ok().and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        });
        if let Some(ip) = literal
            && !self.allow_private
            && !patchbay_platform::http::is_public_ip(ip)
        {
            return Outcome {
                status: None,
                body: String::new(),
                error: Some(format!(
                    "callback URL refused: {ip} is a loopback or private address"
                )),
                retry_after: None,
            };
        }
        let sent = self
            .http
            .post(url)
            .headers(patchbay_platform::http::trace_headers())
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
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
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
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

    /// Turns a 2xx body into a send command, if it holds an inline reply. Returns a note for the
    /// attempt log when the body looked like a reply but was not a valid one.
    async fn inline_reply(
        &self,
        job: &DispatchJob,
        body: &str,
    ) -> Result<Option<String>, HandlerError> {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
            return Ok(None);
        };
        if !(value.is_array() || value.get("messages").is_some()) {
            return Ok(None);
        }
        let messages = match serde_json::from_value::<InlineReply>(value) {
            Ok(r) => r.into_messages(),
            Err(e) => return Ok(Some(format!("inline reply ignored: {e}"))),
        };
        if messages.is_empty() {
            return Ok(None);
        }
        if messages.len() > 10 {
            return Ok(Some("inline reply ignored: at most 10 messages".into()));
        }
        for (i, m) in messages.iter().enumerate() {
            if let Err(e) = m.validate() {
                return Ok(Some(format!(
                    "inline reply ignored: {}",
                    e.within(&format!("messages[{i}]"))
                )));
            }
        }
        let id = format!("inline:{}", job.event.id);
        let command = SendCommand {
            v: V1,
            id: Some(id.clone()),
            to: Recipient::User {
                user_id: job.event.user.id.clone(),
            },
            messages,
            source: SendSource::Inline,
            in_reply_to: Some(job.event.id.clone()),
        };
        let subject = self.bus.subjects().send(&job.event.bot_id)?;
        self.bus.publish(&subject, &id, &command).await?;
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    async fn log_attempt(
        &self,
        job: &DispatchJob,
        attempt: u64,
        url: &str,
        o: &Outcome,
        duration: Duration,
        note: Option<&str>,
    ) {
        let error = match (&o.error, note) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(n)) => Some(n.to_owned()),
            (None, None) => None,
        };
        let result = sqlx::query(
            "insert into attempts (event_id, bot_id, event_type, attempt, url, status_code,
                                   duration_ms, response_body, error)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&job.event.id)
        .bind(&job.event.bot_id)
        .bind(job.event.event_type.as_str())
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(url)
        .bind(o.status.map(i32::from))
        .bind(i32::try_from(duration.as_millis()).unwrap_or(i32::MAX))
        .bind(&o.body)
        .bind(error)
        .execute(&self.pool)
        .await;
        if let Err(e) = result {
            tracing::warn!(event_id = %job.event.id, error = %e, "could not log the attempt");
        }
    }
}

impl Handler<DispatchJob> for Dispatcher {
    fn key(&self, job: &DispatchJob) -> Option<String> {
        Some(job.event.conversation_id.clone())
    }

    async fn handle(&self, d: Delivery<DispatchJob>) -> Result<(), HandlerError> {
        let job = &d.payload;
        let bot = self
            .view
            .bot(&job.event.bot_id)
            .await?
            .ok_or_else(|| HandlerError::reject(format!("unknown bot {}", job.event.bot_id)))?;
        let Some(url) = bot.webhook.url.clone() else {
            tracing::info!(bot_id = %bot.id, event_id = %job.event.id, "bot has no callback URL; event not delivered");
            return Ok(());
        };
        let body = serde_json::to_vec(&job.event).map_err(HandlerError::reject)?;
        let ts = chrono::Utc::now().timestamp();
        let signature = self.signatures(&bot, &job.event.id, ts, &body)?;
        let started = Instant::now();
        let outcome = self.post(&url, &job.event.id, ts, &signature, body).await;
        let took = started.elapsed();
        let delivered = outcome.error.is_none();
        metrics::histogram!("patchbay_webhook_attempt_seconds").record(took.as_secs_f64());
        metrics::counter!("patchbay_webhook_attempts_total", "outcome" => if delivered { "delivered" } else { "failed" }).increment(1);
        if delivered {
            let note = self.inline_reply(job, &outcome.body).await?;
            self.log_attempt(job, d.delivered, &url, &outcome, took, note.as_deref())
                .await;
            return Ok(());
        }
        self.log_attempt(job, d.delivered, &url, &outcome, took, None)
            .await;
        let reason = outcome.error.unwrap_or_default();
        Err(HandlerError::retry_after(
            format!("callback to bot {} failed: {reason}", bot.id),
            self.next_delay(d.delivered, outcome.retry_after),
        ))
    }
}
