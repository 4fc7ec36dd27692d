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
//! original is nak'ed instead, so nothing is ever dropped. Slow handlers send progress so the
//! server does not redeliver them; on shutdown the runtime stops pulling and waits (up to a
//! grace period) for what it holds.
//!
//! **Order.** A handler may give each message an ordering key ([`Handler::key`]). Messages with
//! the same key are handled one at a time, in stream order ("lanes"); different keys run in
//! parallel, at most `concurrency` at once. A transient failure of a keyed message is retried
//! in place (the lane waits), because a nak would let the next message of the key overtake it.
//! Handlers of keyed consumers therefore ask only for short retries; the dispatcher moves long
//! ones out of the stream altogether.
//!
//! **Waiting holds no slot.** `concurrency` bounds the handlers *running*: a message waiting
//! for its turn, for its handler's [`Handler::ready`] (a platform's pace) or for a retry in
//! place takes no handler slot, and its ack deadline is kept extended meanwhile. A consumer
//! whose messages wait long (the senders) raises its `MaxAckPending` well above what one key
//! queues, so a waiting key does not stop the server from handing out other keys' messages,
//! and bounds memory with a budget per group ([`ConsumerSpec::group_budget`], a sender's
//! channel): beyond it, a group's messages wait in their lanes as references (the payload is
//! dropped, the stream sequence kept) and are read again from the stream when their turn
//! comes. In every lane the messages in memory come first, so a lane's head never waits for
//! budget held by the messages behind it.
//!
//! **Recovery in order.** After a crash, JetStream redelivers the dead reader's unacked
//! messages only when their ack wait expires, while new messages flow at once, which would
//! reorder a key. So before a partition's reader handles the first message it is given (when it
//! is sure to hold the partition's pin, see [`crate::group`]), and again after a reconnect, an
//! interrupted pull or a gap in the consumer's delivery sequence, it looks at the consumer's
//! range between ack floor and last delivered sequence: in a work-queue stream, a message of
//! the partition still present there is exactly one that was handed out and never
//! acknowledged. Those are handled first, merged in stream order with the message just
//! received; when JetStream redelivers them later, the (idempotent) handler runs again and
//! they are acked.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use patchbay_contract::headers;
use patchbay_contract::topology::ConsumerSpec;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// Infrastructure (NATS, the database) is unavailable: not the message's fault. Retried
    /// without limit, every few seconds at most, and never dead-lettered.
    #[error("unavailable: {reason}")]
    Unavailable {
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

    /// Infrastructure is unavailable.
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        HandlerError::Unavailable {
            reason: reason.to_string(),
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
            BusError::Encoding(_) | BusError::Contract(_) | BusError::TooLarge(_) => {
                HandlerError::reject(e)
            }
            _ => HandlerError::unavailable(e),
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
    /// When the stream stored it (the same on every redelivery, so decisions that depend on
    /// time, such as a messaging window, come out the same).
    pub published_at: DateTime<Utc>,
    /// Which delivery this is (1 for the first).
    pub delivered: u64,
    /// Whether this message may have been handled before: a redelivery, a retry in place, or
    /// a copy recovered after a reader lost track of it (which counts as delivery 1 for
    /// attempts, but was handed out before). `false` only for a message's first delivery.
    pub redelivered: bool,
    /// Its headers.
    pub headers: Option<HeaderMap>,
}

/// A message handler.
pub trait Handler<T>: Send + Sync + 'static {
    /// The ordering key of a message: messages with equal keys are handled one at a time, in
    /// stream order. `None` (the default): no ordering.
    fn key(&self, _payload: &T) -> Option<String> {
        None
    }

    /// The group a message counts against ([`ConsumerSpec::group_budget`]): of one group, a
    /// reader keeps only so many payloads in memory. `None` (the default): no group.
    fn group(&self, _payload: &T) -> Option<String> {
        None
    }

    /// Resolves when the message may be handled (a platform's pace), awaited before every
    /// attempt in the message's lane while no handler slot is taken and the message's ack
    /// deadline is kept extended: a message waiting for its own limits holds nothing other
    /// messages need. The default is ready at once.
    fn ready(&self, _delivery: &Delivery<T>) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// Handles one message. Must be idempotent: a message can arrive more than once.
    fn handle(
        &self,
        delivery: Delivery<T>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Where a message in hand came from.
enum Source {
    /// Delivered to this instance: it acks, naks or terms it.
    Live(Box<jetstream::Message>),
    /// Read from the stream at start (handed to a dead instance): handled, never settled here;
    /// JetStream's redelivery settles it.
    Recovered,
}

/// Messages queued in one lane that keep their payload when the consumer has a group budget:
/// one busy conversation leaves the rest of its group's budget to the others.
const LANE_KEPT: usize = 8;

/// What became of a message waiting as a reference when its turn came.
enum Hydrated {
    /// Its payload is in hand.
    Ready,
    /// It left the stream meanwhile (acknowledged by a previous reader).
    Gone,
    /// The reader is stopping.
    Stopped,
}

/// Longest wait between retries while NATS or the database is unavailable.
const UNAVAILABLE_RETRY_CAP: Duration = Duration::from_secs(5);

struct Work<T> {
    /// `None` while the message waits as a reference (its group had no budget left): read
    /// again from the stream when its turn comes. Moved into the handler's [`Delivery`] by the
    /// first attempt; a retry decodes `raw` again rather than every attempt cloning it.
    payload: Option<T>,
    /// The payload's bytes as stored (a shared reference to the message's buffer); empty
    /// while the message waits as a reference.
    raw: Bytes,
    subject: String,
    headers: Option<HeaderMap>,
    stream_sequence: u64,
    published_at: DateTime<Utc>,
    delivered: u64,
    source: Source,
    /// The handler's ordering key.
    key: Option<String>,
    /// The handler's group, and the budget share this message holds in it.
    group: Option<String>,
    member: Option<Member>,
    _buffered: Option<OwnedSemaphorePermit>,
}

impl<T> Work<T> {
    /// Drops the payload, keeping the message as a reference (its stream sequence); true
    /// when it had one.
    fn park(&mut self) -> bool {
        let had = self.payload.take().is_some();
        self.raw = Bytes::new();
        self.headers = None;
        if let Source::Live(m) = &mut self.source {
            m.message.payload = Bytes::new();
            m.message.headers = None;
        }
        if let Some(m) = &mut self.member {
            m.permit = None;
        }
        had
    }
}

/// The groups of one partition's reader: how many of each group's messages it holds, and
/// the budget of payloads kept in memory ([`ConsumerSpec::group_budget`]).
type Groups = Arc<Mutex<HashMap<String, Group>>>;

struct Group {
    budget: Arc<Semaphore>,
    works: usize,
}

/// A message's place in its group; the group is forgotten when its last message leaves.
struct Member {
    groups: Groups,
    name: String,
    budget: Arc<Semaphore>,
    /// Held while the message's payload is in memory.
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.permit = None;
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = groups.get_mut(&self.name) {
            g.works = g.works.saturating_sub(1);
            if g.works == 0 {
                groups.remove(&self.name);
            }
        }
    }
}

struct Runner<T, H> {
    bus: Bus,
    spec: ConsumerSpec,
    /// This partition's durable consumer and filter.
    durable: String,
    filter: String,
    handler: Arc<H>,
    running: Arc<Semaphore>,
    lanes: Mutex<HashMap<String, VecDeque<Work<T>>>>,
    /// Stream sequences of live messages this instance holds (queued or in flight).
    held: Mutex<std::collections::HashSet<u64>>,
    groups: Groups,
    /// Lanes whose message in hand waits as a reference.
    reference_heads: Mutex<std::collections::HashSet<String>>,
    shutdown: CancellationToken,
}

/// The priority group every partition consumer pins its reader in.
pub(crate) const PIN_GROUP: &str = "patchbay";

/// How long a pull request waits on the server; well below the pin timeout, so a reader that
/// keeps pulling keeps its pin.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// One partition of a consumer group, as the group runs it.
pub(crate) struct PartitionRun<H> {
    pub(crate) bus: Bus,
    pub(crate) spec: ConsumerSpec,
    pub(crate) partition: u32,
    /// How long a silent reader keeps its pin (see [`crate::group`]).
    pub(crate) pin_timeout: Duration,
    /// Shared by the partitions of one group in this process.
    pub(crate) running: Arc<Semaphore>,
    pub(crate) handler: Arc<H>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) grace: Duration,
    /// Set once the server delivered a message to this reader (it holds the pin).
    pub(crate) delivering: Arc<std::sync::atomic::AtomicBool>,
}

