//! The consumer runtime. Handlers get a typed message and return a `Result`; this module alone
//! decides what that means for JetStream:
//!
//! * `Ok` → ack;
//! * [`HandlerError::Retry`] → nak with a delay (the handler's, else the consumer's backoff),
//!   and after the consumer's last attempt a dead-letter copy then term;
//! * [`HandlerError::Reject`], an undecodable payload, or a panic on the last attempt →
//!   dead-letter copy with the reason, then term.
//!
//! A dead-letter copy is stored before the original is terminated; if storing it fails, the
//! original is nak'ed instead, so nothing is ever dropped. Concurrency is bounded by a
//! semaphore; slow handlers send progress so the server does not redeliver them; on shutdown
//! the runtime stops pulling and waits (up to a grace period) for what it holds.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use patchbay_contract::headers;
use patchbay_contract::topology::ConsumerSpec;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Bus, BusError};

/// What a handler wants done with a message it could not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// A transient failure: try again later.
    #[error("retry: {reason}")]
    Retry {
        /// Why.
        reason: String,
        /// When, if the handler knows better than the consumer's backoff (`Retry-After`).
        after: Option<Duration>,
    },
    /// The message can never succeed: dead-letter it now.
    #[error("reject: {reason}")]
    Reject {
        /// Why.
        reason: String,
    },
}

impl HandlerError {
    /// A transient failure with the consumer's backoff.
    pub fn retry(reason: impl std::fmt::Display) -> Self {
        HandlerError::Retry {
            reason: reason.to_string(),
            after: None,
        }
    }

    /// A transient failure to retry after `after`.
    pub fn retry_after(reason: impl std::fmt::Display, after: Duration) -> Self {
        HandlerError::Retry {
            reason: reason.to_string(),
            after: Some(after),
        }
    }

    /// A permanent failure.
    pub fn reject(reason: impl std::fmt::Display) -> Self {
        HandlerError::Reject {
            reason: reason.to_string(),
        }
    }
}

impl From<patchbay_contract::ContractError> for HandlerError {
    fn from(e: patchbay_contract::ContractError) -> Self {
        HandlerError::reject(e)
    }
}

impl From<BusError> for HandlerError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Encoding(_) | BusError::Contract(_) => HandlerError::reject(e),
            _ => HandlerError::retry(e),
        }
    }
}

/// One message, decoded.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The payload.
    pub payload: T,
    /// The subject it was published on.
    pub subject: String,
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// Which delivery this is (1 for the first).
    pub delivered: u64,
    /// Its headers.
    pub headers: Option<HeaderMap>,
}

/// A message handler.
pub trait Handler<T>: Send + Sync + 'static {
    /// Handles one message. Must be idempotent: a message can arrive more than once.
    fn handle(
        &self,
        delivery: Delivery<T>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Runs a durable pull consumer until `shutdown`, then waits up to `grace` for messages in
/// hand. The consumer is created, or updated to `spec`, first.
pub async fn run_consumer<T, H>(
    bus: Bus,
    spec: ConsumerSpec,
    concurrency: usize,
    handler: Arc<H>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), BusError>
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    let spec = Arc::new(spec);
    let concurrency = concurrency.max(1);
    let consumer = tokio::select! {
        c = create_consumer(&bus, &spec) => c?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    tracing::info!(consumer = spec.durable, filter = %spec.filter, concurrency, "consumer started");

    'outer: while !shutdown.is_cancelled() {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(concurrency)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = spec.durable, error = %e, "cannot pull; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break 'outer,
                },
                () = shutdown.cancelled() => break 'outer,
            };
            let next = tokio::select! {
                n = messages.next() => n,
                () = shutdown.cancelled() => break 'outer,
            };
            while tasks.try_join_next().is_some() {}
            match next {
                Some(Ok(msg)) => {
                    let bus = bus.clone();
                    let spec = spec.clone();
                    let handler = handler.clone();
                    tasks.spawn(async move {
                        process::<T, H>(&bus, &spec, &*handler, msg).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(consumer = spec.durable, error = %e, "pull interrupted");
                }
                None => continue 'outer,
            }
        }
    }

    let deadline = Instant::now() + grace;
    while !tasks.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, tasks.join_next()).await.is_err() {
            tracing::warn!(
                consumer = spec.durable,
                unfinished = tasks.len(),
                "grace period over; unfinished messages will be redelivered"
            );
            tasks.abort_all();
            break;
        }
    }
    tracing::info!(consumer = spec.durable, "consumer stopped");
    Ok(())
}

