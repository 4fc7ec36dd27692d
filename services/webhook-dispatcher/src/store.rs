//! SQL of the `dispatcher` schema: the attempts log, delivered events, and the outbox of
//! parked events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use patchbay_contract::DispatchJob;
use sqlx::{PgPool, Row};

/// A parked event claimed by the scheduler.
pub struct Parked {
    pub id: i64,
    pub job: DispatchJob,
    pub attempts: i32,
}

/// Whether the event was delivered already.
pub async fn delivered(pool: &PgPool, event_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("select 1 from delivered where event_id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await?
        .is_some())
}

/// Records a delivery.
pub async fn mark_delivered(pool: &PgPool, event_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("insert into delivered (event_id) values ($1) on conflict do nothing")
        .bind(event_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Whether the conversation has events waiting (new ones must queue behind them).
pub async fn has_parked(pool: &PgPool, conversation_id: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("select 1 from parked where conversation_id = $1 limit 1")
            .bind(conversation_id)
            .fetch_optional(pool)
            .await?
            .is_some(),
    )
}

/// Parks an event (idempotent per event id).
pub async fn park(
    pool: &PgPool,
    job: &DispatchJob,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into parked (conversation_id, bot_id, event_id, job, attempts, next_attempt_at)
         values ($1, $2, $3, $4, $5, $6) on conflict (event_id) do nothing",
    )
    .bind(&job.event.conversation_id)
    .bind(&job.event.bot_id)
    .bind(&job.event.id)
    .bind(sqlx::types::Json(job))
    .bind(attempts)
    .bind(next_attempt_at)
    .execute(pool)
    .await?;
    Ok(())
}

fn parked(row: &sqlx::postgres::PgRow) -> Option<Parked> {
    let job: sqlx::types::Json<DispatchJob> = row.try_get("job").ok()?;
    Some(Parked {
        id: row.get("id"),
        job: job.0,
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
