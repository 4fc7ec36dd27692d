//! SQL of the `dispatcher` schema: the attempts log, delivered events, and the outbox of
//! parked events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use patchbay_contract::{
    Delivery, DeliveryAttempt, DeliveryDetail, DeliveryPage, DeliveryState, DispatchJob,
    ListDeliveriesRequest, ReplayRequest,
};
use std::sync::Arc;

use patchbay_store::batch::{WaveConnection, waves};
use sqlx::{PgPool, Row};

/// A parked event claimed by the scheduler.
pub struct Parked {
    pub id: i64,
    pub job: Arc<DispatchJob>,
    pub attempts: i32,
}

/// An event to admit for delivery (see [`admit`]).
#[derive(Clone)]
pub struct Admission(pub Arc<DispatchJob>);

/// Where each event's delivery stands (`Pending` when it is not known yet: its row is written
/// with its first outcome), and whether earlier events of its conversation are parked (new
/// ones must queue behind them), by one set-based read for the batch.
pub async fn admit(
    pool: &PgPool,
    batch: Vec<Admission>,
) -> Result<Vec<(DeliveryState, bool)>, sqlx::Error> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut conversations = Vec::with_capacity(n);
    for Admission(job) in &batch {
        ids.push(job.event.id.as_str());
        conversations.push(job.lane_conversation());
    }
    let rows = sqlx::query(
        "select (select d.status from deliveries d where d.event_id = t.event_id) as status,
                exists (select 1 from parked p where p.conversation_id = t.conversation_id)
                    as parked
         from unnest($1::text[], $2::text[]) with ordinality as t(event_id, conversation_id, i)
         order by t.i",
    )
    .bind(&ids)
    .bind(&conversations)
    .fetch_all(pool)
    .await?;
    if rows.len() != n {
        return Err(sqlx::Error::Protocol(format!(
            "admitting {n} events returned {} rows",
            rows.len()
        )));
    }
    Ok(rows
        .iter()
        .map(|row| {
            let status: Option<&str> = row.get("status");
            (
                status.map_or(DeliveryState::Pending, state),
                row.get("parked"),
            )
        })
        .collect())
}

fn state(s: &str) -> DeliveryState {
    match s {
        "delivered" => DeliveryState::Delivered,
        "failed" => DeliveryState::Failed,
        _ => DeliveryState::Pending,
    }
}

/// Where the delivery of `event_id` stands, if the event is known.
pub async fn status(pool: &PgPool, event_id: &str) -> Result<Option<DeliveryState>, sqlx::Error> {
    Ok(
        sqlx::query("select status from deliveries where event_id = $1")
            .bind(event_id)
            .fetch_optional(pool)
            .await?
            .map(|r| state(r.get::<&str, _>(0))),
    )
}

/// One callback attempt, as logged.
#[derive(Clone)]
pub struct Attempt {
    /// The event's job: its delivery is created with it on the first attempt.
    pub job: Arc<DispatchJob>,
    /// Its number (1 for the first).
    pub attempt: u64,
    pub url: String,
    pub delivered: bool,
    pub status_code: Option<u16>,
    pub duration: Duration,
    pub response_body: String,
    /// The error, or a note on a delivered attempt (an inline reply ignored).
    pub error: Option<String>,
}

/// One statement for a batch of attempts (see [`record_attempt`]).
const RECORD_ATTEMPTS: &str = "
with t as (
    select * from unnest($1::text[], $2::boolean[], $3::int[], $4::text[], $5::text[],
                         $6::text[], $7::int[], $8::text[], $9::int[], $10::text[], $11::text[],
                         $12::jsonb[])
        as t(event_id, delivered, status_code, error, bot_id, event_type, attempt, url,
             duration_ms, response_body, conversation_id, job)),
a as (
    insert into attempts (event_id, bot_id, event_type, attempt, url, status_code,
                          duration_ms, response_body, error)
    select event_id, bot_id, event_type, attempt, url, status_code, duration_ms,
           response_body, error
    from t)
insert into deliveries as d (event_id, bot_id, conversation_id, event_type, status, job,
                             attempts, last_status_code, last_error)
select event_id, bot_id, conversation_id, event_type,
       case when delivered then 'delivered' else 'pending' end, job, 1, status_code, error
