//! SQL of the `router` schema.

use chrono::{DateTime, Utc};
use patchbay_contract::ids::{derive_id, new_id, prefix, user_id};
use patchbay_contract::{
    ChannelRef, Content, DeliveryStatus, EventType, EventUser, HistoryMessage, HistoryPage,
    HistoryRequest, InboundEvent, Platform, Recipient, RpcError, SendSource, StatusEvent,
    UpsertContactRequest, UpsertedContact, UserProfile,
};
use sqlx::{PgPool, Row};

/// What storing an inbound event found or created.
pub struct StoredInbound {
    /// The event id first assigned to this platform event.
    pub event_id: String,
    /// A dispatch job for it was already stored (this is a platform retry).
    pub already_dispatched: bool,
    /// The sender.
    pub user: EventUser,
    /// The conversation.
    pub conversation_id: String,
    /// The stored message's id (for message events).
    pub message_id: String,
}

/// Records an inbound event: de-duplication row, user, conversation (window), message, in
/// one statement (so one round trip and one commit). A platform retry whose dispatch job was
/// already stored changes nothing but is reported as such.
pub async fn record_inbound(
    pool: &PgPool,
    ev: &InboundEvent,
) -> Result<StoredInbound, sqlx::Error> {
    let s = &ev.sender;
    let window_opened = (ev.event_type != EventType::UserUnsubscribed).then_some(ev.occurred_at);
    // The message id derives from the event id first assigned to this platform event: almost
    // always this delivery's (`ev.id`). When an earlier envelope of the same platform event
    // got another id, the message is stored by a second statement below.
    let message_id = derive_id(prefix::MESSAGE, &ev.id, 0);
    let row = sqlx::query(
        "with ie as (
             insert into inbound_events (dedupe_key, event_id, bot_id, event_type)
             values ($1, $2, $3, $4)
             on conflict (dedupe_key) do update set dedupe_key = excluded.dedupe_key
             returning event_id, dispatched_at),
         u as (
             insert into users (id, bot_id, channel_id, platform, platform_user_id, address,
                                display_name, username, locale, avatar_url, subscribed,
                                last_seen_at, email, phone)
             select $5, $3, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17
             from ie where ie.dispatched_at is null
             on conflict (channel_id, platform_user_id) do update set
                 address = excluded.address,
                 display_name = coalesce(excluded.display_name, users.display_name),
                 username = coalesce(excluded.username, users.username),
                 locale = coalesce(excluded.locale, users.locale),
                 avatar_url = coalesce(excluded.avatar_url, users.avatar_url),
                 email = coalesce(excluded.email, users.email),
                 phone = coalesce(excluded.phone, users.phone),
                 subscribed = excluded.subscribed,
                 last_seen_at = greatest(users.last_seen_at, excluded.last_seen_at)
             returning id, display_name, username, locale),
         c as (
             insert into conversations (id, bot_id, user_id, last_inbound_at)
             select $18, $3, u.id, $19 from u
             on conflict (user_id) do update set
                 last_inbound_at = greatest(conversations.last_inbound_at,
                                            excluded.last_inbound_at)
             returning id),
         m as (
             insert into messages (id, conversation_id, bot_id, direction, event_id,
                                   platform_message_id, content, status, created_at)
             select $20, c.id, $3, 'inbound', ie.event_id, $21, $22, 'received', $15
             from c cross join ie
             where $23 and ie.event_id = $2
             on conflict (id) do nothing)
         select ie.event_id, ie.dispatched_at, u.id as user_id, u.display_name, u.username,
                u.locale, c.id as conversation_id
         from ie left join u on true left join c on true",
    )
    .bind(&ev.dedupe_key)
    .bind(&ev.id)
    .bind(&ev.bot_id)
    .bind(ev.event_type.as_str())
    .bind(user_id(&ev.channel.id, &s.platform_user_id))
    .bind(&ev.channel.id)
    .bind(ev.channel.platform.as_str())
    .bind(&s.platform_user_id)
    .bind(&ev.address)
    .bind(&s.display_name)
    .bind(&s.username)
    .bind(&s.locale)
    .bind(&s.avatar_url)
    .bind(ev.event_type != EventType::UserUnsubscribed)
    .bind(ev.occurred_at)
    .bind(&s.email)
    .bind(&s.phone)
    .bind(new_id(prefix::CONVERSATION))
    .bind(window_opened)
    .bind(&message_id)
    .bind(ev.message.as_ref().map(|m| &m.platform_message_id))
    .bind(ev.message.as_ref().map(|m| sqlx::types::Json(&m.content)))
    .bind(ev.message.is_some())
    .fetch_one(pool)
    .await?;
    let event_id: String = row.get("event_id");
    let dispatched: Option<DateTime<Utc>> = row.get("dispatched_at");
    if dispatched.is_some() {
        return Ok(StoredInbound {
            message_id: derive_id(prefix::MESSAGE, &event_id, 0),
            event_id,
            already_dispatched: true,
            user: EventUser {
                id: String::new(),
                platform_user_id: s.platform_user_id.clone(),
                display_name: None,
                username: None,
                locale: None,
            },
            conversation_id: String::new(),
        });
    }
    let user = EventUser {
        id: row.get("user_id"),
        platform_user_id: s.platform_user_id.clone(),
        display_name: row.get("display_name"),
        username: row.get("username"),
        locale: row.get("locale"),
    };
    let conversation_id: String = row.get("conversation_id");
    let message_id = if event_id == ev.id {
        message_id
    } else {
        // A later envelope of a platform event first stored under another event id.
        let message_id = derive_id(prefix::MESSAGE, &event_id, 0);
        if let Some(m) = &ev.message {
            sqlx::query(
                "insert into messages (id, conversation_id, bot_id, direction, event_id,
                                       platform_message_id, content, status, created_at)
                 values ($1, $2, $3, 'inbound', $4, $5, $6, 'received', $7)
                 on conflict (id) do nothing",
            )
            .bind(&message_id)
            .bind(&conversation_id)
            .bind(&ev.bot_id)
            .bind(&event_id)
            .bind(&m.platform_message_id)
            .bind(sqlx::types::Json(&m.content))
            .bind(ev.occurred_at)
            .execute(pool)
            .await?;
        }
        message_id
    };
    Ok(StoredInbound {
        event_id,
        already_dispatched: false,
        user,
        conversation_id,
        message_id,
    })
}