async fn create_consumer(
    bus: &Bus,
    spec: &ConsumerSpec,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
    let stream_name = bus.subjects().stream(spec.stream);
    let config = pull::Config {
        durable_name: Some(spec.durable.to_owned()),
        filter_subject: spec.filter.clone(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // A backstop only: the runtime dead-letters after `max_attempts` itself.
        max_deliver: i64::from(spec.max_attempts) + 5,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    };
    let mut last = String::new();
    for attempt in 0..50u64 {
        let result = async {
            let stream = bus
                .jetstream()
                .get_stream(&stream_name)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .create_consumer(config.clone())
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::debug!(consumer = spec.durable, attempt, error = %e, "creating consumer failed; retrying");
                last = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(BusError::Setup(format!(
        "consumer {} on {stream_name}: {last}",
        spec.durable
    )))
}

async fn process<T, H>(bus: &Bus, spec: &ConsumerSpec, handler: &H, msg: jetstream::Message)
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    let (stream_sequence, delivered) = match msg.info() {
        Ok(i) => (i.stream_sequence, u64::try_from(i.delivered).unwrap_or(1)),
        Err(_) => (0, 1),
    };
    let subject = msg.subject.to_string();
    let span = tracing::info_span!(
        "process",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation = "process",
        messaging.destination.name = %subject,
        messaging.consumer.group.name = spec.durable,
        messaging.message.id = tracing::field::Empty,
        delivered,
    );
    crate::trace::set_parent(&span, msg.headers.as_ref());
    if let Some(id) = msg.headers.as_ref().and_then(|h| h.get(headers::MSG_ID)) {
        span.record("messaging.message.id", id.as_str());
    }
    let started = Instant::now();
    let outcome = async {
        let payload: T = match serde_json::from_slice(&msg.payload) {
            Ok(p) => p,
            Err(e) => return Err(HandlerError::reject(format!("malformed payload: {e}"))),
        };
        let delivery = Delivery {
            payload,
            subject: subject.clone(),
            stream_sequence,
            delivered,
            headers: msg.headers.clone(),
        };
        let work = AssertUnwindSafe(handler.handle(delivery)).catch_unwind();
        tokio::pin!(work);
        let mut progress = tokio::time::interval(spec.ack_wait / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                r = &mut work => {
                    return r.unwrap_or_else(|_| Err(HandlerError::retry("handler panicked")));
                }
                _ = progress.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
    .instrument(span.clone())
    .await;

    let consumer = spec.durable;
    let label = match &outcome {
        Ok(()) => {
            if let Err(e) = msg.ack().await {
                tracing::warn!(parent: &span, error = %e, "ack failed; message will be redelivered");
            }
            "ack"
        }
        Err(HandlerError::Retry { reason, after }) if delivered < u64::from(spec.max_attempts) => {
            let delay = after.unwrap_or_else(|| spec.backoff_for(delivered));
            tracing::info!(parent: &span, %reason, delay_ms = delay.as_millis() as u64, "retrying later");
            let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            "retry"
        }
        Err(e) => {
            let reason = match e {
                HandlerError::Retry { reason, .. } => {
                    format!("gave up after {delivered} attempts: {reason}")
                }
                HandlerError::Reject { reason } => reason.clone(),
            };
            match dead_letter(bus, spec, &msg, stream_sequence, delivered, &reason).await {
                Ok(()) => {
                    tracing::warn!(parent: &span, %reason, "dead-lettered");
                    let _ = msg.ack_with(AckKind::Term).await;
                    "dead_letter"
                }
                Err(err) => {
                    tracing::error!(parent: &span, %reason, error = %err, "cannot store dead letter; will retry");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(spec.backoff_for(delivered))))
                        .await;
                    "retry"
                }
            }
        }
    };
    metrics::counter!("patchbay_consumer_messages_total", "consumer" => consumer, "outcome" => label)
        .increment(1);
    metrics::histogram!("patchbay_consumer_handle_seconds", "consumer" => consumer)
        .record(started.elapsed().as_secs_f64());
}

/// Stores a copy of `msg` on `<p>.dlq.<consumer>` with the reason in headers.
async fn dead_letter(
    bus: &Bus,
    spec: &ConsumerSpec,
    msg: &jetstream::Message,
    stream_sequence: u64,
    delivered: u64,
    reason: &str,
) -> Result<(), BusError> {
    let subject = bus.subjects().dlq(spec.durable)?;
    let stream = bus.subjects().stream(spec.stream);
    let mut h = HeaderMap::new();
    // Header values cannot hold newlines.
    let reason: String = reason
        .chars()
        .take(1000)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    h.insert(headers::DLQ_REASON, reason.as_str());
    h.insert(headers::DLQ_CONSUMER, spec.durable);
    h.insert(headers::DLQ_SUBJECT, msg.subject.as_str());
    h.insert(headers::DLQ_STREAM, stream.as_str());
    h.insert(
        headers::DLQ_STREAM_SEQ,
        stream_sequence.to_string().as_str(),
    );
    h.insert(headers::DLQ_DELIVERIES, delivered.to_string().as_str());
    h.insert(headers::DLQ_AT, chrono::Utc::now().to_rfc3339().as_str());
    if let Some(orig) = &msg.headers {
        for name in [headers::TRACEPARENT, headers::TRACESTATE] {
            if let Some(v) = orig.get(name) {
                h.insert(name, v.as_str());
            }
        }
    }
    let id = format!("dlq:{stream}:{stream_sequence}");
    bus.publish_bytes(&subject, &id, Bytes::copy_from_slice(&msg.payload), h)
        .await
        .map(|_| ())
}