from t
on conflict (event_id) do update set
    attempts = d.attempts + 1,
    last_status_code = excluded.last_status_code,
    last_error = excluded.last_error,
    status = case when excluded.status = 'delivered' then 'delivered' else d.status end,
    updated_at = now()";

/// Logs attempts and records each outcome on its delivery (created on the first attempt), by
/// one set-based statement for the batch ([`RECORD_ATTEMPTS`]); two attempts at one event go
/// in successive statements.
pub async fn record_attempt(pool: &PgPool, batch: Vec<Attempt>) -> Result<Vec<()>, sqlx::Error> {
    let waves = waves(batch.iter().map(|a| [a.job.event.id.as_str()]));
    let mut conn = WaveConnection::open(pool, waves.len()).await?;
    for wave in &waves {
        let attempts: Vec<&Attempt> = wave.iter().filter_map(|&i| batch.get(i)).collect();
        record_attempts(conn.connection(), &attempts).await?;
    }
    conn.finish().await?;
    Ok(vec![(); batch.len()])
}

async fn record_attempts(
    conn: &mut sqlx::PgConnection,
    batch: &[&Attempt],
) -> Result<(), sqlx::Error> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut delivered = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut bots = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut numbers = Vec::with_capacity(n);
    let mut urls = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut conversations = Vec::with_capacity(n);
    let mut jobs = Vec::with_capacity(n);
    for a in batch {
        ids.push(a.job.event.id.as_str());
        delivered.push(a.delivered);
        codes.push(a.status_code.map(i32::from));
        errors.push(a.error.as_deref());
        bots.push(a.job.lane());
        conversations.push(a.job.lane_conversation());
        jobs.push(sqlx::types::Json(&*a.job));
        types.push(a.job.event.event_type.as_str());
        numbers.push(i32::try_from(a.attempt).unwrap_or(i32::MAX));
        urls.push(a.url.as_str());
        durations.push(i32::try_from(a.duration.as_millis()).unwrap_or(i32::MAX));
        bodies.push(a.response_body.as_str());
    }
    sqlx::query(RECORD_ATTEMPTS)
        .bind(&ids)
        .bind(&delivered)
        .bind(&codes)
        .bind(&errors)
        .bind(&bots)
        .bind(&types)
        .bind(&numbers)
        .bind(&urls)
        .bind(&durations)
        .bind(&bodies)
        .bind(&conversations)
        .bind(&jobs)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks a delivery failed (dead-lettered), creating it if the event was never attempted (its
/// endpoint disabled).
pub async fn mark_failed(
    pool: &PgPool,
    job: &DispatchJob,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into deliveries (event_id, bot_id, conversation_id, event_type, status, job,
                                 last_error)
         values ($1, $2, $3, $4, 'failed', $5, $6)
         on conflict (event_id) do update set
             status = 'failed', last_error = excluded.last_error, updated_at = now()",
    )
    .bind(&job.event.id)
    .bind(job.lane())
    .bind(job.lane_conversation())
    .bind(job.event.event_type.as_str())
    .bind(sqlx::types::Json(job))
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

fn delivery(r: &sqlx::postgres::PgRow) -> Delivery {
    Delivery {
        event_id: r.get("event_id"),
        event_type: r.get("event_type"),
        conversation_id: r.get("conversation_id"),
        status: state(r.get::<&str, _>("status")),
        attempts: u32::try_from(r.get::<i32, _>("attempts")).unwrap_or(0),
        last_status_code: r
            .get::<Option<i32>, _>("last_status_code")
            .and_then(|c| u16::try_from(c).ok()),
        last_error: r.get("last_error"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

const DELIVERY_COLUMNS: &str = "event_id, event_type, conversation_id, status, attempts, \
     last_status_code, last_error, created_at, updated_at";

/// A page of a bot's deliveries, newest first; the cursor is `<created_at>|<event_id>` of the
/// last item.
pub async fn list(pool: &PgPool, req: &ListDeliveriesRequest) -> Result<DeliveryPage, sqlx::Error> {
    let limit = i64::from(req.limit.unwrap_or(50).clamp(1, 100));
    let cursor = req.cursor.as_deref().and_then(|c| {
        let (t, id) = c.split_once('|')?;
        Some((
            DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc),
            id.to_owned(),
        ))
    });
    let status = req.status.map(|s| match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
    });
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {DELIVERY_COLUMNS} from deliveries
         where bot_id = $1
           and ($2::text is null or status = $2)
           and ($3::text is null or event_type = $3)
           and ($4::timestamptz is null or created_at >= $4)
           and ($5::timestamptz is null or created_at < $5)
           and ($6::timestamptz is null or (created_at, event_id) < ($6, $7))
         order by created_at desc, event_id desc
         limit $8"
    )))
    .bind(&req.bot_id)
    .bind(status)
    .bind(&req.event_type)
    .bind(req.since)
    .bind(req.until)
    .bind(cursor.as_ref().map(|c| c.0))
    .bind(cursor.as_ref().map(|c| c.1.clone()))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let mut items: Vec<Delivery> = rows.iter().map(delivery).collect();
    let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(50) {
        items.pop();
        items
            .last()
            .map(|d| format!("{}|{}", d.created_at.to_rfc3339(), d.event_id))
    } else {
        None
    };
    Ok(DeliveryPage { items, next_cursor })
}