/// Notes that the tenant events of `dedupe_keys` are stored (or were not wanted).
pub async fn mark_dispatched(pool: &PgPool, dedupe_keys: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("update inbound_events set dispatched_at = now() where dedupe_key = any($1)")
        .bind(dedupe_keys)
        .execute(pool)
        .await?;
    Ok(())
}

/// A resolved recipient.
pub struct Resolved {
    pub user_id: String,
    pub channel: ChannelRef,
    pub address: String,
    pub conversation_id: String,
    /// When the user last wrote, by the platform's clock: where the messaging window starts.
    pub last_inbound_at: Option<DateTime<Utc>>,
}

/// Finds the user a command is for, within `bot_id`.
pub async fn resolve_recipient(
    pool: &PgPool,
    bot_id: &str,
    to: &Recipient,
) -> Result<Option<Resolved>, sqlx::Error> {
    const SELECT: &str =
        "select u.id, u.channel_id, u.platform, u.address, c.id as conversation_id,
                                 c.last_inbound_at
                          from users u join conversations c on c.user_id = u.id";
    let row = match to {
        Recipient::User { user_id } => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SELECT} where u.id = $1 and u.bot_id = $2"
            )))
            .bind(user_id)
            .bind(bot_id)
            .fetch_optional(pool)
            .await?
        }
        Recipient::Address {
            platform,
            address,
            channel_id,
        } => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{SELECT} where u.bot_id = $1 and u.platform = $2 and u.address = $3
                   and ($4::text is null or u.channel_id = $4)
                 order by u.last_seen_at desc nulls last limit 1"
            )))
            .bind(bot_id)
            .bind(platform.as_str())
            .bind(address)
            .bind(channel_id)
            .fetch_optional(pool)
            .await?
        }
    };
    Ok(row.and_then(|r| {
        let platform: Platform = r.get::<String, _>("platform").parse().ok()?;
        Some(Resolved {
            user_id: r.get("id"),
            channel: ChannelRef {
                id: r.get("channel_id"),
                platform,
            },
            address: r.get("address"),
            conversation_id: r.get("conversation_id"),
            last_inbound_at: r.get("last_inbound_at"),
        })
    }))
}