/// Runs one partition's durable pull consumer until `shutdown`, then waits up to `grace` for
/// the messages in hand. The consumer is created, or updated, first.
///
/// Before it handles the first message it is given (the moment it is sure to hold the pin),
/// and again after a reconnect, an interrupted pull or a gap in the consumer's delivery
/// sequence, it handles the messages that were handed out and never acknowledged first, in
/// stream order, merged with the message just received.
pub(crate) async fn run_partition<T, H>(run: PartitionRun<H>) -> Result<(), BusError>
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
    H: Handler<T>,
{
    let PartitionRun {
        bus,
        spec,
        partition,
        pin_timeout,
        running,
        handler,
        shutdown,
        grace,
        delivering,
    } = run;
    let durable = spec.partition_durable(partition);
    let filter = spec.partition_filter(partition);
    let mut consumer = tokio::select! {
        c = create_consumer(&bus, &spec, &durable, &filter, pin_timeout) => c?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let batch = running.available_permits().max(1);
    let runner = Arc::new(Runner {
        bus: bus.clone(),
        spec,
        durable,
        filter,
        handler,
        running,
        lanes: Mutex::new(HashMap::new()),
        held: Mutex::default(),
        groups: Arc::default(),
        reference_heads: Mutex::default(),
        shutdown: shutdown.clone(),
    });
    // Queued messages are kept ours while they wait their turn (the one in hand sends its own
    // progress).
    let kept = CancellationToken::new();
    let _kept = kept.clone().drop_guard();
    tokio::spawn(runner.clone().keep_queued(kept));
    // The server never hands out more than `max_ack_pending` unacknowledged messages, so this
    // bound is reached only then: the loop keeps pulling (and keeps its pin) otherwise.
    let bound = usize::try_from(runner.spec.max_ack_pending.max(1)).unwrap_or(1000) + batch;
    let buffered = Arc::new(Semaphore::new(bound));
    let mut tasks = JoinSet::new();

    let mut connections = bus.connections();
    let mut last_consumer_seq: u64 = 0;
    let mut recover_first = true;
    tracing::debug!(consumer = runner.durable, filter = %runner.filter, "partition started");

    'outer: while !shutdown.is_cancelled() {
        let mut messages = match consumer
            .stream()
            .group(PIN_GROUP)
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(2))
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = runner.durable, error = %e, "cannot pull; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        loop {
            let permit = tokio::select! {
                p = buffered.clone().acquire_owned() => match p {
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
            // After a reconnect, messages that were in transit are pending on the server and
            // would come back only after their ack wait: handle them before anything newer.
            if bus.connections() != connections {
                connections = bus.connections();
                recover_first = true;
            }
            match next {
                Some(Ok(msg)) => {
                    delivering.store(true, std::sync::atomic::Ordering::Relaxed);
                    let (stream_sequence, consumer_sequence, delivered, published_at) =
                        match msg.info() {
                            Ok(i) => (
                                i.stream_sequence,
                                i.consumer_sequence,
                                u64::try_from(i.delivered).unwrap_or(1),
                                i.published.with_timezone(&Utc),
                            ),
                            Err(_) => (0, 0, 1, Utc::now()),
                        };
                    // Every delivery of this consumer goes to this reader while it holds the
                    // pin: a gap in the delivery sequence is a delivery lost in transit (a
                    // leader change, a reconnect).
                    if last_consumer_seq > 0 && consumer_sequence > last_consumer_seq + 1 {
                        recover_first = true;
                    }
                    last_consumer_seq = last_consumer_seq.max(consumer_sequence);
                    runner.hold(stream_sequence);
                    let mut batch = if std::mem::take(&mut recover_first) {
                        runner.recover(&mut consumer).await
                    } else {
                        Vec::new()
                    };
                    match serde_json::from_slice::<T>(&msg.payload) {
                        Ok(payload) => {
                            let key = runner.handler.key(&payload);
                            let group = runner.handler.group(&payload);
                            batch.push(Work {
                                payload: Some(payload),
                                raw: msg.payload.clone(),
                                subject: unpartitioned(&msg.subject),
                                headers: msg.headers.clone(),
                                stream_sequence,
                                published_at,
                                delivered,
                                key,
                                group,
                                member: None,
                                source: Source::Live(Box::new(msg)),
                                _buffered: Some(permit),
                            });
                        }
                        Err(e) => {
                            let runner = runner.clone();
                            tasks.spawn(async move {
                                let reason = format!("malformed payload: {e}");
                                runner
                                    .reject(&msg, stream_sequence, delivered, &reason)
                                    .await;
                                runner.release(stream_sequence);
                                drop(permit);
                            });
                        }
                    }
                    if batch.len() > 1 {
                        tracing::info!(
                            consumer = runner.durable,
                            messages = batch.len() - 1,
                            "re-handling unacknowledged messages first, in order"
                        );
                    }
                    batch.sort_by_key(|w| w.stream_sequence);
                    for work in batch {
                        runner.enqueue(work, &mut tasks);
                    }
                }
                Some(Err(e)) => {
                    // A pull cut short (leader change, missed heartbeats, reconnect) may have
                    // lost messages in transit: recover them before anything newer.
                    tracing::debug!(consumer = runner.durable, error = %e, "pull interrupted");
                    drop(permit);
                    recover_first = true;
                }
                None => {
                    drop(permit);
                    recover_first = true;
                    continue 'outer;
                }
            }
        }
    }

    let deadline = Instant::now() + grace;
    while !tasks.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, tasks.join_next()).await.is_err() {
            tracing::warn!(
                consumer = runner.durable,
                unfinished = tasks.len(),
                "grace period over; unfinished messages will be redelivered"
            );
            tasks.abort_all();
            break;
        }
    }
    tracing::debug!(consumer = runner.durable, "partition stopped");
    Ok(())
}

