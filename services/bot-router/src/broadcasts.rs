//! Broadcasts (`/v1/broadcasts`): stored, expanded into one recipient row each, and released
//! into the send path a window at a time.
//!
//! * **Stored first.** `POST /v1/broadcasts` answers once the broadcast's row is committed.
//! * **Queued durably.** The replica driving a broadcast stores its audience a page of users
//!   at a time (in user id order, from where it stopped), each page and the position in one
//!   transaction: a crash repeats nothing and skips nothing.
//! * **Released a window at a time.** At most `PATCHBAY_BROADCAST_WINDOW` recipients are
//!   between the send path and an outcome. Each release marks its recipients `released` and
//!   then publishes a [`SendCommand`] per recipient whose id derives from the broadcast and
//!   the user (on a platform with a bulk call, one for up to a call's recipients of a channel,
//!   each user's messages still identified as if they had their own), so a release repeated
//!   after a crash (the next owner republishes whatever is `released`) is dropped as a
//!   duplicate by JetStream, by the router's stored messages and by the sender's record of
//!   what it sent: each recipient gets the message once.
//! * **Driven by one replica.** Replicas claim broadcasts with a lease in PostgreSQL
//!   (`for update skip locked`), renewed every step; a replica that stops renewing loses its
//!   broadcasts to another after [`LEASE`].
//! * **Counted by the database.** Statuses and receipts move each recipient forward
//!   ([`Outcome`]); triggers keep the broadcast's counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use patchbay_contract::broadcasts::{
    Audience, Broadcast, BroadcastAction, BroadcastCounts, BroadcastOp, BroadcastPage,
    BroadcastRequest, BroadcastSpec, BroadcastState, BroadcastSummary, CANCELLED, OPTED_OUT,
    UNSUBSCRIBED,
};
use patchbay_contract::ids::{hashed_id, message_ids, prefix};
use patchbay_contract::{EventType, Recipient, RpcError, SendCommand, SendSource, TenantEvent, V1};
use patchbay_runtime::BoxError;
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::Router;

/// A recipient's failure code when the router could not take its message at all (the bot or
/// its channel disabled, the user gone).
pub(crate) const UNDELIVERABLE: &str = "undeliverable";

/// How long a replica's claim on a broadcast lasts without renewal.
const LEASE: std::time::Duration = std::time::Duration::from_secs(15);

/// How often a replica steps its broadcasts (and looks for others to drive).
const STEP: std::time::Duration = std::time::Duration::from_millis(250);

/// Broadcasts one replica drives at once.
const CLAIM: i64 = 16;

/// Users stored per statement (the pages follow each other at once).
const QUEUE_PAGE: i64 = 50_000;

/// Queued recipients of a cancelled broadcast skipped per step (one page every [`STEP`]: the
/// cancel itself took effect at once, this is bookkeeping, which must not crowd out the
/// conversations' statements; a million take about 25 s).
const SKIP_PAGE: i64 = 10_000;

/// A broadcast's answer: one, or a page.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Answer {
    One(Box<Broadcast>),
    Page(BroadcastPage),
}

fn unavailable(e: &dyn std::fmt::Display) -> RpcError {
    tracing::error!(error = %e, "broadcast storage failed");
    RpcError::new(503, "unavailable", "the database is unavailable")
}

fn not_found(id: &str) -> RpcError {
    RpcError::new(404, "not_found", format!("no broadcast {id}"))
}

/// The recipient of a broadcast's message learned from its status or a receipt.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub broadcast_id: String,
    pub user_id: String,
    pub message_id: String,
    /// `sent`, `delivered`, `read`, `failed` or `skipped`.
    pub state: &'static str,
    pub reason: Option<String>,
}

impl Outcome {
    /// The outcome `state` of a message of `source`/`source_id` for `user_id` (`None` when it
    /// is not a broadcast's), with `error`'s code as the reason.
    pub(crate) fn of(
        source: Option<SendSource>,
        source_id: Option<&str>,
        user_id: &str,
        message_id: &str,
        state: &'static str,
        error: Option<&str>,
    ) -> Option<Self> {
        if source != Some(SendSource::Broadcast) {
            return None;
        }
        let broadcast_id = source_id?.to_owned();
        Some(Self {
            broadcast_id,
            user_id: user_id.to_owned(),
            message_id: message_id.to_owned(),
            state,
            reason: error.map(str::to_owned),
        })
    }
}