/// Stores the outbound messages of a command as they will be sent, each `(sent, replaced)`:
/// the content handed to the sender (or refused), and, when a fallback template goes out in
/// its place, what the tenant asked to send. Idempotent: ids are derived from the command.
pub async fn insert_outbound(
    pool: &PgPool,
    bot_id: &str,
    conversation_id: &str,
    ids: &[String],
    messages: &[(&Content, Option<&Content>)],
    source: SendSource,
) -> Result<(), sqlx::Error> {
    let json = |c: &Content| serde_json::to_value(c).unwrap_or_default();
    let contents: Vec<serde_json::Value> = messages.iter().map(|(c, _)| json(c)).collect();
    let replaced: Vec<Option<serde_json::Value>> =
        messages.iter().map(|(_, r)| r.map(json)).collect();
    let source = serde_json::to_value(source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    sqlx::query(
        "insert into messages (id, conversation_id, bot_id, direction, content, replaced_content,
                               source, status)
         select id, $4, $5, 'outbound', content, replaced, $6, 'queued'
         from unnest($1::text[], $2::jsonb[], $3::jsonb[]) as t(id, content, replaced)
         on conflict (id) do nothing",
    )
    .bind(ids)
    .bind(&contents)
    .bind(&replaced)
    .bind(conversation_id)
    .bind(bot_id)
    .bind(source)
    .execute(pool)
    .await?;
    Ok(())
}

/// Who a status is about.
pub struct StatusOwner {
    pub user: EventUser,
    pub conversation_id: String,
}

/// The status a platform receipt moves outbound messages to, and from which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// From `sent`.
    Delivered,
    /// From `sent` or `delivered`.
    Read,
    /// From `sent` or `delivered` (WhatsApp reports most failures after accepting).
    Failed,
}

impl ReceiptStatus {
    /// The receipt status of an event type, if it is one.
    pub fn of(t: EventType) -> Option<Self> {
        match t {
            EventType::MessageDelivered => Some(Self::Delivered),
            EventType::MessageRead => Some(Self::Read),
            EventType::MessageFailed => Some(Self::Failed),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    fn from(self) -> &'static [&'static str] {
        match self {
            Self::Delivered => &["sent"],
            Self::Read | Self::Failed => &["sent", "delivered"],
        }
    }
}

/// An outbound message a receipt concerns.
pub struct ReceiptTarget {
    pub message_id: String,
    pub platform_message_id: Option<String>,
    pub conversation_id: String,
    pub user: EventUser,
}

/// The bot's outbound messages on the event's channel that `receipt` moves to `to`: those
/// with one of its platform ids, or (watermark) every one to the event's user created up to
/// the watermark; only those whose status can still move there. Oldest first.
pub async fn receipt_targets(
    pool: &PgPool,
    ev: &InboundEvent,
    receipt: &patchbay_contract::Receipt,
    to: ReceiptStatus,
) -> Result<Vec<ReceiptTarget>, sqlx::Error> {
    let from: Vec<String> = to.from().iter().map(|s| (*s).to_owned()).collect();
    let rows = sqlx::query(
        "select m.id as message_id, m.platform_message_id, c.id as conversation_id,
                u.id, u.platform_user_id, u.display_name, u.username, u.locale
         from messages m join conversations c on c.id = m.conversation_id
              join users u on u.id = c.user_id
         where m.bot_id = $1 and u.channel_id = $2 and m.direction = 'outbound'
           and m.status = any($3)
           and ((m.platform_message_id = any($4))
                or ($5::timestamptz is not null and u.platform_user_id = $6
                    and m.created_at <= $5))
         order by m.created_at, m.id",
    )
    .bind(&ev.bot_id)
    .bind(&ev.channel.id)
    .bind(&from)
    .bind(&receipt.platform_message_ids)
    .bind(receipt.watermark)
    .bind(&ev.sender.platform_user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|row| ReceiptTarget {
            message_id: row.get("message_id"),
            platform_message_id: row.get("platform_message_id"),
            conversation_id: row.get("conversation_id"),
            user: EventUser {
                id: row.get("id"),
                platform_user_id: row.get("platform_user_id"),
                display_name: row.get("display_name"),
                username: row.get("username"),
                locale: row.get("locale"),
            },
        })
        .collect())
}