/// A delivery of `bot_id` with its event and attempts.
pub async fn detail(
    pool: &PgPool,
    bot_id: &str,
    event_id: &str,
) -> Result<Option<DeliveryDetail>, sqlx::Error> {
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {DELIVERY_COLUMNS}, job from deliveries where bot_id = $1 and event_id = $2"
    )))
    .bind(bot_id)
    .bind(event_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let job: sqlx::types::Json<DispatchJob> = row.get("job");
    let attempts_log = sqlx::query(
        "select attempt, url, status_code, duration_ms, response_body, error, created_at
         from attempts where event_id = $1 order by id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| DeliveryAttempt {
        attempt: u32::try_from(r.get::<i32, _>("attempt")).unwrap_or(0),
        url: r.get("url"),
        status_code: r
            .get::<Option<i32>, _>("status_code")
            .and_then(|c| u16::try_from(c).ok()),
        duration_ms: u32::try_from(r.get::<i32, _>("duration_ms")).unwrap_or(0),
        response_body: r
            .get::<Option<String>, _>("response_body")
            .filter(|b| !b.is_empty()),
        error: r.get("error"),
        at: r.get("created_at"),
    })
    .collect();
    Ok(Some(DeliveryDetail {
        delivery: delivery(&row),
        event: job.0.event,
        attempts_log,
    }))
}

/// Sets a delivery of `bot_id` back to pending and returns its job, for a retry.
pub async fn reopen(
    pool: &PgPool,
    bot_id: &str,
    event_id: &str,
) -> Result<Option<(Delivery, DispatchJob)>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "update deliveries set status = 'pending', updated_at = now()
         where bot_id = $1 and event_id = $2
         returning {DELIVERY_COLUMNS}, job"
    )))
    .bind(bot_id)
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let job: sqlx::types::Json<DispatchJob> = r.get("job");
        (delivery(&r), job.0)
    }))
}

/// What a replay reopened.
#[derive(Debug)]
pub enum Reopened {
    /// These dead letters, the oldest first, and whether the window holds more.
    Jobs {
        /// The jobs to dispatch again.
        jobs: Vec<DispatchJob>,
        /// Whether failed deliveries of the window are left.
        more: bool,
    },
    /// The bot used its budget for this minute: try again after this many seconds.
    Paced {
        /// Seconds until the budget's window ends.
        retry_after: u64,
    },
}