impl Outcome {
    /// `user_id`'s failure as a recipient of broadcast `broadcast_id` when the router could
    /// not take their message at all ([`UNDELIVERABLE`]).
    pub(crate) fn undeliverable(broadcast_id: &str, user_id: &str) -> Self {
        Self {
            broadcast_id: broadcast_id.to_owned(),
            user_id: user_id.to_owned(),
            message_id: String::new(),
            state: "failed",
            reason: Some(UNDELIVERABLE.into()),
        }
    }
}

/// Moves recipients to their outcomes (one statement for a batch; see `broadcast_outcomes`).
pub(crate) async fn record_outcomes(
    pool: &PgPool,
    batch: Vec<Outcome>,
) -> Result<Vec<()>, sqlx::Error> {
    let n = batch.len();
    let mut b = Vec::with_capacity(n);
    let mut u = Vec::with_capacity(n);
    let mut m = Vec::with_capacity(n);
    let mut s = Vec::with_capacity(n);
    let mut r = Vec::with_capacity(n);
    for o in batch {
        b.push(o.broadcast_id);
        u.push(o.user_id);
        m.push(o.message_id);
        s.push(o.state.to_owned());
        r.push(o.reason);
    }
    sqlx::query("select broadcast_outcomes($1, $2, $3, $4, $5)")
        .bind(&b)
        .bind(&u)
        .bind(&m)
        .bind(&s)
        .bind(&r)
        .execute(pool)
        .await?;
    Ok(vec![(); n])
}

/// The id of the send command of `user_id`'s message of broadcast `broadcast_id`.
pub(crate) fn command_id(broadcast_id: &str, user_id: &str) -> String {
    hashed_id(prefix::COMMAND, &[broadcast_id, user_id])
}

/// `select … from broadcasts` followed by the rest of a statement.
macro_rules! view {
    ($($rest:literal),*) => {
        concat!(
            "select id, bot_id, spec, state, paused, start_at, recipients, queued, released, \
             sent, delivered, read, failed, skipped, created_at, updated_at, finished_at \
             from broadcasts ",
            $($rest),*
        )
    };
}