/// Whether the bot has an outbound message with any of these platform ids.
pub async fn any_outbound_with_platform_id(
    pool: &PgPool,
    bot_id: &str,
    platform_ids: &[String],
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from messages where bot_id = $1 and direction = 'outbound'
                        and platform_message_id = any($2))",
    )
    .bind(bot_id)
    .bind(platform_ids)
    .fetch_one(pool)
    .await
}

/// Moves `ids` to `to` (only those still in a status it can move from).
pub async fn apply_receipt(
    pool: &PgPool,
    ids: &[String],
    to: ReceiptStatus,
    error: Option<&patchbay_contract::DeliveryError>,
) -> Result<(), sqlx::Error> {
    let from: Vec<String> = to.from().iter().map(|s| (*s).to_owned()).collect();
    sqlx::query(
        "update messages set status = $2, error = coalesce($3, error), updated_at = now()
         where id = any($1) and status = any($4)",
    )
    .bind(ids)
    .bind(to.name())
    .bind(error.map(sqlx::types::Json))
    .bind(&from)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a platform verdict on an outbound message; `None` if the message is unknown. A
/// `blocked` failure marks the user unsubscribed.
pub async fn record_status(
    pool: &PgPool,
    st: &StatusEvent,
) -> Result<Option<StatusOwner>, sqlx::Error> {
    let status = match st.status {
        DeliveryStatus::Sent => "sent",
        DeliveryStatus::Failed => "failed",
    };
    let row = sqlx::query(
        "with m as (
             update messages set
                 -- A redelivered `sent` never undoes a platform receipt.
                 status = case when $2 = 'sent' and status in ('delivered', 'read')
                               then status else $2 end,
                 platform_message_id = coalesce($3, platform_message_id),
                 error = $4, updated_at = now()
             where id = $1 and direction = 'outbound'
             returning conversation_id)
         select c.id as conversation_id, u.id, u.platform_user_id, u.display_name, u.username, u.locale
         from m join conversations c on c.id = m.conversation_id join users u on u.id = c.user_id",
    )
    .bind(&st.message_id)
    .bind(status)
    .bind(&st.platform_message_id)
    .bind(st.error.as_ref().map(sqlx::types::Json))
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let owner = StatusOwner {
        conversation_id: row.get("conversation_id"),
        user: EventUser {
            id: row.get("id"),
            platform_user_id: row.get("platform_user_id"),
            display_name: row.get("display_name"),
            username: row.get("username"),
            locale: row.get("locale"),
        },
    };
    if st.error.as_ref().is_some_and(|e| e.code == "blocked") {
        sqlx::query("update users set subscribed = false where id = $1")
            .bind(&owner.user.id)
            .execute(pool)
            .await?;
    }
    Ok(Some(owner))
}

const PROFILE: &str = "select u.id, u.bot_id, u.channel_id, u.platform, u.platform_user_id,
                              u.display_name, u.username, u.locale, u.avatar_url, u.subscribed,
                              u.last_seen_at, u.email, u.phone, c.last_inbound_at
                       from users u left join conversations c on c.user_id = u.id";

fn profile(r: &sqlx::postgres::PgRow) -> Option<UserProfile> {
    Some(UserProfile {
        id: r.get("id"),
        bot_id: r.get("bot_id"),
        channel: ChannelRef {
            id: r.get("channel_id"),
            platform: r.get::<String, _>("platform").parse().ok()?,
        },
        platform_user_id: r.get("platform_user_id"),
        display_name: r.get("display_name"),
        username: r.get("username"),
        locale: r.get("locale"),
        avatar_url: r.get("avatar_url"),
        email: r.get("email"),
        phone: r.get("phone"),
        subscribed: r.get("subscribed"),
        last_seen_at: r.get("last_seen_at"),
        last_inbound_at: r.get("last_inbound_at"),
    })
}