/// The subject as its publisher named it: the stream's partition token (the one before the
/// last) removed, e.g. `pb.dispatch.3.bot_1` → `pb.dispatch.bot_1`.
pub fn unpartitioned(subject: &str) -> String {
    let mut tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() >= 3 {
        tokens.remove(tokens.len() - 2);
    }
    tokens.join(".")
}

impl<T, H> Runner<T, H>
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
    H: Handler<T>,
{
    /// Notes that this instance holds the live message at `seq`.
    fn hold(&self, seq: u64) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq);
    }

    fn release(&self, seq: u64) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq);
    }

    fn holds(&self, seq: u64) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&seq)
    }

    /// Messages of this partition with stream sequences in `from..=to` that are still in the
    /// (work-queue) stream and not held here: handed out and never acknowledged.
    async fn unacked_in(&self, from: u64, to: u64) -> Vec<Work<T>> {
        let stream_name = self.bus.subjects().stream(self.spec.stream);
        let Ok(stream) = self.bus.jetstream().get_stream(&stream_name).await else {
            return Vec::new();
        };
        let limit = usize::try_from(self.spec.max_ack_pending.max(1))
            .unwrap_or(1000)
            .saturating_mul(2);
        let mut out = Vec::new();
        // Payloads kept per group; the rest of a group's messages are kept as references.
        let mut kept: HashMap<String, usize> = HashMap::new();
        let mut seq = from;
        while seq <= to && out.len() < limit {
            // What this reader holds needs no reading (a sender may hold thousands of waiting
            // messages in a row).
            if self.holds(seq) {
                seq += 1;
                continue;
            }
            // The next message of this partition at or after `seq` (only its own messages are
            // read, whatever else the stream holds).
            let Ok(m) = stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(self.filter.clone())
                .send()
                .await
            else {
                break;
            };
            if m.sequence > to {
                break;
            }
            seq = m.sequence + 1;
            if self.holds(m.sequence) {
                continue;
            }
            let Ok(payload) = serde_json::from_slice::<T>(&m.payload) else {
                // Its live delivery dead-letters it.
                continue;
            };
            let key = self.handler.key(&payload);
            let group = self.handler.group(&payload);
            let mut work = Work {
                payload: Some(payload),
                raw: m.payload.clone(),
                subject: unpartitioned(&m.subject),
                headers: Some(m.headers.clone()),
                stream_sequence: m.sequence,
                published_at: m.time.with_timezone(&Utc),
                delivered: 1,
                source: Source::Recovered,
                key,
                group,
                member: None,
                _buffered: None,
            };
            if let (Some(budget), Some(group)) = (self.spec.group_budget, &work.group) {
                let n = kept.entry(group.clone()).or_default();
                if *n < budget {
                    *n += 1;
                } else if work.park() {
                    metrics::counter!("patchbay_consumer_parked_total", "consumer" => self.spec.durable)
                        .increment(1);
                }
            }
            out.push(work);
        }
        out
    }

    /// Messages handed out earlier (to this reader or a previous one) and never
    /// acknowledged, in stream order.
    async fn recover(
        &self,
        consumer: &mut jetstream::consumer::Consumer<pull::Config>,
    ) -> Vec<Work<T>> {
        // Right after a node failure the consumer may be electing a new leader: keep asking
        // for a little while before giving up on recovery.
        let mut info = None;
        for attempt in 0..25u32 {
            match consumer.info().await {
                Ok(i) => {
                    info = Some((i.ack_floor.stream_sequence, i.delivered.stream_sequence));
                    break;
                }
                Err(e) => {
                    tracing::debug!(consumer = self.durable, attempt, error = %e, "no consumer info yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let Some((floor, last)) = info else {
            tracing::warn!(
                consumer = self.durable,
                "no consumer info; recovery skipped, unacked messages return after their ack wait"
            );
            return Vec::new();
        };
        if last <= floor {
            return Vec::new();
        }
        self.unacked_in(floor + 1, last).await
    }

    fn enqueue(self: &Arc<Self>, mut work: Work<T>, tasks: &mut JoinSet<()>) {
        if let Some(key) = work.key.clone() {
            return self.enqueue_keyed(key, work, tasks);
        }
        self.admit(&mut work, false);
        let runner = self.clone();
        tasks.spawn(async move { runner.run_one(work).await });
    }

    fn enqueue_keyed(self: &Arc<Self>, key: String, mut work: Work<T>, tasks: &mut JoinSet<()>) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = lanes.get_mut(&key) {
            let behind_reference = match queue.back() {
                Some(w) => w.payload.is_none() || queue.len() >= LANE_KEPT,
                None => self.reference_head(&key, None),
            };
            self.admit(&mut work, behind_reference);
            queue.push_back(work);
            return;
        }
        self.admit(&mut work, false);
        if work.payload.is_none() {
            self.reference_head(&key, Some(true));
        }
        lanes.insert(key.clone(), VecDeque::new());
        drop(lanes);
        let runner = self.clone();
        tasks.spawn(async move { runner.run_lane(key, work).await });
    }

    async fn run_lane(self: Arc<Self>, key: String, first: Work<T>) {
        let mut work = first;
        loop {
            self.run_one(work).await;
            self.reference_head(&key, Some(false));
            if self.shutdown.is_cancelled() {
                // Stopping: the message just handled may have been left unsettled (nak'ed
                // because NATS or the database was unavailable); handling the next ones would
                // let them overtake it. Leave the rest of the lane, in order, to the next
                // reader (redelivery, or its recovery of unacked messages).
                let rest = {
                    let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
                    lanes.remove(&key).unwrap_or_default()
                };
                Box::pin(self.abandon(rest)).await;
                return;
            }
            let next = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
                match lanes.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(w) => {
                        if w.payload.is_none() {
                            self.reference_head(&key, Some(true));
                        }
                        w
                    }
                    None => {
                        lanes.remove(&key);
                        return;
                    }
                }
            };
            work = next;
        }
    }

    /// Whether the message in hand of lane `key` waits as a reference (for budget, or to be
    /// read back); `Some` sets it first. Set and read under the lanes' lock, so a message
    /// queued behind such a head takes no budget before it (see [`Runner::admit`]).
    fn reference_head(&self, key: &str, set: Option<bool>) -> bool {
        let mut heads = self
            .reference_heads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match set {
            Some(true) => heads.insert(key.to_owned()),
            Some(false) => heads.remove(key),
            None => heads.contains(key),
        }
    }

    /// Gives queued messages back to the server unhandled (a nak: redelivered at once, to
    /// whichever reader holds the partition next).
    async fn abandon(&self, rest: VecDeque<Work<T>>) {
        for w in rest {
            if let Source::Live(m) = &w.source {
                let _ = m.ack_with(AckKind::Nak(None)).await;
                self.release(w.stream_sequence);
            }
        }
    }

    /// Gives `work` its place in its group ([`ConsumerSpec::group_budget`]): it keeps its
    /// payload while the group has budget left and the message before it in its lane kept
    /// its own, among at most [`LANE_KEPT`] (`behind_reference` false), so that in every lane
    /// the messages in memory come first and a lane's head never waits for budget held by the
    /// messages behind it. Else it waits as a reference, its payload read again when its turn
    /// comes.
    fn admit(&self, work: &mut Work<T>, behind_reference: bool) {
        let (Some(size), Some(name)) = (self.spec.group_budget, work.group.clone()) else {
            return;
        };
        let budget = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            let group = groups.entry(name.clone()).or_insert_with(|| Group {
                budget: Arc::new(Semaphore::new(size)),
                works: 0,
            });
            group.works += 1;
            group.budget.clone()
        };
        let permit = if work.payload.is_some() && !behind_reference {
            budget.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let keep = permit.is_some();
        work.member = Some(Member {
            groups: self.groups.clone(),
            name,
            budget,
            permit,
        });
        if !keep && work.park() {
            metrics::counter!("patchbay_consumer_parked_total", "consumer" => self.spec.durable)
                .increment(1);
        }
    }

    /// Makes sure `work` has its payload: a message waiting as a reference waits for its
    /// group's budget, then is read again from the stream.
    async fn hydrate(&self, work: &mut Work<T>) -> Hydrated {
        if work.payload.is_some() {
            return Hydrated::Ready;
        }
        if let Some(budget) = work.member.as_ref().map(|m| m.budget.clone()) {
            let permit = tokio::select! {
                p = self.holding(work, budget.acquire_owned()) => p.ok(),
                () = self.shutdown.cancelled() => return Hydrated::Stopped,
            };
            if let Some(m) = &mut work.member {
                m.permit = permit;
            }
        }
        let stream_name = self.bus.subjects().stream(self.spec.stream);
        let mut delay = Duration::from_millis(200);
        loop {
            let read = async {
                let stream = self
                    .bus
                    .jetstream()
                    .get_stream_no_info(&stream_name)
                    .await
                    .map_err(|e| e.to_string())?;
                match stream.get_raw_message(work.stream_sequence).await {
                    Ok(m) => Ok(Some(m)),
                    Err(e)
                        if e.kind()
                            == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e.to_string()),
                }
            };
            match self.holding(work, read).await {
                Ok(Some(m)) => match serde_json::from_slice::<T>(&m.payload) {
                    Ok(payload) => {
                        work.payload = Some(payload);
                        work.raw = m.payload.clone();
                        // A dead-letter copy is made from the message as delivered.
                        if let Source::Live(live) = &mut work.source {
                            live.message.payload = m.payload.clone();
                            live.message.headers = Some(m.headers.clone());
                        }
                        work.headers = Some(m.headers);
                        return Hydrated::Ready;
                    }
                    Err(e) => {
                        // It was decoded when it arrived; a stream that changed under it
                        // leaves it to its redelivery.
                        tracing::warn!(consumer = self.durable, seq = work.stream_sequence, error = %e, "message read again is malformed");
                        return Hydrated::Gone;
                    }
                },
                // Acknowledged meanwhile (by a previous reader): nothing left to do.
                Ok(None) => return Hydrated::Gone,
                Err(e) => {
                    tracing::warn!(consumer = self.durable, seq = work.stream_sequence, error = %e, "cannot read a waiting message; retrying");
                    let sleep = tokio::time::sleep(delay);
                    tokio::select! {
                        () = self.holding(work, sleep) => {}
                        () = self.shutdown.cancelled() => return Hydrated::Stopped,
                    }
                    delay = (delay * 2).min(UNAVAILABLE_RETRY_CAP);
                }
            }
        }
    }

    /// Awaits `fut` while keeping `work` ours (progress acks, if it is live).
    async fn holding<F: Future>(&self, work: &Work<T>, fut: F) -> F::Output {
        tokio::pin!(fut);
        // Most waits are over at once (a free slot, no pace): no timer for those.
        if let std::task::Poll::Ready(r) = futures::poll!(&mut fut) {
            return r;
        }
        let mut progress = tokio::time::interval(self.spec.ack_wait / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                r = &mut fut => return r,
                _ = progress.tick() => {
                    if let Source::Live(m) = &work.source {
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
    }

    /// Keeps the messages queued in lanes ours while they wait their turn, until `stop`.
    async fn keep_queued(self: Arc<Self>, stop: CancellationToken) {
        let mut progress = tokio::time::interval(self.spec.ack_wait / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                _ = progress.tick() => {}
                () = stop.cancelled() => return,
            }
            let queued: Vec<jetstream::Message> = {
                let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
                lanes
                    .values()
                    .flatten()
                    .filter_map(|w| match &w.source {
                        Source::Live(m) => Some(m.as_ref().clone()),
                        Source::Recovered => None,
                    })
                    .collect()
            };
            for m in queued {
                let _ = m.ack_with(AckKind::Progress).await;
            }
        }
    }

    async fn run_one(&self, mut work: Work<T>) {
        let spec = &self.spec;
        let started = Instant::now();
        // The rare paths (a reference read back, a retry in place, a dead letter) are boxed:
        // inline, their futures would make every message's task several kilobytes, copied
        // when it is spawned and when it finishes.
        let hydrated = if work.payload.is_some() {
            Hydrated::Ready
        } else {
            Box::pin(self.hydrate(&mut work)).await
        };
        let unread = match hydrated {
            Hydrated::Ready => None,
            Hydrated::Gone => Some("gone"),
            Hydrated::Stopped => {
                // Left, in order, to the next reader.
                if let Source::Live(m) = &work.source {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
                Some("abandoned")
            }
        };
        if let Some(label) = unread {
            if let Source::Live(_) = work.source {
                self.release(work.stream_sequence);
            }
            metrics::counter!("patchbay_consumer_messages_total", "consumer" => spec.durable, "outcome" => label)
                .increment(1);
            return;
        }
        let span = tracing::info_span!(
            "process",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation = "process",
            messaging.destination.name = %work.subject,
            messaging.consumer.group.name = spec.durable,
            messaging.message.id = tracing::field::Empty,
            delivered = work.delivered,
        );
        crate::trace::set_parent(&span, work.headers.as_ref());
        if let Some(id) = work.headers.as_ref().and_then(|h| h.get(headers::MSG_ID)) {
            span.record("messaging.message.id", id.as_str());
        }
        let label = self.attempts(&mut work).instrument(span).await;
        if let Source::Live(_) = work.source {
            self.release(work.stream_sequence);
        }
        metrics::counter!("patchbay_consumer_messages_total", "consumer" => spec.durable, "outcome" => label)
            .increment(1);
        metrics::histogram!("patchbay_consumer_handle_seconds", "consumer" => spec.durable)
            .record(started.elapsed().as_secs_f64());
    }

    /// Handles `work`, retrying keyed messages in place, and settles it. Returns the outcome
    /// label for metrics.
    async fn attempts(&self, work: &mut Work<T>) -> &'static str {
        let spec = &self.spec;
        let mut attempt = work.delivered;
        loop {
            let outcome = self.attempt(work, attempt).await;
            let live = match &work.source {
                Source::Live(m) => m,
                Source::Recovered => {
                    // Retried in place like a live keyed message: the messages after it in
                    // its lane must not overtake it. Right after a failure (which is when
                    // recovery happens) the next stream may well be unavailable for a while.
                    let delay = match &outcome {
                        Ok(()) => return "recovered",
                        Err(_) if self.shutdown.is_cancelled() => return "recovery_failed",
                        Err(HandlerError::Unavailable { .. }) => {
                            spec.backoff_for(attempt).min(UNAVAILABLE_RETRY_CAP)
                        }
                        Err(HandlerError::Retry { after, .. })
                            if attempt < u64::from(spec.max_attempts) =>
                        {
                            attempt += 1;
                            after.unwrap_or_else(|| spec.backoff_for(attempt))
                        }
                        // Its live redelivery dead-letters it.
                        Err(_) => return "recovery_failed",
                    };
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = self.shutdown.cancelled() => return "recovery_failed",
                    }
                }
            };
            match outcome {
                Ok(()) => {
                    if let Err(e) = live.ack().await {
                        tracing::warn!(error = %e, "ack failed; message will be redelivered");
                    }
                    return "ack";
                }
                Err(HandlerError::Unavailable { reason }) => {
                    // Not the message's fault: retry without counting, every few seconds.
                    let delay = spec.backoff_for(attempt).min(UNAVAILABLE_RETRY_CAP);
                    tracing::warn!(%reason, delay_ms = delay.as_millis() as u64, "infrastructure unavailable; retrying");
                    if work.key.is_none() {
                        let _ = live.ack_with(AckKind::Nak(Some(delay))).await;
                        return "unavailable";
                    }
                    if !Box::pin(self.wait_in_place(live, delay)).await {
                        let _ = live.ack_with(AckKind::Nak(None)).await;
                        return "unavailable";
                    }
                    metrics::counter!("patchbay_consumer_messages_total", "consumer" => spec.durable, "outcome" => "unavailable").increment(1);
                }
                Err(HandlerError::Retry { reason, after })
                    if attempt < u64::from(spec.max_attempts) =>
                {
                    let delay = after.unwrap_or_else(|| spec.backoff_for(attempt));
                    tracing::info!(%reason, delay_ms = delay.as_millis() as u64, attempt, "retrying later");
                    if work.key.is_none() {
                        let _ = live.ack_with(AckKind::Nak(Some(delay))).await;
                        return "retry";
                    }
                    if !Box::pin(self.wait_in_place(live, delay)).await {
                        let _ = live.ack_with(AckKind::Nak(None)).await;
                        return "retry";
                    }
                    metrics::counter!("patchbay_consumer_messages_total", "consumer" => spec.durable, "outcome" => "retry_in_place").increment(1);
                    attempt += 1;
                }
                Err(e) => {
                    let reason = match e {
                        HandlerError::Retry { reason, .. } => {
                            format!("gave up after {attempt} attempts: {reason}")
                        }
                        HandlerError::Reject { reason } | HandlerError::Unavailable { reason } => {
                            reason
                        }
                    };
                    return Box::pin(self.reject(live, work.stream_sequence, attempt, &reason))
                        .await;
                }
            }
        }
    }

    /// Runs the handler once, sending progress while it waits and works and catching panics.
    /// It first waits until the handler says the message is ready, then for a handler slot:
    /// neither wait takes a slot.
    async fn attempt(&self, work: &mut Work<T>, attempt: u64) -> Result<(), HandlerError> {
        let payload = match work.payload.take() {
            Some(p) => p,
            // A later attempt: decoded again (it decoded when it arrived).
            None => serde_json::from_slice::<T>(&work.raw)
                .map_err(|_| HandlerError::unavailable("message not read back"))?,
        };
        let work = &*work;
        let delivery = Delivery {
            payload,
            subject: work.subject.clone(),
            stream_sequence: work.stream_sequence,
            published_at: work.published_at,
            delivered: attempt,
            redelivered: attempt > 1 || matches!(work.source, Source::Recovered),
            headers: work.headers.clone(),
        };
        let ready = AssertUnwindSafe(self.handler.ready(&delivery)).catch_unwind();
        // A message that is ready is handled even while stopping (the lane finishes the
        // message in hand); one still waiting is left to the next reader.
        tokio::select! {
            biased;
            r = self.holding(work, ready) => {
                if r.is_err() {
                    return Err(HandlerError::retry("handler panicked"));
                }
            }
            () = self.shutdown.cancelled() => return Err(HandlerError::unavailable("stopping")),
        }
        let Ok(_slot) = self
            .holding(work, self.running.clone().acquire_owned())
            .await
        else {
            return Err(HandlerError::unavailable("stopping"));
        };
        // Boxed: a handler's future (its statements, its publishes) is large, and inline it
        // would make every message's task as large, copied when spawned and when finished.
        let handling = AssertUnwindSafe(Box::pin(self.handler.handle(delivery))).catch_unwind();
        self.holding(work, handling)
            .await
            .unwrap_or_else(|_| Err(HandlerError::retry("handler panicked")))
    }

    /// Waits `delay` holding the message (progress keeps it ours); false on shutdown.
    async fn wait_in_place(&self, msg: &jetstream::Message, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let mut progress = tokio::time::interval(self.spec.ack_wait / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                () = self.shutdown.cancelled() => return false,
                _ = progress.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }
        }
    }

    /// Dead-letters `msg` with `reason` and terminates it; if the copy cannot be stored, naks.
    async fn reject(
        &self,
        msg: &jetstream::Message,
        stream_sequence: u64,
        delivered: u64,
        reason: &str,
    ) -> &'static str {
        let spec = &self.spec;
        let copy = DeadLetter {
            consumer: spec.durable,
            stream: self.bus.subjects().stream(spec.stream),
            subject: unpartitioned(&msg.subject),
            stream_sequence,
            delivered,
            reason: reason.to_owned(),
            payload: msg.payload.clone(),
            headers: msg.headers.clone(),
        };
        match copy.store(&self.bus).await {
            Ok(()) => {
                tracing::warn!(%reason, "dead-lettered");
                let _ = msg.ack_with(AckKind::Term).await;
                "dead_letter"
            }
            Err(err) => {
                tracing::error!(%reason, error = %err, "cannot store dead letter; will retry");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(spec.backoff_for(delivered))))
                    .await;
                "retry"
            }
        }
    }
}