fn view_of(row: &sqlx::postgres::PgRow) -> Result<Broadcast, sqlx::Error> {
    let spec: sqlx::types::Json<BroadcastSpec> = row.try_get("spec")?;
    let stored: String = row.try_get("state")?;
    let mut state = BroadcastState::from_stored(&stored)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown broadcast state {stored:?}").into()))?;
    if row.try_get::<bool, _>("paused")? && !state.is_final() {
        state = BroadcastState::Paused;
    }
    let spec = spec.0;
    Ok(Broadcast {
        id: row.try_get("id")?,
        bot_id: row.try_get("bot_id")?,
        state,
        counts: counts_of(row)?,
        failed_reasons: BTreeMap::new(),
        skipped_reasons: BTreeMap::new(),
        audience: spec.audience,
        messages: spec.messages,
        template: spec.template,
        start_at: row.try_get("start_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// The counts of a `broadcasts` row (each recipient in one state there; in one or more here).
fn counts_of(row: &sqlx::postgres::PgRow) -> Result<BroadcastCounts, sqlx::Error> {
    let n = |c: &str| row.try_get::<i64, _>(c);
    let (sent, delivered, read) = (n("sent")?, n("delivered")?, n("read")?);
    Ok(BroadcastCounts {
        recipients: n("recipients")?,
        queued: n("queued")?,
        sending: n("released")?,
        sent: sent + delivered + read,
        delivered: delivered + read,
        read,
        failed: n("failed")?,
        skipped: n("skipped")?,
    })
}

/// One broadcast of the bot, with its reasons.
async fn get(
    conn: &mut sqlx::PgConnection,
    bot_id: &str,
    id: &str,
) -> Result<Option<Broadcast>, sqlx::Error> {
    let Some(row) = sqlx::query(view!("where id = $1 and bot_id = $2"))
        .bind(id)
        .bind(bot_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut b = view_of(&row)?;
    let reasons = sqlx::query(
        "select state, coalesce(reason, 'unknown') as reason, count(*) as n \
         from broadcast_recipients where broadcast_id = $1 and state in ('failed', 'skipped') \
         group by 1, 2",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    for r in reasons {
        let state: String = r.try_get("state")?;
        let into = if state == "failed" {
            &mut b.failed_reasons
        } else {
            &mut b.skipped_reasons
        };
        into.insert(r.try_get("reason")?, r.try_get("n")?);
    }
    Ok(Some(b))
}

impl Router {
    /// `<p>.rpc.router.broadcasts`.
    pub(crate) async fn broadcasts(&self, req: BroadcastRequest) -> Result<Answer, RpcError> {
        let bot_id = req.bot_id;
        match req.op {
            BroadcastOp::Create { id, spec } => {
                self.create_broadcast(&bot_id, &id, spec).await?;
                self.one_broadcast(&bot_id, &id).await
            }
            BroadcastOp::Get { id } => self.one_broadcast(&bot_id, &id).await,
            BroadcastOp::List { after, limit } => {
                let limit = i64::from(limit.clamp(1, 100));
                let rows = sqlx::query(view!(
                    "where bot_id = $1 and ($2::text is null or id < $2) ",
                    "order by id desc limit $3"
                ))
                .bind(&bot_id)
                .bind(after.as_deref())
                .bind(limit + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| unavailable(&e))?;
                let mut items = rows
                    .iter()
                    .map(view_of)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| unavailable(&e))?;
                let next = (items.len() as i64 > limit).then(|| {
                    items.truncate(limit as usize);
                    items.last().map(|b| b.id.clone()).unwrap_or_default()
                });
                Ok(Answer::Page(BroadcastPage { items, next }))
            }
            BroadcastOp::Control { id, action } => {
                self.control_broadcast(&bot_id, &id, action).await?;
                self.one_broadcast(&bot_id, &id).await
            }
        }
    }

    async fn one_broadcast(&self, bot_id: &str, id: &str) -> Result<Answer, RpcError> {
        let mut conn = self.pool.acquire().await.map_err(|e| unavailable(&e))?;
        get(&mut conn, bot_id, id)
            .await
            .map_err(|e| unavailable(&e))?
            .map(|b| Answer::One(Box::new(b)))
            .ok_or_else(|| not_found(id))
    }

    async fn create_broadcast(
        &self,
        bot_id: &str,
        id: &str,
        spec: BroadcastSpec,
    ) -> Result<(), RpcError> {
        let invalid = |m: String| RpcError::new(422, "invalid_request", m);
        spec.validate()
            .map_err(|e| invalid(format!("{}: {}", e.field, e.message)))?;
        if !id.starts_with("brd_") {
            return Err(invalid("id: must be a broadcast id (brd_…)".into()));
        }
        for ch in spec.audience.channels.iter().flatten() {
            let owned = self
                .view
                .channel(ch)
                .await
                .map_err(|e| unavailable(&e))?
                .is_some_and(|c| c.bot_id == bot_id);
            if !owned {
                return Err(RpcError::new(
                    422,
                    "unknown_channel",
                    format!("audience.channels: the bot has no channel {ch}"),
                ));
            }
        }
        if let Some(users) = &spec.audience.users {
            let unknown: Vec<String> = sqlx::query_scalar(
                "select x.id from unnest($1::text[]) as x(id) \
                 where not exists (select 1 from users u where u.id = x.id and u.bot_id = $2) \
                 limit 5",
            )
            .bind(users)
            .bind(bot_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| unavailable(&e))?;
            if !unknown.is_empty() {
                return Err(RpcError::new(
                    422,
                    "unknown_user",
                    format!("audience.users: the bot has no user {}", unknown.join(", ")),
                ));
            }
        }
        if let Some(t) = &spec.template {
            let known: bool = sqlx::query_scalar(
                "select exists (select 1 from templates where id = $1 and bot_id = $2)",
            )
            .bind(&t.id)
            .bind(bot_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unavailable(&e))?;
            if !known {
                return Err(RpcError::new(
                    422,
                    "unknown_template",
                    format!("template.id: the bot has no template {}", t.id),
                ));
            }
        }
        let start_at = spec.start_at.unwrap_or_else(chrono::Utc::now);
        let state = if start_at > chrono::Utc::now() {
            BroadcastState::Scheduled
        } else {
            BroadcastState::Queueing
        };
        let created = sqlx::query(
            "insert into broadcasts (id, bot_id, spec, state, start_at) values ($1, $2, $3, $4, $5) \
             on conflict (id) do nothing",
        )
        .bind(id)
        .bind(bot_id)
        .bind(sqlx::types::Json(&spec))
        .bind(state.as_str())
        .bind(start_at)
        .execute(&self.pool)
        .await
        .map_err(|e| unavailable(&e))?
        .rows_affected()
            == 1;
        if created {
            metrics::counter!("patchbay_broadcasts_total").increment(1);
            tracing::info!(broadcast_id = %id, %bot_id, %start_at, "broadcast stored");
        }
        Ok(())
    }

    async fn control_broadcast(
        &self,
        bot_id: &str,
        id: &str,
        action: BroadcastAction,
    ) -> Result<(), RpcError> {
        let mut tx = self.pool.begin().await.map_err(|e| unavailable(&e))?;
        let state: Option<String> = sqlx::query_scalar(
            "select state from broadcasts where id = $1 and bot_id = $2 for update",
        )
        .bind(id)
        .bind(bot_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| unavailable(&e))?;
        let state = state.ok_or_else(|| not_found(id))?;
        let finished = |s: &str| {
            RpcError::new(
                409,
                "broadcast_finished",
                format!("broadcast {id} is {s}: it can no longer be paused, resumed or cancelled"),
            )
        };
        match (action, state.as_str()) {
            // Cancelling again makes sure the senders know (the first time may have failed
            // after the database changed).
            (BroadcastAction::Cancel, "cancelled") => {}
            (_, s @ ("cancelled" | "completed")) => return Err(finished(s)),
            (BroadcastAction::Cancel, _) => {
                // What has not been handed to the send path is skipped by the broadcast's
                // driver, a page at a time (a million rows are more than a request waits
                // for); what has is dropped by the senders (the broadcasts bucket) or by the
                // router's send handler.
                sqlx::query(
                    "update broadcasts set state = 'cancelled', paused = false, \
                     finished_at = now(), updated_at = now() where id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable(&e))?;
            }
            (BroadcastAction::Pause | BroadcastAction::Resume, _) => {
                sqlx::query("update broadcasts set paused = $2, updated_at = now() where id = $1")
                    .bind(id)
                    .bind(action == BroadcastAction::Pause)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| unavailable(&e))?;
            }
        }
        tx.commit().await.map_err(|e| unavailable(&e))?;
        if action == BroadcastAction::Cancel {
            self.cancelled
                .put(id, "cancelled".into())
                .await
                .map_err(|e| unavailable(&e))?;
        }
        tracing::info!(broadcast_id = %id, %bot_id, ?action, "broadcast changed course");
        Ok(())
    }

    /// Whether broadcast `id` was cancelled (its messages still on their way are dropped).
    pub(crate) async fn broadcast_cancelled(&self, id: &str) -> Result<bool, BoxError> {
        Ok(self.cancelled.get(id).await?.is_some())
    }
}

/// A broadcast this replica drives, as claimed for one step.
struct Claimed {
    id: String,
    bot_id: String,
    spec: BroadcastSpec,
    state: String,
    paused: bool,
    queued_to: Option<String>,
    released_to: Option<String>,
    queued: i64,
    released: i64,
    counts: BroadcastCounts,
}

/// What the driver last told the bot of a broadcast's progress.
struct Progress {
    at: std::time::Instant,
    /// Recipients with an outcome then.
    done: i64,
}

/// Drives the broadcasts this replica claims, one step each every [`STEP`].
pub(crate) async fn drive(
    router: Arc<Router>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), BoxError> {
    let me = patchbay_contract::ids::new_id("rpl");
    let mut owned: HashMap<String, Progress> = HashMap::new();
    let mut every = tokio::time::interval(STEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // While an audience is being stored, the next page follows at once.
    let mut hurry = false;
    loop {
        if hurry {
            if shutdown.is_cancelled() {
                return Ok(());
            }
        } else {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
        hurry = match router.step_broadcasts(&me, &mut owned).await {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(error = %e, "stepping broadcasts failed; next step");
                // Republish what is in flight once this works again: a release may have been
                // cut short between storing and publishing.
                owned.clear();
                false
            }
        };
    }
}

impl Router {
    /// One step of every broadcast this replica drives (claiming those no replica does);
    /// whether an audience has more pages to store.
    async fn step_broadcasts(
        &self,
        me: &str,
        owned: &mut HashMap<String, Progress>,
    ) -> Result<bool, BoxError> {
        // Every broadcast is driven until its end is announced: a cancelled one until what
        // was on its way has an outcome.
        let rows = sqlx::query(
            "update broadcasts b set owner = $1, lease_until = now() + $2 * interval '1 ms', \
                 state = case when b.state = 'scheduled' then 'queueing' else b.state end \
             where b.id in (select id from broadcasts \
                 where announced_at is null \
                   and (state in ('scheduled', 'queueing', 'sending') and start_at <= now() \
                        or state = 'cancelled') \
                   and (owner is null or owner = $1 or lease_until < now()) \
                 order by start_at, id limit $3 for update skip locked) \
             returning b.id, b.bot_id, b.spec, b.state, b.paused, b.queued_to, b.released_to, \
                 b.recipients, b.queued, b.released, b.sent, b.delivered, b.read, b.failed, \
                 b.skipped",
        )
        .bind(me)
        .bind(i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX))
        .bind(CLAIM)
        .fetch_all(&self.pool)
        .await?;
        let mut now_owned = HashSet::new();
        let mut more = false;
        for row in rows {
            let spec: sqlx::types::Json<BroadcastSpec> = row.try_get("spec")?;
            let b = Claimed {
                id: row.try_get("id")?,
                bot_id: row.try_get("bot_id")?,
                spec: spec.0,
                state: row.try_get("state")?,
                paused: row.try_get("paused")?,
                queued_to: row.try_get("queued_to")?,
                released_to: row.try_get("released_to")?,
                queued: row.try_get("queued")?,
                released: row.try_get("released")?,
                counts: counts_of(&row)?,
            };
            now_owned.insert(b.id.clone());
            if !owned.contains_key(&b.id) {
                // Taken over (or this replica's step failed): what another release stored as
                // handed over may never have been published.
                tracing::info!(broadcast_id = %b.id, "driving broadcast");
                if b.state != "cancelled" {
                    self.republish(&b).await?;
                }
                owned.insert(
                    b.id.clone(),
                    Progress {
                        at: std::time::Instant::now(),
                        done: b.counts.done(),
                    },
                );
            }
            more |= self.step(&b).await?;
            if let Some(p) = owned.get_mut(&b.id) {
                self.progress(&b, p).await?;
            }
        }
        owned.retain(|id, _| now_owned.contains(id));
        Ok(more)
    }

    /// Tells the bot (if it subscribes) how far a sending broadcast got: at most every
    /// `PATCHBAY_BROADCAST_PROGRESS_MS`, when more recipients have an outcome than last time.
    /// The event's id derives from that number, so a replica taking over repeats none.
    async fn progress(&self, b: &Claimed, last: &mut Progress) -> Result<(), BoxError> {
        let done = b.counts.done();
        let state = match b.state.as_str() {
            _ if b.paused => BroadcastState::Paused,
            "queueing" => BroadcastState::Queueing,
            "sending" => BroadcastState::Sending,
            _ => return Ok(()),
        };
        if done == last.done || last.at.elapsed() < self.broadcast_progress {
            return Ok(());
        }
        let summary = BroadcastSummary {
            id: b.id.clone(),
            state,
            counts: b.counts.clone(),
            failed_reasons: BTreeMap::new(),
            skipped_reasons: BTreeMap::new(),
            finished_at: None,
        };
        let id = hashed_id(prefix::EVENT, &[&b.id, "progress", &done.to_string()]);
        self.announce_broadcast(&b.bot_id, id, EventType::BroadcastProgress, summary)
            .await?;
        *last = Progress {
            at: std::time::Instant::now(),
            done,
        };
        Ok(())
    }

    /// Dispatches a broadcast's event to the bot (and partner apps) subscribed to it.
    async fn announce_broadcast(
        &self,
        bot_id: &str,
        id: String,
        event_type: EventType,
        summary: BroadcastSummary,
    ) -> Result<(), BoxError> {
        let Some(bot) = self.view.bot(bot_id).await? else {
            return Ok(());
        };
        let event = TenantEvent::of_broadcast(id, event_type, bot_id, summary);
        self.dispatch(&bot, event, None)
            .await
            .map_err(|e| -> BoxError { e.to_string().into() })?;
        Ok(())
    }

    /// Ends a broadcast whose recipients all have an outcome: marks it completed (or, when it
    /// was cancelled, announced) and sends `broadcast.completed` with the final counts, in
    /// one transaction (a crash in between repeats the event under the same id, which the
    /// dispatch stream drops).
    async fn finish(&self, b: &Claimed) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        let ended = sqlx::query(
            "update broadcasts set state = case when state = 'sending' then 'completed' \
                 else state end, \
                 finished_at = coalesce(finished_at, now()), updated_at = now(), \
                 announced_at = now(), owner = null \
             where id = $1 and state in ('sending', 'cancelled') and announced_at is null \
               and queued = 0 and released = 0",
        )
        .bind(&b.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !ended {
            return Ok(());
        }
        let Some(view) = get(&mut tx, &b.bot_id, &b.id).await? else {
            return Ok(());
        };
        let completed = view.state == BroadcastState::Completed;
        let id = hashed_id(prefix::EVENT, &[&b.id, "completed"]);
        self.announce_broadcast(&b.bot_id, id, EventType::BroadcastCompleted, view.into())
            .await?;
        tx.commit().await?;
        if completed {
            metrics::counter!("patchbay_broadcasts_completed_total").increment(1);
            tracing::info!(broadcast_id = %b.id, bot_id = %b.bot_id, "broadcast completed");
        } else {
            tracing::info!(broadcast_id = %b.id, bot_id = %b.bot_id, "cancelled broadcast ended");
        }
        Ok(())
    }

    /// One step: store a page of the audience, release what the window allows, complete;
    /// whether the audience has more pages to store.
    async fn step(&self, b: &Claimed) -> Result<bool, BoxError> {
        if b.state == "cancelled" {
            if b.queued > 0 {
                self.skip_page(b).await?;
                return Ok(false);
            }
            if b.released == 0 {
                self.finish(b).await?;
            }
            return Ok(false);
        }
        let mut queueing = b.state == "queueing";
        if queueing {
            queueing = self.queue_page(b).await?;
        }
        if !b.paused && b.released < i64::from(self.broadcast_window) {
            let room = i64::from(self.broadcast_window) - b.released;
            let released = self.release(b, room).await?;
            if released > 0 || b.queued > 0 {
                return Ok(queueing);
            }
        }
        if !queueing && b.queued == 0 && b.released == 0 {
            self.finish(b).await?;
        }
        Ok(queueing)
    }

    /// Skips the next page of a cancelled broadcast's queued recipients (`cancelled`).
    async fn skip_page(&self, b: &Claimed) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select 1 from broadcasts where id = $1 for update")
            .bind(&b.id)
            .execute(&mut *tx)
            .await?;
        let (skipped, last): (i64, Option<String>) = sqlx::query_as(
            "with page as ( \
                 select user_id from broadcast_recipients \
                 where broadcast_id = $1 and state = 'queued' \
                   and user_id > coalesce($2::text, '') \
                 order by user_id limit $3), \
             skipped as ( \
                 update broadcast_recipients r set state = 'skipped', reason = $4 \
                 from page where r.broadcast_id = $1 and r.user_id = page.user_id \
                   and r.state = 'queued') \
             select count(*), max(user_id) from page",
        )
        .bind(&b.id)
        .bind(b.released_to.as_deref())
        .bind(SKIP_PAGE)
        .bind(CANCELLED)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("update broadcasts set released_to = coalesce($2, released_to) where id = $1")
            .bind(&b.id)
            .bind(last)
            .execute(&mut *tx)
            .await?;
        if skipped < SKIP_PAGE {
            // The last page: nothing queued may stay behind the cursor.
            sqlx::query(
                "update broadcast_recipients set state = 'skipped', reason = $2 \
                 where broadcast_id = $1 and state = 'queued'",
            )
            .bind(&b.id)
            .bind(CANCELLED)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores the next page of the audience; whether more may follow.
    async fn queue_page(&self, b: &Claimed) -> Result<bool, BoxError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select 1 from broadcasts where id = $1 for update")
            .bind(&b.id)
            .execute(&mut *tx)
            .await?;
        let a: &Audience = &b.spec.audience;
        let (stored, last): (i64, Option<String>) = if let Some(users) = &a.users {
            // A list: stored at once; users the bot does not have fail.
            sqlx::query_as(
                "with page as ( \
                     select distinct x.id as user_id, u.id is not null as known, \
                         coalesce(u.subscribed, false) as subscribed, \
                         coalesce(u.broadcast_opt_out, false) as opt_out \
                     from unnest($2::text[]) as x(id) \
                     left join users u on u.id = x.id and u.bot_id = $3), \
                 ins as ( \
                     insert into broadcast_recipients (broadcast_id, user_id, state, reason) \
                     select $1, user_id, \
                         case when not known then 'failed' when not subscribed or opt_out \
                             then 'skipped' else 'queued' end, \
                         case when not known then 'user_not_found' when not subscribed then $4 \
                             when opt_out then $5 end \
                     from page on conflict do nothing) \
                 select count(*), max(user_id) from page",
            )
            .bind(&b.id)
            .bind(users)
            .bind(&b.bot_id)
            .bind(UNSUBSCRIBED)
            .bind(OPTED_OUT)
            .fetch_one(&mut *tx)
            .await?
        } else {
            let platforms: Option<Vec<&str>> = a
                .platforms
                .as_ref()
                .map(|p| p.iter().map(|p| p.as_str()).collect());
            sqlx::query_as(
                "with page as ( \
                     select u.id, u.broadcast_opt_out from users u \
                     where u.bot_id = $2 and u.id > coalesce($3::text, '') \
                       and u.subscribed \
                       and ($4::text[] is null or u.channel_id = any($4)) \
                       and ($5::text[] is null or u.platform = any($5)) \
                       and ($6::jsonb is null or u.fields @> $6) \
                     order by u.id limit $7), \
                 ins as ( \
                     insert into broadcast_recipients (broadcast_id, user_id, state, reason) \
                     select $1, id, case when broadcast_opt_out then 'skipped' else 'queued' end, \
                         case when broadcast_opt_out then $8 end \
                     from page on conflict do nothing) \
                 select count(*), max(id) from page",
            )
            .bind(&b.id)
            .bind(&b.bot_id)
            .bind(b.queued_to.as_deref())
            .bind(a.channels.as_deref())
            .bind(platforms)
            .bind(a.fields.as_ref().map(sqlx::types::Json))
            .bind(QUEUE_PAGE)
            .bind(OPTED_OUT)
            .fetch_one(&mut *tx)
            .await?
        };
        let more = a.users.is_none() && stored == QUEUE_PAGE;
        sqlx::query(
            "update broadcasts set queued_to = coalesce($2, queued_to), \
             state = case when $3 then state else 'sending' end, updated_at = now() where id = $1",
        )
        .bind(&b.id)
        .bind(last)
        .bind(more)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::debug!(broadcast_id = %b.id, stored, more, "audience page stored");
        if stored > 0 && (b.queued_to.is_none() || !more) {
            self.analyze_recipients(b).await;
        }
        Ok(more)
    }

    /// Refreshes the planner's statistics of `broadcast_recipients` once a broadcast's first
    /// audience page and its last are stored. Without them, a table that grew by a million
    /// rows in seconds is still thought small: the release's next page is then planned as a
    /// read and sort of every recipient after the cursor (hundreds of milliseconds a step,
    /// holding the broadcast's row lock that every outcome waits for) instead of the next rows
    /// of its index. A failure is logged; autovacuum gets there in the end.
    async fn analyze_recipients(&self, b: &Claimed) {
        let started = std::time::Instant::now();
        match sqlx::query("analyze broadcast_recipients")
            .execute(&self.pool)
            .await
        {
            Ok(_) => {
                tracing::debug!(broadcast_id = %b.id, ms = started.elapsed().as_millis(), "recipients analyzed")
            }
            Err(e) => {
                tracing::warn!(broadcast_id = %b.id, error = %e, "cannot analyze broadcast_recipients")
            }
        }
    }

    /// Hands up to `room` queued recipients to the send path; how many.
    async fn release(&self, b: &Claimed, room: i64) -> Result<usize, BoxError> {
        let contents = b.spec.contents();
        let mut tx = self.pool.begin().await?;
        sqlx::query("select 1 from broadcasts where id = $1 for update")
            .bind(&b.id)
            .execute(&mut *tx)
            .await?;
        // Whether each is still reachable is judged now: users block bots while a
        // broadcast goes out.
        // The cursor is an index condition (`user_id > …`, never `$2 is null or …`, which a
        // cached generic plan can only filter by, reading every recipient released before),
        // and each user is looked up by id (a join may be planned as a scan of every user).
        let next: Vec<(String, bool, bool, Option<String>)> = sqlx::query_as(
            "select r.user_id, \
                 coalesce((select u.subscribed from users u where u.id = r.user_id), false), \
                 coalesce((select u.broadcast_opt_out from users u where u.id = r.user_id), false), \
                 (select u.channel_id from users u where u.id = r.user_id) \
             from broadcast_recipients r \
             where r.broadcast_id = $1 and r.state = 'queued' \
               and r.user_id > coalesce($2::text, '') \
             order by r.user_id limit $3",
        )
        .bind(&b.id)
        .bind(b.released_to.as_deref())
        .bind(room)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = next.last().map(|(u, ..)| u.clone()) else {
            return Ok(0);
        };
        let mut users = Vec::with_capacity(next.len());
        let mut states = Vec::with_capacity(next.len());
        let mut reasons: Vec<Option<&str>> = Vec::with_capacity(next.len());
        let mut messages: Vec<Option<String>> = Vec::with_capacity(next.len());
        let mut go = Vec::new();
        for (user, subscribed, opt_out, channel) in next {
            let (state, reason, message) = if !subscribed {
                ("skipped", Some(UNSUBSCRIBED), None)
            } else if opt_out {
                ("skipped", Some(OPTED_OUT), None)
            } else {
                let ids = message_ids(&b.bot_id, &command_id(&b.id, &user), contents.len());
                go.push((user.clone(), channel));
                ("released", None, ids.last().cloned())
            };
            users.push(user);
            states.push(state);
            reasons.push(reason);
            messages.push(message);
        }
        sqlx::query(
            "update broadcast_recipients r set state = x.state, reason = x.reason, \
                 message_id = x.message_id \
             from unnest($2::text[], $3::text[], $4::text[], $5::text[]) \
                 as x(user_id, state, reason, message_id) \
             where r.broadcast_id = $1 and r.user_id = x.user_id and r.state = 'queued'",
        )
        .bind(&b.id)
        .bind(&users)
        .bind(&states)
        .bind(&reasons)
        .bind(&messages)
        .execute(&mut *tx)
        .await?;
        sqlx::query("update broadcasts set released_to = $2 where id = $1")
            .bind(&b.id)
            .bind(&last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.publish_commands(b, &contents, &go).await?;
        Ok(users.len())
    }

    /// Publishes again the command of every recipient handed over and not yet answered.
    async fn republish(&self, b: &Claimed) -> Result<(), BoxError> {
        let users: Vec<(String, Option<String>)> = sqlx::query_as(
            "select r.user_id, (select u.channel_id from users u where u.id = r.user_id) \
             from broadcast_recipients r \
             where r.broadcast_id = $1 and r.state = 'released' order by r.user_id",
        )
        .bind(&b.id)
        .fetch_all(&self.pool)
        .await?;
        if !users.is_empty() {
            tracing::info!(broadcast_id = %b.id, recipients = users.len(), "republishing what was handed over before");
            self.publish_commands(b, &b.spec.contents(), &users).await?;
        }
        Ok(())
    }

    /// Publishes the send commands of `users` (each with their channel): one for as many users
    /// of a channel ([`SendCommand::also_to`]) as one outbound job names on its platform
    /// ([`patchbay_registry::job_recipients`]: a bulk call's recipients, else
    /// [`patchbay_registry::PACED_RECIPIENTS`]), so the router prepares them in one handling
    /// and hands them to the sender in one job per message.
    async fn publish_commands(
        &self,
        b: &Claimed,
        contents: &[patchbay_contract::Content],
        users: &[(String, Option<String>)],
    ) -> Result<(), BoxError> {
        let subject = self.bus.subjects().send(&b.bot_id)?;
        let mut by_channel: BTreeMap<Option<&str>, Vec<&String>> = BTreeMap::new();
        for (user, channel) in users {
            by_channel.entry(channel.as_deref()).or_default().push(user);
        }
        for (channel, users) in by_channel {
            let per_command = match channel {
                Some(channel) => self
                    .view
                    .channel(channel)
                    .await?
                    .map_or(patchbay_registry::PACED_RECIPIENTS, |c| {
                        patchbay_registry::job_recipients(c.platform)
                    }),
                // The user is gone: the router fails their recipient.
                None => 1,
            };
            for chunk in users.chunks(per_command) {
                let (first, rest) = chunk.split_first().ok_or("an empty chunk")?;
                let id = match rest.last() {
                    None => command_id(&b.id, first),
                    Some(last) => hashed_id(
                        prefix::COMMAND,
                        &[&b.id, first, last, &chunk.len().to_string()],
                    ),
                };
                let cmd = SendCommand {
                    v: V1,
                    id: Some(id.clone()),
                    to: Recipient::User {
                        user_id: (*first).clone(),
                    },
                    messages: contents.to_vec(),
                    source: SendSource::Broadcast,
                    source_id: Some(b.id.clone()),
                    in_reply_to: None,
                    known_recipient: None,
                    also_to: rest.iter().map(|u| (*u).clone()).collect(),
                };
                self.bus.publish(&subject, &id, &cmd).await?;
            }
        }
        metrics::counter!("patchbay_broadcast_released_total").increment(users.len() as u64);
        Ok(())
    }
}