/// A user's profile, if `user_id` belongs to `bot_id`.
pub async fn user_profile(
    pool: &PgPool,
    bot_id: &str,
    user_id: &str,
) -> Result<Option<UserProfile>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{PROFILE} where u.id = $1 and u.bot_id = $2"
    )))
    .bind(user_id)
    .bind(bot_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().and_then(profile))
}

/// The profile of `bot_id`'s user with BrandChat's numeric id `number`.
pub async fn find_numbered_user(
    pool: &PgPool,
    bot_id: &str,
    number: i64,
) -> Result<Option<UserProfile>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{PROFILE} where u.bot_id = $1 and u.numeric_id = $2 limit 1"
    )))
    .bind(bot_id)
    .bind(number)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().and_then(profile))
}

/// The profile of `bot_id`'s user with this platform user id. A bot with several channels of
/// one platform may know the same person through each; the most recently seen one wins.
pub async fn find_user(
    pool: &PgPool,
    bot_id: &str,
    platform: Platform,
    platform_user_id: &str,
) -> Result<Option<UserProfile>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{PROFILE} where u.bot_id = $1 and u.platform = $2 and u.platform_user_id = $3
         order by u.last_seen_at desc nulls last limit 1"
    )))
    .bind(bot_id)
    .bind(platform.as_str())
    .bind(platform_user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().and_then(profile))
}

fn rpc_db(e: sqlx::Error) -> RpcError {
    if patchbay_store::is_unavailable(&e) {
        tracing::warn!(error = %e, "database unavailable");
        RpcError::new(503, "unavailable", "the router's database is unavailable")
    } else {
        tracing::error!(error = %e, "database");
        RpcError::new(500, "internal", "internal error; see the router's logs")
    }
}

/// Finds `req.bot_id`'s user by phone or e-mail (the most recently seen), or creates one on
/// `req.channel` with a conversation whose messaging window is closed (the contact has not
/// written yet).
pub async fn upsert_contact(
    pool: &PgPool,
    req: &UpsertContactRequest,
) -> Result<UpsertedContact, RpcError> {
    let c = &req.contact;
    let mut tx = pool.begin().await.map_err(rpc_db)?;
    let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{PROFILE} where u.bot_id = $1 and (u.phone = $2 or u.email = $3)
         order by (u.phone is not distinct from $2) desc, u.last_seen_at desc nulls last,
                  u.created_at
         limit 1"
    )))
    .bind(&req.bot_id)
    .bind(&c.phone)
    .bind(&c.email)
    .fetch_optional(&mut *tx)
    .await
    .map_err(rpc_db)?;
    let (user, created) = match existing.as_ref().and_then(profile) {
        Some(user) => {
            // Fill in what the contact adds.
            sqlx::query(
                "update users set phone = coalesce(phone, $2), email = coalesce(email, $3),
                                  display_name = coalesce(display_name, $4)
                 where id = $1",
            )
            .bind(&user.id)
            .bind(&c.phone)
            .bind(&c.email)
            .bind(&c.name)
            .execute(&mut *tx)
            .await
            .map_err(rpc_db)?;
            (user, false)
        }
        None => {
            let (Some(channel), Some(puid)) = (&req.channel, &req.platform_user_id) else {
                return Err(RpcError::new(
                    422,
                    "no_channel",
                    "this bot knows no one by that phone or e-mail, and has no channel to reach a new contact on",
                ));
            };
            let id = user_id(&channel.id, puid);
            let row = sqlx::query(
                "insert into users (id, bot_id, channel_id, platform, platform_user_id,
                                    address, display_name, email, phone)
                 values ($1, $2, $3, $4, $5, $5, $6, $7, $8)
                 on conflict (channel_id, platform_user_id) do update set
                     phone = coalesce(users.phone, excluded.phone),
                     email = coalesce(users.email, excluded.email),
                     display_name = coalesce(users.display_name, excluded.display_name)
                 returning id, bot_id, channel_id, platform, platform_user_id, display_name,
                           username, locale, avatar_url, subscribed, last_seen_at, email, phone,
                           (select last_inbound_at from conversations c
                            where c.user_id = users.id) as last_inbound_at",
            )
            .bind(&id)
            .bind(&req.bot_id)
            .bind(&channel.id)
            .bind(channel.platform.as_str())
            .bind(puid)
            .bind(&c.name)
            .bind(&c.email)
            .bind(&c.phone)
            .fetch_one(&mut *tx)
            .await
            .map_err(rpc_db)?;
            let user = profile(&row).ok_or_else(|| {
                RpcError::new(500, "internal", "stored user has an unknown platform")
            })?;
            (user, true)
        }
    };
    let conversation_id: String = sqlx::query(
        "insert into conversations (id, bot_id, user_id) values ($1, $2, $3)
         on conflict (user_id) do update set user_id = excluded.user_id
         returning id",
    )
    .bind(new_id(prefix::CONVERSATION))
    .bind(&req.bot_id)
    .bind(&user.id)
    .fetch_one(&mut *tx)
    .await
    .map_err(rpc_db)?
    .get("id");
    tx.commit().await.map_err(rpc_db)?;
    Ok(UpsertedContact {
        user,
        conversation_id,
        created,
    })
}