async fn create_consumer(
    bus: &Bus,
    spec: &ConsumerSpec,
    durable: &str,
    filter: &str,
    pin_timeout: Duration,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
    let stream_name = bus.subjects().stream(spec.stream);
    let config = pull::Config {
        durable_name: Some(durable.to_owned()),
        filter_subject: filter.to_owned(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // Unlimited: the runtime dead-letters after `max_attempts` failures of the message
        // itself, and retries infrastructure outages for as long as they last.
        max_deliver: -1,
        max_ack_pending: spec.max_ack_pending,
        // One reader at a time: the server pins the first puller and delivers only to it
        // until it stops pulling for `pin_timeout` or is unpinned.
        priority_policy: jetstream::consumer::PriorityPolicy::PinnedClient,
        priority_groups: vec![PIN_GROUP.to_owned()],
        priority_timeout: pin_timeout,
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
                tracing::debug!(consumer = durable, attempt, error = %e, "creating consumer failed; retrying");
                last = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(BusError::Setup(format!(
        "consumer {durable} on {stream_name}: {last}"
    )))
}

/// A dead-letter copy of a message, stored on `<p>.dlq.<consumer>` with the reason and where
/// the message came from in `Pb-Dlq-*` headers.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The durable consumer that gave up.
    pub consumer: &'static str,
    /// The stream the message came from.
    pub stream: String,
    /// The subject it was published on.
    pub subject: String,
    /// Its sequence in that stream (0 when not known).
    pub stream_sequence: u64,
    /// How many times it was attempted.
    pub delivered: u64,
    /// Why it was given up.
    pub reason: String,
    /// The payload, unchanged.
    pub payload: Bytes,
    /// The original headers (trace context is kept).
    pub headers: Option<HeaderMap>,
}

impl DeadLetter {
    /// Stores the copy. Its `Nats-Msg-Id` is `dlq:<stream>:<seq>` (or the given id), so storing
    /// it twice keeps one copy.
    pub async fn store(&self, bus: &Bus) -> Result<(), BusError> {
        self.store_with_id(
            bus,
            &format!("dlq:{}:{}", self.stream, self.stream_sequence),
        )
        .await
    }

    /// [`DeadLetter::store`] with an explicit de-duplication id.
    pub async fn store_with_id(&self, bus: &Bus, id: &str) -> Result<(), BusError> {
        // Keyed by the bot or channel the message was for (its subject's last token), which
        // bounds each key's dead letters.
        let key = self
            .subject
            .rsplit('.')
            .next()
            .filter(|k| !k.is_empty() && !k.contains(['*', '>']))
            .unwrap_or("_");
        let subject = bus.subjects().dlq(self.consumer, key)?;
        let mut h = HeaderMap::new();
        // Header values cannot hold newlines.
        let reason: String = self
            .reason
            .chars()
            .take(1000)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        h.insert(headers::DLQ_REASON, reason.as_str());
        h.insert(headers::DLQ_CONSUMER, self.consumer);
        h.insert(headers::DLQ_SUBJECT, self.subject.as_str());
        h.insert(headers::DLQ_STREAM, self.stream.as_str());
        h.insert(
            headers::DLQ_STREAM_SEQ,
            self.stream_sequence.to_string().as_str(),
        );
        h.insert(headers::DLQ_DELIVERIES, self.delivered.to_string().as_str());
        h.insert(headers::DLQ_AT, chrono::Utc::now().to_rfc3339().as_str());
        if let Some(orig) = &self.headers {
            for name in [headers::TRACEPARENT, headers::TRACESTATE] {
                if let Some(v) = orig.get(name) {
                    h.insert(name, v.as_str());
                }
            }
        }
        match bus
            .publish_bytes(&subject, id, self.payload.clone(), h.clone())
            .await
        {
            // The original fitted, the copy with its `Pb-Dlq-*` headers does not: keep what
            // fits, marked, rather than nak the original into a loop that never ends.
            Err(BusError::TooLarge(_)) => {
                let room = bus
                    .client()
                    .server_info()
                    .max_payload
                    .saturating_sub(DLQ_HEADROOM);
                let kept = self.payload.len().min(room);
                h.insert(
                    headers::DLQ_TRUNCATED,
                    self.payload.len().to_string().as_str(),
                );
                tracing::warn!(
                    bytes = self.payload.len(),
                    kept,
                    "dead letter too large for the bus: its payload is kept truncated"
                );
                bus.publish_bytes(&subject, id, self.payload.slice(..kept), h)
                    .await
                    .map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }
}

/// Room left for the subject and the headers when a dead letter's payload is truncated to fit
/// the server's `max_payload` (the headers are at most about 1.5 KiB: a reason of 1,000
/// characters, the subject, ids and trace context).
const DLQ_HEADROOM: usize = 4096;

#[cfg(test)]
mod tests {
    use super::unpartitioned;

    #[test]
    fn handlers_see_the_subject_their_publisher_used() {
        assert_eq!(unpartitioned("pb.dispatch.3.bot_1"), "pb.dispatch.bot_1");
        assert_eq!(
            unpartitioned("pb.ingress.telegram.0.ch_1"),
            "pb.ingress.telegram.ch_1"
        );
    }
}
