//! Re-sealing auth's sealed columns with the current master key (`patchbay master-key reseal`).
//!
//! Each value is rewritten by one statement that names the value it replaces
//! (`… where id = $2 and sealed = $3`): a compare-and-set, so a value that `auth` changed
//! meanwhile (a rotation expiring a secret) is read again, never overwritten. Values already
//! sealed with the current key are left alone, so a pass can be interrupted and run again.

use patchbay_config::MasterKey;
use patchbay_config::secrets::ResealCounts;
use patchbay_contract::brandchat::key_owner;
use sqlx::{PgPool, Row};

/// How often one value is read again when it keeps changing under the pass.
const ATTEMPTS: usize = 20;

/// One column of sealed values.
struct Column {
    /// `<schema>.<table>.<column>`, as reported.
    place: &'static str,
    /// Every row: `id` (text), `bot_id`, `sealed`.
    list: &'static str,
    /// One row's `sealed` by id ($1).
    read: &'static str,
    /// Sets `sealed` to $1 where the id is $2 and `sealed` is still $3.
    write: &'static str,
    /// The associated data of a row's value, from its id and bot.
    owner: fn(&str, &str) -> String,
}

const COLUMNS: &[Column] = &[
    Column {
        place: "auth.webhook_secrets.sealed",
        list: "select id::text as id, bot_id, sealed from webhook_secrets order by id",
        read: "select sealed from webhook_secrets where id = $1::bigint",
        write: "update webhook_secrets set sealed = $1 where id = $2::bigint and sealed = $3",
        owner: |_, bot_id| bot_id.to_owned(),
    },
    Column {
        place: "auth.api_keys.sealed",
        list: "select id, bot_id, sealed from api_keys where sealed is not null order by id",
        read: "select sealed from api_keys where id = $1",
        write: "update api_keys set sealed = $1 where id = $2 and sealed = $3",
        owner: |_, bot_id| key_owner(bot_id),
    },
    Column {
        place: "auth.channels.credentials_sealed",
        list: "select id, bot_id, credentials_sealed as sealed from channels order by id",
        read: "select credentials_sealed as sealed from channels where id = $1",
        write: "update channels set credentials_sealed = $1 where id = $2 and credentials_sealed = $3",
        owner: |id, _| id.to_owned(),
    },
    Column {
        place: "auth.apps.secret_sealed",
        list: "select id, partner_id as bot_id, secret_sealed as sealed from apps order by id",
        read: "select secret_sealed as sealed from apps where id = $1",
        write: "update apps set secret_sealed = $1 where id = $2 and secret_sealed = $3",
        owner: |id, _| id.to_owned(),
    },
];

/// Re-seals every sealed value of schema `auth` (`pool`'s search path) with `key`'s current
/// key, or with `check` only counts: per column, the values already current, re-sealed (or to
/// re-seal) and those no key held opens. Fails only when the database does.
pub async fn reseal(
    pool: &PgPool,
    key: &MasterKey,
    check: bool,
) -> Result<Vec<(&'static str, ResealCounts)>, sqlx::Error> {
    let mut out = Vec::with_capacity(COLUMNS.len());
    for column in COLUMNS {
        let mut counts = ResealCounts::default();
        for row in sqlx::query(column.list).fetch_all(pool).await? {
            let id: String = row.get("id");
            let owner = (column.owner)(&id, row.get("bot_id"));
            let place = format!("{} {id}", column.place);
            let mut sealed: String = row.get("sealed");
            for attempt in 0.. {
                if attempt == ATTEMPTS {
                    counts
                        .failed
                        .push(format!("{place}: kept changing; run the pass again"));
                    break;
                }
                let mut one = ResealCounts::default();
                let Some(new) = one.reseal(key, &place, &owner, &sealed) else {
                    counts.add(one);
                    break;
                };
                if check {
                    counts.add(one);
                    break;
                }
                let written = sqlx::query(column.write)
                    .bind(&new)
                    .bind(&id)
                    .bind(&sealed)
                    .execute(pool)
                    .await?
                    .rows_affected();
                if written == 1 {
                    counts.add(one);
                    break;
                }
                // Changed or deleted since it was read: read it again.
                match sqlx::query(column.read)
                    .bind(&id)
                    .fetch_optional(pool)
                    .await?
                    .and_then(|r| r.get::<Option<String>, _>("sealed"))
                {
                    Some(s) => sealed = s,
                    None => break,
                }
            }
        }
        out.push((column.place, counts));
    }
    Ok(out)
}