/// A page of a conversation's messages, newest first; 404 when it is not the bot's.
pub async fn history(pool: &PgPool, req: &HistoryRequest) -> Result<HistoryPage, RpcError> {
    let owned: Option<String> =
        sqlx::query_scalar("select id from conversations where id = $1 and bot_id = $2")
            .bind(&req.conversation_id)
            .bind(&req.bot_id)
            .fetch_optional(pool)
            .await
            .map_err(rpc_db)?;
    if owned.is_none() {
        return Err(RpcError::new(
            404,
            "not_found",
            format!("this bot has no conversation {}", req.conversation_id),
        ));
    }
    let limit = i64::from(req.limit.clamp(1, 200));
    let rows = sqlx::query(
        "select id, direction, content, status, source, platform_message_id, error, created_at
         from messages m
         where conversation_id = $1
           and ($2::text is null or (created_at, id) < (
                select created_at, id from messages where id = $2 and conversation_id = $1))
         order by created_at desc, id desc
         limit $3",
    )
    .bind(&req.conversation_id)
    .bind(&req.before)
    .bind(limit + 1)
    .fetch_all(pool)
    .await
    .map_err(rpc_db)?;
    let mut messages: Vec<HistoryMessage> = rows
        .iter()
        .filter_map(|r| {
            Some(HistoryMessage {
                id: r.get("id"),
                direction: r.get("direction"),
                content: serde_json::from_value(r.get("content")).ok()?,
                status: r.get("status"),
                source: r.get("source"),
                platform_message_id: r.get("platform_message_id"),
                error: r
                    .get::<Option<serde_json::Value>, _>("error")
                    .and_then(|e| serde_json::from_value(e).ok()),
                created_at: r.get("created_at"),
            })
        })
        .collect();
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    messages.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| messages.last().map(|m| m.id.clone()))
        .flatten();
    Ok(HistoryPage {
        messages,
        next_cursor,
    })
}

/// The profile of the user a send is for: by id, or by platform address (the most recently
/// seen one when several channels know it), always within `bot_id`.
pub async fn recipient_profile(
    pool: &PgPool,
    bot_id: &str,
    to: &Recipient,
) -> Result<Option<UserProfile>, sqlx::Error> {
    let (platform, address, channel_id) = match to {
        Recipient::User { user_id } => return user_profile(pool, bot_id, user_id).await,
        Recipient::Address {
            platform,
            address,
            channel_id,
        } => (platform, address, channel_id),
    };
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{PROFILE} where u.bot_id = $1 and u.platform = $2 and u.address = $3
           and ($4::text is null or u.channel_id = $4)
         order by u.last_seen_at desc nulls last limit 1"
    )))
    .bind(bot_id)
    .bind(platform.as_str())
    .bind(address)
    .bind(channel_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().and_then(profile))
}