/// Reopens the bot's failed deliveries of `req`'s window (oldest first) for a replay: at most
/// `req.limit` and what is left of the bot's budget of `per_minute` reopenings a minute, in one
/// transaction with the budget, so concurrent replays of one bot share it.
pub async fn reopen_failed(
    pool: &PgPool,
    req: &ReplayRequest,
    per_minute: u32,
) -> Result<Reopened, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into replay_budgets (bot_id, window_start, used) values ($1, now(), 0)
         on conflict (bot_id) do nothing",
    )
    .bind(&req.bot_id)
    .execute(&mut *tx)
    .await?;
    // The window restarts a minute after it began.
    let budget = sqlx::query(
        "update replay_budgets
            set window_start = case when window_start <= now() - interval '1 minute'
                                    then now() else window_start end,
                used = case when window_start <= now() - interval '1 minute' then 0 else used end
          where bot_id = $1
          returning used,
                    greatest(1, ceil(extract(epoch from
                        (window_start + interval '1 minute' - now())))::bigint) as retry_after",
    )
    .bind(&req.bot_id)
    .fetch_one(&mut *tx)
    .await?;
    let used: i32 = budget.get("used");
    let left = i64::from(per_minute) - i64::from(used);
    if left <= 0 {
        tx.rollback().await?;
        let retry_after: i64 = budget.get("retry_after");
        return Ok(Reopened::Paced {
            retry_after: u64::try_from(retry_after).unwrap_or(60),
        });
    }
    let take = left.min(i64::from(req.limit.unwrap_or(per_minute).max(1)));
    let rows = sqlx::query(
        "update deliveries set status = 'pending', updated_at = now()
         where event_id in (
             select event_id from deliveries
              where bot_id = $1 and status = 'failed' and created_at >= $2
                and ($3::timestamptz is null or created_at < $3)
                and ($4::text is null or event_type = $4)
              order by created_at
              limit $5
              for update skip locked)
         returning job, created_at",
    )
    .bind(&req.bot_id)
    .bind(req.since)
    .bind(req.until)
    .bind(&req.event_type)
    .bind(take)
    .fetch_all(&mut *tx)
    .await?;
    let more: bool = sqlx::query_scalar(
        "select exists (select 1 from deliveries
                         where bot_id = $1 and status = 'failed' and created_at >= $2
                           and ($3::timestamptz is null or created_at < $3)
                           and ($4::text is null or event_type = $4))",
    )
    .bind(&req.bot_id)
    .bind(req.since)
    .bind(req.until)
    .bind(&req.event_type)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("update replay_budgets set used = used + $2 where bot_id = $1")
        .bind(&req.bot_id)
        .bind(i32::try_from(rows.len()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut jobs: Vec<(DateTime<Utc>, DispatchJob)> = rows
        .iter()
        .map(|r| {
            let job: sqlx::types::Json<DispatchJob> = r.get("job");
            (r.get("created_at"), job.0)
        })
        .collect();
    jobs.sort_by_key(|(t, _)| *t);
    Ok(Reopened::Jobs {
        jobs: jobs.into_iter().map(|(_, j)| j).collect(),
        more,
    })
}

/// Parks an event (idempotent per event id), creating its delivery (pending) if no attempt
/// did.
pub async fn park(
    pool: &PgPool,
    job: &DispatchJob,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // Its delivery too, pending, unless an attempt created it already.
    sqlx::query(
        "with d as (
             insert into deliveries (event_id, bot_id, conversation_id, event_type, status, job)
             values ($3, $2, $1, $7, 'pending', $4) on conflict (event_id) do nothing)
         insert into parked (conversation_id, bot_id, event_id, job, attempts, next_attempt_at)
         values ($1, $2, $3, $4, $5, $6) on conflict (event_id) do nothing",
    )
    .bind(job.lane_conversation())
    .bind(job.lane())
    .bind(&job.event.id)
    .bind(sqlx::types::Json(job))
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(job.event.event_type.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

fn parked(row: &sqlx::postgres::PgRow) -> Option<Parked> {
    let job: sqlx::types::Json<DispatchJob> = row.try_get("job").ok()?;
    Some(Parked {
        id: row.get("id"),
        job: Arc::new(job.0),
        attempts: row.get("attempts"),
    })
}

/// Leases up to `limit` due heads of conversations (the oldest parked event of each), so
/// several dispatchers never work on one conversation at once.
pub async fn claim_due_heads(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Parked>, sqlx::Error> {
    let rows = sqlx::query(
        "update parked set leased_until = now() + make_interval(secs => $2)
         where id in (
             select p.id from parked p
             where p.next_attempt_at <= now()
               and (p.leased_until is null or p.leased_until < now())
               and not exists (select 1 from parked q
                               where q.conversation_id = p.conversation_id and q.id < p.id)
             order by p.next_attempt_at
             limit $1
             for update skip locked)
         returning id, job, attempts",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().filter_map(parked).collect())
}

/// Leases the next event of a conversation if it is due (after its predecessor finished).
pub async fn claim_next(
    pool: &PgPool,
    conversation_id: &str,
    lease: Duration,
) -> Result<Option<Parked>, sqlx::Error> {
    let row = sqlx::query(
        "update parked set leased_until = now() + make_interval(secs => $2)
         where id = (
             select id from parked where conversation_id = $1 order by id limit 1
             for update skip locked)
           and next_attempt_at <= now()
           and (leased_until is null or leased_until < now())
         returning id, job, attempts",
    )
    .bind(conversation_id)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().and_then(parked))
}

/// Removes a parked event (delivered or dead-lettered).
pub async fn unpark(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("delete from parked where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Schedules a parked event's next attempt and releases its lease.
pub async fn reschedule(
    pool: &PgPool,
    id: i64,
    attempts: i32,
    next: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update parked set attempts = $2, next_attempt_at = $3, leased_until = null where id = $1",
    )
    .bind(id)
    .bind(attempts)
    .bind(next)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use patchbay_contract::{ChannelRef, EventType, EventUser, Platform, TenantEvent, V1};

    fn job(event_id: &str, conversation_id: &str) -> Arc<DispatchJob> {
        Arc::new(DispatchJob {
            v: V1,
            event: TenantEvent {
                id: event_id.into(),
                event_type: EventType::MessageReceived,
                created_at: Utc::now(),
                bot_id: "bot_1".into(),
                channel: Some(ChannelRef {
                    id: "chn_1".into(),
                    platform: Platform::Telegram,
                }),
                user: Some(EventUser {
                    id: "usr_1".into(),
                    platform_user_id: "1".into(),
                    display_name: None,
                    username: None,
                    locale: None,
                    fields: Default::default(),
                }),
                conversation_id: Some(conversation_id.into()),
                chat: None,
                message: None,
                error: None,
                referral: None,
                resubscribed: false,
                installation: None,
                handled_by: None,
                handover: None,
                broadcast: None,
            },
            reply_address: None,
        })
    }

    fn attempt(job: &Arc<DispatchJob>, attempt: u64, delivered: bool) -> Attempt {
        Attempt {
            job: job.clone(),
            attempt,
            url: "http://tenant.test/hook".into(),
            delivered,
            status_code: Some(if delivered { 200 } else { 503 }),
            duration: Duration::from_millis(3),
            response_body: String::new(),
            error: (!delivered).then(|| "503".to_owned()),
        }
    }

    /// Two attempts at one event in one batch (its delivery's row touched twice) are both
    /// logged, in order; the other events of the batch are untouched by them; admission reads
    /// each event's state and its conversation's parked events.
    #[tokio::test]
    async fn a_batch_with_two_attempts_at_one_event_logs_both_in_order() {
        let pg = patchbay_testkit::postgres::PgServer::start()
            .await
            .expect("postgres");
        let pool = patchbay_store::connect(
            &pg.url(),
            "dispatcher",
            4,
            crate::MIGRATIONS,
            Duration::from_secs(30),
        )
        .await
        .expect("dispatcher schema");
        let (a, b) = (job("evt_a", "cnv_a"), job("evt_b", "cnv_b"));
        let done = record_attempt(
            &pool,
            vec![
                attempt(&a, 1, false),
                attempt(&b, 1, false),
                attempt(&a, 2, true),
            ],
        )
        .await
        .expect("logged");
        assert_eq!(done.len(), 3);
        let rows: Vec<(String, String, i32)> =
            sqlx::query_as("select event_id, status, attempts from deliveries order by event_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            rows,
            [
                ("evt_a".to_owned(), "delivered".to_owned(), 2),
                ("evt_b".to_owned(), "pending".to_owned(), 1),
            ]
        );
        let logged: Vec<(String, i32)> =
            sqlx::query_as("select event_id, attempt from attempts order by id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            logged,
            [
                ("evt_a".to_owned(), 1),
                ("evt_b".to_owned(), 1),
                ("evt_a".to_owned(), 2)
            ]
        );
        park(&pool, &job("evt_c", "cnv_b"), 0, Utc::now())
            .await
            .expect("parked");
        let admitted = admit(
            &pool,
            vec![
                Admission(job("evt_a", "cnv_a")),
                Admission(job("evt_d", "cnv_b")),
                Admission(job("evt_e", "cnv_e")),
            ],
        )
        .await
        .expect("admitted");
        assert_eq!(
            admitted,
            [
                (DeliveryState::Delivered, false),
                (DeliveryState::Pending, true),
                (DeliveryState::Pending, false)
            ]
        );
    }
}
