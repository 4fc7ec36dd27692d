//! SQL of the `router` schema.

use chrono::{DateTime, Utc};
use patchbay_contract::fields::{FieldChanges, Fields};
use patchbay_contract::ids::{derive_id, message_ids, new_id, prefix, user_id};
use patchbay_contract::{
    ChannelRef, ChatKind, Content, DeliveryStatus, EventChat, EventType, EventUser, HandledBy,
    HistoryMessage, HistoryPage, HistoryRequest, InboundEvent, Platform, Recipient, RpcError,
    SendSource, StatusEvent, UpsertContactRequest, UpsertedContact, UserProfile,
};
use std::sync::Arc;

use patchbay_store::batch::{WaveConnection, in_order, waves};
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
    /// Who answers the conversation.
    pub handled_by: HandledBy,
    /// The group or room a member acted in, which owns the conversation.
    pub chat: Option<EventChat>,
}

/// An inbound event to record (see [`record_inbound`]).
#[derive(Clone)]
pub struct InboundRecord(pub Arc<InboundEvent>);

/// The statements of [`record_inbound`], one for a batch of inbound events: the de-duplication
/// rows first, then, for the events not dispatched already, the users, their conversations
/// (the window) and the messages; one answer row per event, numbered `i` from 1.
///
/// A user is keyed by their platform id, with one exception (`user_key`): a contact the bot
/// created by phone number before they ever wrote (keyed by the number, `POST
/// /v1/conversations`) who now writes under another id at the same address (WhatsApp's
/// business-scoped user id beside their number) stays that contact, unless a user of that id
/// exists already.
///
/// In a group or room (`chat_key`, the chat's platform id, when a member acted), the chat is a
/// user of its own (`g`, of `chat_kind`) that owns the conversation, and the member is the
/// sender (`um`): their address is their own id, and their subscription is theirs to change,
/// not the group's (a member who never wrote to the bot is not subscribed). Like every user,
/// a member has a conversation of their own (`cm`; no window opened by the group). The message
/// names the member. An event of the chat itself (the bot added or removed) has the chat as its
/// sender (`u`, with its `chat_kind`).
///
/// This is what [`RECORD_INBOUND`] and [`RECORD_INBOUND_IN_GROUPS`] share: the batch as a table
/// (`t`, with each sender's `user_key`), the de-duplication rows (`ie`) and the senders who are
/// not members of a group (`u`).
macro_rules! record_inbound_head {
    // `$params` and `$columns`: the group statement's arrays beyond the 22 both take; `$u_*`:
    // its chat kind on the senders it keeps in `u`.
    ($params:literal, $columns:literal, $u_column:literal, $u_value:literal, $u_where:literal,
     $u_update:literal) => {
        concat!(
            "
with t0 as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                         $12::text[], $13::text[], $14::boolean[], $15::timestamptz[],
                         $16::text[], $17::text[], $18::text[], $19::timestamptz[],
                         $20::text[], $21::text[], $22::jsonb[]",
            $params,
            ")
        with ordinality as t0(dedupe_key, event_id, bot_id, event_type, user_id, channel_id,
                             platform, platform_user_id, address, display_name, username,
                             locale, avatar_url, subscribed, occurred_at, email, phone,
                             conversation_id, window_opened, message_id, platform_message_id,
                             content",
            $columns,
            ", i)),
t as (
    select t0.*, case
        -- Only a sender whose address is not their id (WhatsApp's business-scoped ids) can be
        -- such a contact: the lookups are skipped for everyone else.
        when t0.address = t0.platform_user_id then t0.platform_user_id
        else coalesce(
            (select p.platform_user_id from users p
             where p.channel_id = t0.channel_id and p.platform_user_id = t0.address
               and p.address = p.platform_user_id and p.phone is not null
               and not exists (select 1 from users q
                               where q.channel_id = t0.channel_id
                                 and q.platform_user_id = t0.platform_user_id)),
            t0.platform_user_id)
        end as user_key
    from t0),
ie as (
    insert into inbound_events as e (dedupe_key, event_id, bot_id, event_type)
    select dedupe_key, event_id, bot_id, event_type from t
    on conflict (dedupe_key) do update set dedupe_key = excluded.dedupe_key
    returning e.dedupe_key, e.event_id, e.dispatched_at),
u as (
    insert into users as x (id, bot_id, channel_id, platform, platform_user_id, address,
                            display_name, username, locale, avatar_url, subscribed,
                            last_seen_at, email, phone",
            $u_column,
            ")
    select t.user_id, t.bot_id, t.channel_id, t.platform, t.user_key, t.address,
           t.display_name, t.username, t.locale, t.avatar_url, t.subscribed, t.occurred_at,
           t.email, t.phone",
            $u_value,
            "
    from t join ie on ie.dedupe_key = t.dedupe_key
    where ie.dispatched_at is null",
            $u_where,
            "
    on conflict (channel_id, platform_user_id) do update set
        address = excluded.address,",
            $u_update,
            "
        display_name = coalesce(excluded.display_name, x.display_name),
        username = coalesce(excluded.username, x.username),
        locale = coalesce(excluded.locale, x.locale),
        avatar_url = coalesce(excluded.avatar_url, x.avatar_url),
        email = coalesce(excluded.email, x.email),
        phone = coalesce(excluded.phone, x.phone),
        subscribed = excluded.subscribed,
        last_seen_at = greatest(x.last_seen_at, excluded.last_seen_at)
    returning x.id, x.channel_id, x.platform_user_id, x.display_name, x.username, x.locale,
              x.fields)"
        )
    };
}

/// [`record_inbound`]'s statement for a batch without groups or rooms (the common case): the
/// users, their conversations (the window) and the messages.
const RECORD_INBOUND: &str = concat!(
    record_inbound_head!("", "", "", "", "", ""),
    ",
c as (
    insert into conversations as v (id, bot_id, user_id, last_inbound_at, user_wrote_at)
    select t.conversation_id, t.bot_id, u.id, t.window_opened,
           case when t.content is not null then now() end
    from t join u on u.channel_id = t.channel_id and u.platform_user_id = t.user_key
    on conflict (user_id) do update set
        last_inbound_at = greatest(v.last_inbound_at, excluded.last_inbound_at),
        user_wrote_at = coalesce(excluded.user_wrote_at, v.user_wrote_at)
    returning v.id, v.user_id, v.handled_by),
m as (
    insert into messages (id, conversation_id, bot_id, direction, event_id,
                          platform_message_id, content, status, created_at)
    select t.message_id, c.id, t.bot_id, 'inbound', ie.event_id, t.platform_message_id,
           t.content, 'received', t.occurred_at
    from t join ie on ie.dedupe_key = t.dedupe_key
           join u on u.channel_id = t.channel_id and u.platform_user_id = t.user_key
           join c on c.user_id = u.id
    where t.content is not null and ie.event_id = t.event_id
    on conflict (id) do nothing)
select t.i, ie.event_id, ie.dispatched_at, u.id as user_id, u.display_name, u.username,
       u.locale, u.fields, c.id as conversation_id, c.handled_by,
       null::text as chat_user_id, null::text as chat_title, null::text as chat_kind
from t join ie on ie.dedupe_key = t.dedupe_key
       left join u on u.channel_id = t.channel_id and u.platform_user_id = t.user_key
       left join c on c.user_id = u.id
order by t.i"
);

/// [`record_inbound`]'s statement for a batch with events in groups or rooms: the chats (`g`),
/// the members (`um`) and their own conversations (`cm`), each event's sender and
/// conversation owner (`o`). It costs more per event than [`RECORD_INBOUND`], whose batches
/// carry none of the chat arrays.
const RECORD_INBOUND_IN_GROUPS: &str = concat!(
    record_inbound_head!(
        ", $23::text[], $24::text[], $25::text[], $26::text[], $27::text[]",
        ", chat_key, chat_user_id, chat_kind, chat_title, member_conversation_id",
        ", chat_kind",
        ", t.chat_kind",
        " and t.chat_key is null",
        "
        chat_kind = coalesce(excluded.chat_kind, x.chat_kind),"
    ),
    ",
um as (
    insert into users as x (id, bot_id, channel_id, platform, platform_user_id, address,
                            display_name, username, locale, avatar_url, subscribed,
                            last_seen_at)
    select t.user_id, t.bot_id, t.channel_id, t.platform, t.user_key, t.address,
           t.display_name, t.username, t.locale, t.avatar_url, false, t.occurred_at
    from t join ie on ie.dedupe_key = t.dedupe_key
    where ie.dispatched_at is null and t.chat_key is not null
    on conflict (channel_id, platform_user_id) do update set
        address = excluded.address,
        display_name = coalesce(excluded.display_name, x.display_name),
        username = coalesce(excluded.username, x.username),
        locale = coalesce(excluded.locale, x.locale),
        avatar_url = coalesce(excluded.avatar_url, x.avatar_url),
        last_seen_at = greatest(x.last_seen_at, excluded.last_seen_at)
    returning x.id, x.channel_id, x.platform_user_id, x.display_name, x.username, x.locale,
              x.fields),
g as (
    insert into users as x (id, bot_id, channel_id, platform, platform_user_id, address,
                            display_name, subscribed, last_seen_at, chat_kind)
    select t.chat_user_id, t.bot_id, t.channel_id, t.platform, t.chat_key, t.chat_key,
           t.chat_title, true, t.occurred_at, t.chat_kind
    from t join ie on ie.dedupe_key = t.dedupe_key
    where ie.dispatched_at is null and t.chat_key is not null
    on conflict (channel_id, platform_user_id) do update set
        display_name = coalesce(excluded.display_name, x.display_name),
        subscribed = true,
        chat_kind = excluded.chat_kind,
        last_seen_at = greatest(x.last_seen_at, excluded.last_seen_at)
    returning x.id, x.channel_id, x.platform_user_id, x.display_name, x.chat_kind),
s as (
    select u.* from u union all select um.* from um),
o as (
    select t.i, s.id as sender_id, coalesce(g.id, s.id) as owner_id
    from t join s on s.channel_id = t.channel_id and s.platform_user_id = t.user_key
           left join g on g.channel_id = t.channel_id and g.platform_user_id = t.chat_key),
c as (
    insert into conversations as v (id, bot_id, user_id, last_inbound_at, user_wrote_at)
    select t.conversation_id, t.bot_id, o.owner_id, t.window_opened,
           case when t.content is not null then now() end
    from t join o on o.i = t.i
    on conflict (user_id) do update set
        last_inbound_at = greatest(v.last_inbound_at, excluded.last_inbound_at),
        user_wrote_at = coalesce(excluded.user_wrote_at, v.user_wrote_at)
    returning v.id, v.user_id, v.handled_by),
cm as (
    insert into conversations (id, bot_id, user_id)
    select t.member_conversation_id, t.bot_id, o.sender_id
    from t join o on o.i = t.i
    where t.chat_key is not null
    on conflict (user_id) do nothing),
m as (
    insert into messages (id, conversation_id, bot_id, direction, event_id,
                          platform_message_id, content, status, created_at, sender_id)
    select t.message_id, c.id, t.bot_id, 'inbound', ie.event_id, t.platform_message_id,
           t.content, 'received', t.occurred_at,
           case when t.chat_key is not null then o.sender_id end
    from t join ie on ie.dedupe_key = t.dedupe_key
           join o on o.i = t.i
           join c on c.user_id = o.owner_id
    where t.content is not null and ie.event_id = t.event_id
    on conflict (id) do nothing)
select t.i, ie.event_id, ie.dispatched_at, s.id as user_id, s.display_name, s.username,
       s.locale, s.fields, c.id as conversation_id, c.handled_by, g.id as chat_user_id,
       g.display_name as chat_title, g.chat_kind
from t join ie on ie.dedupe_key = t.dedupe_key
       left join o on o.i = t.i
       left join s on s.id = o.sender_id
       left join g on g.id = o.owner_id and t.chat_key is not null
       left join c on c.user_id = o.owner_id
order by t.i"
);

/// The rows an inbound event writes, besides its message (named by its id, unique anyway):
/// two events of one batch naming one of them go in successive statements
/// ([`patchbay_store::batch::waves`]).
#[derive(PartialEq, Eq, Hash)]
enum InboundRow<'a> {
    Event(&'a str),
    User(&'a str, &'a str),
}

/// Records inbound events: for each its de-duplication row, user, conversation (window) and
/// message, by one set-based statement for the batch ([`RECORD_INBOUND`]: one round trip and
/// one commit). A platform retry whose dispatch job was already stored changes nothing but is
/// reported as such.
pub async fn record_inbound(
    pool: &PgPool,
    batch: Vec<InboundRecord>,
) -> Result<Vec<StoredInbound>, sqlx::Error> {
    let waves = waves(batch.iter().map(|InboundRecord(ev)| {
        [
            InboundRow::Event(&ev.dedupe_key),
            InboundRow::User(&ev.channel.id, &ev.sender.platform_user_id),
            // The group a member wrote in (else the sender again, which changes nothing).
            InboundRow::User(
                &ev.channel.id,
                if ev.member_chat().is_some() {
                    &ev.address
                } else {
                    &ev.sender.platform_user_id
                },
            ),
        ]
    }));
    let mut conn = WaveConnection::open(pool, waves.len()).await?;
    let mut answers = Vec::with_capacity(waves.len());
    for wave in &waves {
        let mut a = InboundArrays::with_capacity(wave.len());
        for InboundRecord(ev) in wave.iter().filter_map(|&i| batch.get(i)) {
            a.push(ev);
        }
        // The statement for groups costs more per event: only where an event is in one.
        let in_groups = wave
            .iter()
            .filter_map(|&i| batch.get(i))
            .any(|InboundRecord(ev)| ev.chat.is_some());
        let statement = if in_groups {
            RECORD_INBOUND_IN_GROUPS
        } else {
            RECORD_INBOUND
        };
        let query = sqlx::query(statement)
            .bind(a.dedupe_key)
            .bind(a.event_id)
            .bind(a.bot_id)
            .bind(a.event_type)
            .bind(a.user_id)
            .bind(a.channel_id)
            .bind(a.platform)
            .bind(a.platform_user_id)
            .bind(a.address)
            .bind(a.display_name)
            .bind(a.username)
            .bind(a.locale)
            .bind(a.avatar_url)
            .bind(a.subscribed)
            .bind(a.occurred_at)
            .bind(a.email)
            .bind(a.phone)
            .bind(a.conversation_id)
            .bind(a.window_opened)
            .bind(a.message_id)
            .bind(a.platform_message_id)
            .bind(a.content);
        let query = if in_groups {
            query
                .bind(a.chat_key)
                .bind(a.chat_user_id)
                .bind(a.chat_kind)
                .bind(a.chat_title)
                .bind(a.member_conversation_id)
        } else {
            query
        };
        let rows = query.fetch_all(conn.connection()).await?;
        answers.push(rows);
    }
    conn.finish().await?;
    let rows = in_order(batch.len(), &waves, answers)?;
    let mut out = Vec::with_capacity(batch.len());
    for (InboundRecord(ev), row) in batch.iter().zip(&rows) {
        out.push(stored_inbound(pool, ev, row).await?);
    }
    Ok(out)
}

/// The columns of a batch of inbound events, as arrays.
struct InboundArrays<'a> {
    dedupe_key: Vec<&'a str>,
    event_id: Vec<&'a str>,
    bot_id: Vec<&'a str>,
    event_type: Vec<&'static str>,
    user_id: Vec<String>,
    channel_id: Vec<&'a str>,
    platform: Vec<&'static str>,
    platform_user_id: Vec<&'a str>,
    address: Vec<&'a str>,
    display_name: Vec<Option<&'a str>>,
    username: Vec<Option<&'a str>>,
    locale: Vec<Option<&'a str>>,
    avatar_url: Vec<Option<&'a str>>,
    subscribed: Vec<bool>,
    occurred_at: Vec<DateTime<Utc>>,
    email: Vec<Option<&'a str>>,
    phone: Vec<Option<&'a str>>,
    conversation_id: Vec<String>,
    window_opened: Vec<Option<DateTime<Utc>>>,
    message_id: Vec<String>,
    platform_message_id: Vec<Option<&'a str>>,
    content: Vec<Option<sqlx::types::Json<&'a Content>>>,
    chat_key: Vec<Option<&'a str>>,
    chat_user_id: Vec<Option<String>>,
    chat_kind: Vec<Option<&'static str>>,
    chat_title: Vec<Option<&'a str>>,
    member_conversation_id: Vec<Option<String>>,
}

impl<'a> InboundArrays<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            dedupe_key: Vec::with_capacity(n),
            event_id: Vec::with_capacity(n),
            bot_id: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            channel_id: Vec::with_capacity(n),
            platform: Vec::with_capacity(n),
            platform_user_id: Vec::with_capacity(n),
            address: Vec::with_capacity(n),
            display_name: Vec::with_capacity(n),
            username: Vec::with_capacity(n),
            locale: Vec::with_capacity(n),
            avatar_url: Vec::with_capacity(n),
            subscribed: Vec::with_capacity(n),
            occurred_at: Vec::with_capacity(n),
            email: Vec::with_capacity(n),
            phone: Vec::with_capacity(n),
            conversation_id: Vec::with_capacity(n),
            window_opened: Vec::with_capacity(n),
            message_id: Vec::with_capacity(n),
            platform_message_id: Vec::with_capacity(n),
            content: Vec::with_capacity(n),
            chat_key: Vec::with_capacity(n),
            chat_user_id: Vec::with_capacity(n),
            chat_kind: Vec::with_capacity(n),
            chat_title: Vec::with_capacity(n),
            member_conversation_id: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, ev: &'a InboundEvent) {
        let s = &ev.sender;
        let subscribed = ev.event_type != EventType::UserUnsubscribed;
        self.dedupe_key.push(&ev.dedupe_key);
        self.event_id.push(&ev.id);
        self.bot_id.push(&ev.bot_id);
        self.event_type.push(ev.event_type.as_str());
        self.user_id
            .push(user_id(&ev.channel.id, &s.platform_user_id));
        self.channel_id.push(&ev.channel.id);
        self.platform.push(ev.channel.platform.as_str());
        self.platform_user_id.push(&s.platform_user_id);
        // A member of a group is reached, alone, at their own id.
        let member_of = ev.member_chat();
        self.address.push(if member_of.is_some() {
            &s.platform_user_id
        } else {
            &ev.address
        });
        self.chat_key.push(member_of.map(|_| ev.address.as_str()));
        self.chat_user_id
            .push(member_of.map(|_| user_id(&ev.channel.id, &ev.address)));
        self.chat_kind
            .push(ev.chat.as_ref().map(|c| c.kind.as_str()));
        self.chat_title
            .push(member_of.and_then(|c| c.title.as_deref()));
        self.member_conversation_id
            .push(member_of.map(|_| new_id(prefix::CONVERSATION)));
        self.display_name.push(s.display_name.as_deref());
        self.username.push(s.username.as_deref());
        self.locale.push(s.locale.as_deref());
        self.avatar_url.push(s.avatar_url.as_deref());
        self.subscribed.push(subscribed);
        self.occurred_at.push(ev.occurred_at);
        self.email.push(s.email.as_deref());
        self.phone.push(s.phone.as_deref());
        self.conversation_id.push(new_id(prefix::CONVERSATION));
        self.window_opened
            .push(subscribed.then_some(ev.occurred_at));
        // The message id derives from the event id first assigned to this platform event:
        // almost always this delivery's. When an earlier envelope of the same platform event
        // got another id, the message is stored by `stored_inbound`.
        self.message_id.push(derive_id(prefix::MESSAGE, &ev.id, 0));
        self.platform_message_id
            .push(ev.message.as_ref().map(|m| m.platform_message_id.as_str()));
        self.content
            .push(ev.message.as_ref().map(|m| sqlx::types::Json(&m.content)));
    }
}

/// What the batch statement found for one event.
async fn stored_inbound(
    pool: &PgPool,
    ev: &InboundEvent,
    row: &sqlx::postgres::PgRow,
) -> Result<StoredInbound, sqlx::Error> {
    let s = &ev.sender;
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
                fields: Fields::new(),
            },
            conversation_id: String::new(),
            handled_by: HandledBy::Bot,
            chat: None,
        });
    }
    let user = EventUser {
        id: row.get("user_id"),
        platform_user_id: s.platform_user_id.clone(),
        display_name: row.get("display_name"),
        username: row.get("username"),
        locale: row.get("locale"),
        fields: fields_of(row),
    };
    let conversation_id: String = row.get("conversation_id");
    let handled_by = row
        .get::<Option<String>, _>("handled_by")
        .map_or(HandledBy::Bot, |h| HandledBy::from_stored(&h));
    let chat = match (
        ev.member_chat(),
        row.get::<Option<String>, _>("chat_user_id"),
    ) {
        (Some(c), Some(id)) => Some(EventChat {
            id,
            platform_chat_id: ev.address.clone(),
            kind: c.kind,
            title: row.get("chat_title"),
        }),
        _ => None,
    };
    let message_id = derive_id(prefix::MESSAGE, &event_id, 0);
    if event_id != ev.id
        && let Some(m) = &ev.message
    {
        // A later envelope of a platform event first stored under another event id.
        sqlx::query(
            "insert into messages (id, conversation_id, bot_id, direction, event_id,
                                   platform_message_id, content, status, created_at, sender_id)
             values ($1, $2, $3, 'inbound', $4, $5, $6, 'received', $7, $8)
             on conflict (id) do nothing",
        )
        .bind(&message_id)
        .bind(&conversation_id)
        .bind(&ev.bot_id)
        .bind(&event_id)
        .bind(&m.platform_message_id)
        .bind(sqlx::types::Json(&m.content))
        .bind(ev.occurred_at)
        .bind(chat.as_ref().map(|_| &user.id))
        .execute(pool)
        .await?;
    }
    Ok(StoredInbound {
        event_id,
        already_dispatched: false,
        user,
        conversation_id,
        message_id,
        handled_by,
        chat,
    })
}

/// Notes that the events of `dedupe_keys` were handled without a dispatch (the tenant does not
/// get them), so their platform retries are dropped here.
pub async fn mark_dispatched(
    pool: &PgPool,
    dedupe_keys: Vec<String>,
) -> Result<Vec<()>, sqlx::Error> {
    sqlx::query("update inbound_events set dispatched_at = now() where dedupe_key = any($1)")
        .bind(&dedupe_keys)
        .execute(pool)
        .await?;
    Ok(vec![(); dedupe_keys.len()])
}

/// A resolved recipient.
pub struct Resolved {
    pub user_id: String,
    pub channel: ChannelRef,
    pub address: String,
    pub conversation_id: String,
    /// When the user last wrote, by the platform's clock: where the messaging window starts.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// Who answers the conversation.
    pub handled_by: HandledBy,
}

/// A recipient to resolve within a bot (see [`resolve_recipients`]).
#[derive(Clone)]
pub struct RecipientQuery {
    pub bot_id: String,
    pub to: Recipient,
}

/// Finds the users commands are for, each within its bot, by one call for the batch
/// (`resolve_recipients_batch`): by user id, or by platform address (the most recently seen
/// user with it, on the given channel if any).
pub async fn resolve_recipients(
    pool: &PgPool,
    batch: Vec<RecipientQuery>,
) -> Result<Vec<Option<Resolved>>, sqlx::Error> {
    let n = batch.len();
    let mut bot_ids = Vec::with_capacity(n);
    let mut user_ids = Vec::with_capacity(n);
    let mut platforms = Vec::with_capacity(n);
    let mut addresses = Vec::with_capacity(n);
    let mut channel_ids = Vec::with_capacity(n);
    for q in &batch {
        bot_ids.push(q.bot_id.as_str());
        match &q.to {
            Recipient::User { user_id } => {
                user_ids.push(Some(user_id.as_str()));
                platforms.push(None);
                addresses.push(None);
                channel_ids.push(None);
            }
            Recipient::Address {
                platform,
                address,
                channel_id,
            } => {
                user_ids.push(None);
                platforms.push(Some(platform.as_str()));
                addresses.push(Some(address.as_str()));
                channel_ids.push(channel_id.as_deref());
            }
        }
    }
    let rows = sqlx::query(
        "select i, user_id, channel_id, platform, address, conversation_id, last_inbound_at,
                handled_by
         from resolve_recipients_batch($1, $2, $3, $4, $5)",
    )
    .bind(&bot_ids)
    .bind(&user_ids)
    .bind(&platforms)
    .bind(&addresses)
    .bind(&channel_ids)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<Option<Resolved>> = (0..n).map(|_| None).collect();
    for r in &rows {
        let Some(slot) = index(r, n).and_then(|i| out.get_mut(i)) else {
            continue;
        };
        *slot = (|| {
            let platform: Platform = r.get::<String, _>("platform").parse().ok()?;
            Some(Resolved {
                user_id: r.get("user_id"),
                channel: ChannelRef {
                    id: r.get("channel_id"),
                    platform,
                },
                address: r.get("address"),
                conversation_id: r.get("conversation_id"),
                last_inbound_at: r.get("last_inbound_at"),
                handled_by: HandledBy::from_stored(&r.get::<String, _>("handled_by")),
            })
        })();
    }
    Ok(out)
}

/// The 0-based request index of a batch function's row (`i`, 1-based), if within `n`.
fn index(row: &sqlx::postgres::PgRow, n: usize) -> Option<usize> {
    let i: i32 = row.try_get("i").ok()?;
    let i = usize::try_from(i).ok()?.checked_sub(1)?;
    (i < n).then_some(i)
}

/// The outbound messages of one send command as they will be sent (see [`insert_outbound`]).
#[derive(Clone)]
pub struct OutboundRows {
    pub bot_id: String,
    pub conversation_id: String,
    pub source: SendSource,
    /// The human agent's or the broadcast's id the command named.
    pub source_id: Option<String>,
    /// Each message's id, the content handed to the sender (or refused), and, when a fallback
    /// template goes out in its place, what the tenant asked to send.
    pub messages: Vec<(String, Content, Option<Content>)>,
}

/// How many free-form messages the bot sent in `conversation_id` since the user's last
/// message was stored here, for a platform's quota per message from the user: outbound, not
/// templates, not failed (a refused message used none of the quota), and not among `except`
/// (the command being planned, whose messages a redelivery finds stored). Counted from when
/// Patchbay stored the user's message (an inbound row's `updated_at`: inbound rows are never
/// updated, and their `created_at` is the platform's timestamp, in whole seconds on WeChat, so
/// replies in the second before it would count against the new quota).
pub async fn counted_since_last_inbound(
    pool: &PgPool,
    conversation_id: &str,
    except: &[String],
) -> Result<u32, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "select count(*) from messages m
         where m.conversation_id = $1 and m.direction = 'outbound'
           and m.created_at > coalesce((select max(i.updated_at) from messages i
                                        where i.conversation_id = $1 and i.direction = 'inbound'),
                                       '-infinity')
           and m.content->>'type' <> 'template' and m.status not in ('failed', 'applied')
           and not (m.id = any($2))",
    )
    .bind(conversation_id)
    .bind(except)
    .fetch_one(pool)
    .await?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Stores the outbound messages of send commands, in one statement. Idempotent: ids are
/// derived from the commands. For each command, which of its messages this call created (the
/// others were stored by a redelivered or repeated command: they may have been published,
/// even sent, before).
pub async fn insert_outbound(
    pool: &PgPool,
    batch: Vec<OutboundRows>,
) -> Result<Vec<Vec<bool>>, sqlx::Error> {
    let total: usize = batch.iter().map(|b| b.messages.len()).sum();
    let mut ids = Vec::with_capacity(total);
    let mut contents = Vec::with_capacity(total);
    let mut replaced = Vec::with_capacity(total);
    let mut conversations = Vec::with_capacity(total);
    let mut bots = Vec::with_capacity(total);
    let mut sources = Vec::with_capacity(total);
    let mut source_ids = Vec::with_capacity(total);
    for b in &batch {
        let source = b.source.as_str();
        for (id, content, replaces) in &b.messages {
            ids.push(id.as_str());
            contents.push(sqlx::types::Json(content));
            replaced.push(replaces.as_ref().map(sqlx::types::Json));
            conversations.push(b.conversation_id.as_str());
            bots.push(b.bot_id.as_str());
            sources.push(source);
            source_ids.push(b.source_id.as_deref());
        }
    }
    let rows = sqlx::query(
        "insert into messages (id, conversation_id, bot_id, direction, content, replaced_content,
                               source, source_id, status)
         select id, conversation_id, bot_id, 'outbound', content, replaced, source, source_id,
                'queued'
         from unnest($1::text[], $2::jsonb[], $3::jsonb[], $4::text[], $5::text[], $6::text[],
                     $7::text[])
             as t(id, content, replaced, conversation_id, bot_id, source, source_id)
         on conflict (id) do nothing
         returning id",
    )
    .bind(&ids)
    .bind(&contents)
    .bind(&replaced)
    .bind(&conversations)
    .bind(&bots)
    .bind(&sources)
    .bind(&source_ids)
    .fetch_all(pool)
    .await?;
    let new: std::collections::HashSet<String> =
        rows.iter().map(|r| r.get::<String, _>(0)).collect();
    Ok(batch
        .iter()
        .map(|b| {
            b.messages
                .iter()
                .map(|(id, _, _)| new.contains(id))
                .collect()
        })
        .collect())
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

    /// The status's stored name.
    pub fn name(self) -> &'static str {
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
    /// Who sent it (outbound messages).
    pub source: Option<SendSource>,
    pub source_id: Option<String>,
}

/// The bot's outbound messages on the event's channel that `receipt` moves to `to`: those
/// with one of its platform ids, or (watermark) every one to the event's user created up to
/// the watermark; only those whose status can still move there. Oldest first.
///
/// A platform id may be shared by many users' messages (Viber's `broadcast_message` answers
/// one token for everyone in the call): a message whose id another message of the bot shares
/// moves only on a receipt from its own user.
pub async fn receipt_targets(
    pool: &PgPool,
    ev: &InboundEvent,
    receipt: &patchbay_contract::Receipt,
    to: ReceiptStatus,
) -> Result<Vec<ReceiptTarget>, sqlx::Error> {
    let from: Vec<String> = to.from().iter().map(|s| (*s).to_owned()).collect();
    let rows = sqlx::query(
        "select m.id as message_id, m.platform_message_id, c.id as conversation_id,
                m.source, m.source_id,
                u.id, u.platform_user_id, u.display_name, u.username, u.locale, u.fields
         from messages m join conversations c on c.id = m.conversation_id
              join users u on u.id = c.user_id
         where m.bot_id = $1 and u.channel_id = $2 and m.direction = 'outbound'
           and m.status = any($3)
           and ((m.platform_message_id = any($4)
                 and (u.platform_user_id = $6
                      or not exists (select 1 from messages o
                          where o.bot_id = m.bot_id and o.direction = 'outbound'
                            and o.platform_message_id = m.platform_message_id
                            and o.id <> m.id)))
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
    Ok(rows.iter().map(receipt_target).collect())
}

/// A row of [`receipt_targets`] or [`user_messages`]: the message, its conversation, its user.
fn receipt_target(row: &sqlx::postgres::PgRow) -> ReceiptTarget {
    ReceiptTarget {
        message_id: row.get("message_id"),
        platform_message_id: row.get("platform_message_id"),
        conversation_id: row.get("conversation_id"),
        // An inbound message has none.
        source: row
            .get::<Option<&str>, _>("source")
            .and_then(SendSource::from_stored),
        source_id: row.get("source_id"),
        user: EventUser {
            id: row.get("id"),
            platform_user_id: row.get("platform_user_id"),
            display_name: row.get("display_name"),
            username: row.get("username"),
            locale: row.get("locale"),
            fields: fields_of(row),
        },
    }
}

/// The inbound messages of `ev`'s sender on its channel with any of these platform ids (a
/// user can only withdraw their own), in their conversation or a group's.
pub async fn user_messages(
    pool: &PgPool,
    ev: &InboundEvent,
    platform_ids: &[String],
) -> Result<Vec<ReceiptTarget>, sqlx::Error> {
    let rows = sqlx::query(
        "select m.id as message_id, m.platform_message_id, c.id as conversation_id,
                m.source, m.source_id,
                u.id, u.platform_user_id, u.display_name, u.username, u.locale, u.fields
         from messages m join conversations c on c.id = m.conversation_id
              join users u on u.id = coalesce(m.sender_id, c.user_id)
         where m.bot_id = $1 and u.channel_id = $2 and u.platform_user_id = $3
           and m.direction = 'inbound' and m.platform_message_id = any($4)
         order by m.created_at, m.id",
    )
    .bind(&ev.bot_id)
    .bind(&ev.channel.id)
    .bind(&ev.sender.platform_user_id)
    .bind(platform_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(receipt_target).collect())
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
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let from: Vec<String> = to.from().iter().map(|s| (*s).to_owned()).collect();
    sqlx::query(
        "update messages set status = $2, error = coalesce($3, error), updated_at = now(),
                             timeline = coalesce(timeline, '{}'::jsonb)
                                        || jsonb_build_object($2::text, $5::timestamptz)
         where id = any($1) and status = any($4)",
    )
    .bind(ids)
    .bind(to.name())
    .bind(error.map(sqlx::types::Json))
    .bind(&from)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// A platform verdict to record (see [`record_status`]).
#[derive(Clone)]
pub struct StatusRecord(pub Arc<StatusEvent>);

/// Records platform verdicts on outbound messages by one call for the batch
/// (`record_status_batch`); each answers `None` if its message is unknown. A `blocked`
/// failure marks the user unsubscribed.
pub async fn record_status(
    pool: &PgPool,
    batch: Vec<StatusRecord>,
) -> Result<Vec<Option<StatusOwner>>, sqlx::Error> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut platform_ids = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut blocked = Vec::with_capacity(n);
    let mut ats = Vec::with_capacity(n);
    for StatusRecord(st) in &batch {
        ids.push(st.message_id.as_str());
        ats.push(st.at);
        statuses.push(match st.status {
            DeliveryStatus::Sent => "sent",
            // Held back while a human agent answers: shown as such in the conversation.
            DeliveryStatus::Failed
                if st
                    .error
                    .as_ref()
                    .is_some_and(|e| e.code == patchbay_contract::HUMAN_HANDOVER) =>
            {
                "suppressed"
            }
            DeliveryStatus::Failed => "failed",
        });
        platform_ids.push(st.platform_message_id.as_deref());
        errors.push(st.error.as_ref().map(sqlx::types::Json));
        blocked.push(st.error.as_ref().is_some_and(|e| e.code == "blocked"));
    }
    let rows = sqlx::query(
        "select i, conversation_id, user_id, platform_user_id, display_name, username, locale,
                fields
         from record_status_batch($1, $2, $3, $4, $5, $6)",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&platform_ids)
    .bind(&errors)
    .bind(&blocked)
    .bind(&ats)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<Option<StatusOwner>> = (0..n).map(|_| None).collect();
    for row in &rows {
        if let Some(slot) = index(row, n).and_then(|i| out.get_mut(i)) {
            *slot = Some(StatusOwner {
                conversation_id: row.get("conversation_id"),
                user: EventUser {
                    id: row.get("user_id"),
                    platform_user_id: row.get("platform_user_id"),
                    display_name: row.get("display_name"),
                    username: row.get("username"),
                    locale: row.get("locale"),
                    fields: fields_of(row),
                },
            });
        }
    }
    Ok(out)
}

/// The columns [`profile`] reads, as a select list over `users u` and `conversations c`.
macro_rules! profile_columns {
    () => {
        "select u.id, u.bot_id, u.channel_id, u.platform, u.platform_user_id, u.display_name,
                u.username, u.locale, u.avatar_url, u.subscribed, u.last_seen_at, u.email,
                u.phone, u.fields, u.chat_kind, u.broadcast_opt_out, c.last_inbound_at,
                c.handled_by"
    };
}

const PROFILE: &str = concat!(
    profile_columns!(),
    " from users u left join conversations c on c.user_id = u.id"
);

/// The `fields` column of `row` (a JSON object of strings; empty where absent).
fn fields_of(row: &sqlx::postgres::PgRow) -> Fields {
    row.try_get::<Option<sqlx::types::Json<Fields>>, _>("fields")
        .ok()
        .flatten()
        .map(|j| j.0)
        .unwrap_or_default()
}

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
        chat_kind: r
            .try_get::<Option<String>, _>("chat_kind")
            .ok()
            .flatten()
            .and_then(|k| ChatKind::from_stored(&k)),
        subscribed: r.get("subscribed"),
        broadcasts: !r.try_get::<bool, _>("broadcast_opt_out").unwrap_or(false),
        last_seen_at: r.get("last_seen_at"),
        last_inbound_at: r.get("last_inbound_at"),
        fields: fields_of(r),
        handled_by: r
            .try_get::<Option<String>, _>("handled_by")
            .ok()
            .flatten()
            .map(|h| HandledBy::from_stored(&h))
            .filter(|h| *h == HandledBy::Human),
    })
}

/// The channel and content of inbound message `message_id`, if it is `bot_id`'s and carries
/// media (what `GET /v1/media/{media_id}` downloads).
pub async fn media_source(
    pool: &PgPool,
    bot_id: &str,
    message_id: &str,
) -> Result<Option<patchbay_contract::MediaSource>, sqlx::Error> {
    let row = sqlx::query(
        "select u.channel_id, u.platform, m.content
         from messages m
         join conversations c on c.id = m.conversation_id
         join users u on u.id = c.user_id
         where m.id = $1 and m.bot_id = $2 and m.direction = 'inbound'",
    )
    .bind(message_id)
    .bind(bot_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| {
        let content: sqlx::types::Json<patchbay_contract::Content> = r.try_get("content").ok()?;
        let platform: String = r.get("platform");
        patchbay_contract::content::Media::of(&content.0)?;
        Some(patchbay_contract::MediaSource {
            channel_id: r.get("channel_id"),
            platform: serde_json::from_value(serde_json::Value::String(platform)).ok()?,
            content: content.0,
        })
    }))
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

/// Why a change to a user's fields was not made.
pub enum FieldsRefused {
    /// The bot has no such user.
    NoUser,
    /// The change breaks a limit ([`patchbay_contract::fields`]).
    Invalid(patchbay_contract::content::FieldError),
}

/// Marks the bot's user as getting its broadcasts or not; whether the bot has the user.
pub async fn set_broadcasts(
    pool: &PgPool,
    bot_id: &str,
    user_id: &str,
    wanted: bool,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("update users set broadcast_opt_out = $3 where id = $1 and bot_id = $2")
            .bind(user_id)
            .bind(bot_id)
            .bind(!wanted)
            .execute(pool)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Applies `changes` to the fields of `bot_id`'s user `user_id` (the row locked meanwhile, so
/// concurrent changes apply one after the other) and, in the same transaction, marks the
/// field messages `applied` that asked for them. Answers the user's fields as they are now.
pub async fn change_fields(
    pool: &PgPool,
    bot_id: &str,
    user_id: &str,
    changes: &FieldChanges,
    applied_messages: &[String],
) -> Result<Result<Fields, FieldsRefused>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let current: Option<sqlx::types::Json<Fields>> =
        sqlx::query_scalar("select fields from users where id = $1 and bot_id = $2 for update")
            .bind(user_id)
            .bind(bot_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(current) = current else {
        return Ok(Err(FieldsRefused::NoUser));
    };
    let fields = match patchbay_contract::fields::apply(&current.0, changes) {
        Ok(f) => f,
        Err(e) => return Ok(Err(FieldsRefused::Invalid(e))),
    };
    if fields != current.0 {
        sqlx::query("update users set fields = $2 where id = $1")
            .bind(user_id)
            .bind(sqlx::types::Json(&fields))
            .execute(&mut *tx)
            .await?;
    }
    if !applied_messages.is_empty() {
        sqlx::query(
            "update messages set status = 'applied', updated_at = now()
             where id = any($1) and direction = 'outbound'",
        )
        .bind(applied_messages)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(fields))
}

/// A page of `bot_id`'s users whose fields hold every value of `fields`, by id, after `after`.
pub async fn search_users(
    pool: &PgPool,
    bot_id: &str,
    fields: &Fields,
    after: Option<&str>,
    limit: u32,
) -> Result<patchbay_contract::UserPage, sqlx::Error> {
    let limit = limit.clamp(1, 200);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{PROFILE} where u.bot_id = $1 and u.fields @> $2 and u.id > coalesce($3::text, '')
         order by u.id limit $4"
    )))
    .bind(bot_id)
    .bind(sqlx::types::Json(fields))
    .bind(after)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let mut users: Vec<UserProfile> = rows.iter().filter_map(profile).collect();
    let next_cursor = if users.len() > limit as usize {
        users.truncate(limit as usize);
        users.last().map(|u| u.id.clone())
    } else {
        None
    };
    Ok(patchbay_contract::UserPage { users, next_cursor })
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
                           broadcast_opt_out,
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
    let owner: Option<String> =
        sqlx::query_scalar("select user_id from conversations where id = $1 and bot_id = $2")
            .bind(&req.conversation_id)
            .bind(&req.bot_id)
            .fetch_optional(pool)
            .await
            .map_err(rpc_db)?;
    let Some(user_id) = owner else {
        return Err(RpcError::new(
            404,
            "not_found",
            format!("this bot has no conversation {}", req.conversation_id),
        ));
    };
    let limit = i64::from(req.limit.clamp(1, 200));
    let rows = sqlx::query(
        "select id, direction, content, status, source, platform_message_id, error, sender_id,
                created_at
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
                sender_id: r.get("sender_id"),
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
        user_id: Some(user_id),
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

/// The template registry's operation `op` for `bot_id` (see [`patchbay_contract::TemplateOp`]):
/// the answer as JSON (a template, a list of them, or `null`), or the error to report.
pub async fn templates(
    pool: &PgPool,
    bot_id: &str,
    op: patchbay_contract::TemplateOp,
) -> Result<serde_json::Value, RpcError> {
    use patchbay_contract::TemplateOp;
    use patchbay_contract::templates::MAX_PER_BOT;
    let unavailable = |e: sqlx::Error| {
        tracing::error!(error = %e, "template registry failed");
        RpcError::new(503, "unavailable", "the database is unavailable")
    };
    let invalid = |e: patchbay_contract::content::FieldError| {
        RpcError::new(
            422,
            "invalid_template",
            format!("{}: {}", e.field, e.message),
        )
    };
    let no_such = |id: &str| RpcError::new(404, "not_found", format!("no template {id}"));
    let taken = |e: sqlx::Error, name: &str| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => RpcError::new(
            409,
            "name_taken",
            format!("the bot has a template named {name} already"),
        ),
        _ => unavailable(e),
    };
    const COLUMNS: &str = "id, bot_id, definition, variables, created_at, updated_at";
    let answer = |row: Option<sqlx::postgres::PgRow>, id: &str| {
        let row = row.ok_or_else(|| no_such(id))?;
        Ok::<_, RpcError>(json_of(&stored_template(&row)?))
    };
    match op {
        TemplateOp::Create { template } => {
            let variables = template.check().map_err(invalid)?;
            let count: i64 = sqlx::query_scalar("select count(*) from templates where bot_id = $1")
                .bind(bot_id)
                .fetch_one(pool)
                .await
                .map_err(unavailable)?;
            if count >= i64::try_from(MAX_PER_BOT).unwrap_or(i64::MAX) {
                return Err(RpcError::new(
                    422,
                    "too_many_templates",
                    format!("a bot keeps at most {MAX_PER_BOT} templates; delete some"),
                ));
            }
            let id = new_id(prefix::TEMPLATE);
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "insert into templates (id, bot_id, name, definition, variables)
                 values ($1, $2, $3, $4, $5) returning {COLUMNS}"
            )))
            .bind(&id)
            .bind(bot_id)
            .bind(&template.name)
            .bind(sqlx::types::Json(&template))
            .bind(&variables)
            .fetch_one(pool)
            .await
            .map_err(|e| taken(e, &template.name))?;
            answer(Some(row), &id)
        }
        TemplateOp::List => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from templates where bot_id = $1 order by name"
            )))
            .bind(bot_id)
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
            let items = rows
                .iter()
                .map(stored_template)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json_of(&items))
        }
        TemplateOp::Get { id } => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from templates where id = $1 and bot_id = $2"
            )))
            .bind(&id)
            .bind(bot_id)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?;
            answer(row, &id)
        }
        TemplateOp::Replace { id, template } => {
            let variables = template.check().map_err(invalid)?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "update templates set name = $3, definition = $4, variables = $5,
                        updated_at = now()
                 where id = $1 and bot_id = $2 returning {COLUMNS}"
            )))
            .bind(&id)
            .bind(bot_id)
            .bind(&template.name)
            .bind(sqlx::types::Json(&template))
            .bind(&variables)
            .fetch_optional(pool)
            .await
            .map_err(|e| taken(e, &template.name))?;
            answer(row, &id)
        }
        TemplateOp::Delete { id } => {
            let deleted = sqlx::query("delete from templates where id = $1 and bot_id = $2")
                .bind(&id)
                .bind(bot_id)
                .execute(pool)
                .await
                .map_err(unavailable)?
                .rows_affected();
            if deleted == 0 {
                return Err(no_such(&id));
            }
            Ok(serde_json::Value::Null)
        }
    }
}

fn json_of<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Template `id` of `bot_id`, for rendering a send.
pub async fn template(
    pool: &PgPool,
    bot_id: &str,
    id: &str,
) -> Result<Option<patchbay_contract::templates::StoredTemplate>, RpcError> {
    let row = sqlx::query(
        "select id, bot_id, definition, variables, created_at, updated_at
         from templates where id = $1 and bot_id = $2",
    )
    .bind(id)
    .bind(bot_id)
    .fetch_optional(pool)
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "reading a template failed");
        RpcError::new(503, "unavailable", "the database is unavailable")
    })?;
    row.as_ref().map(stored_template).transpose()
}

/// A conversation that changed hands ([`handover`], [`return_idle`]): its state now, the user
/// (for the event), and the agent who had it.
pub struct HandedOver {
    pub state: patchbay_contract::ConversationState,
    pub user_id: String,
    /// The agent holding it before (the hand-back's event names them).
    pub previous_agent: Option<String>,
}

/// Passes conversation `conversation_id` of `bot_id` to `to` (with `agent` taking it); `None`
/// when the bot has no such conversation. Nothing changes when it is there already with the
/// same agent (`changed` false: no event).
pub async fn handover(
    pool: &PgPool,
    bot_id: &str,
    conversation_id: &str,
    to: HandledBy,
    agent: Option<&str>,
) -> Result<Option<(HandedOver, bool)>, sqlx::Error> {
    let agent = agent.filter(|_| to == HandledBy::Human);
    let row = sqlx::query(
        "with old as (
             select id, handled_by, agent from conversations
             where id = $1 and bot_id = $2 for update),
         new as (
             update conversations c set
                 handled_by = $3, agent = $4, handed_over_at = now(), last_agent_at = null
             from old
             where c.id = old.id and (old.handled_by, old.agent) is distinct from ($3, $4)
             returning c.handed_over_at)
         select c.user_id, c.handled_by, c.agent, c.handed_over_at, old.agent as previous_agent,
                exists (select 1 from new) as changed,
                (select handed_over_at from new) as new_since
         from conversations c join old on old.id = c.id",
    )
    .bind(conversation_id)
    .bind(bot_id)
    .bind(to.as_str())
    .bind(agent)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let changed: bool = r.get("changed");
        // The update's own values: the select above reads the row as it was before it.
        let (handled_by, agent_now, since) = if changed {
            (to, agent.map(str::to_owned), r.get("new_since"))
        } else {
            (
                HandledBy::from_stored(&r.get::<String, _>("handled_by")),
                r.get("agent"),
                r.get("handed_over_at"),
            )
        };
        (
            HandedOver {
                state: patchbay_contract::ConversationState {
                    conversation_id: conversation_id.to_owned(),
                    handled_by,
                    agent: agent_now,
                    since,
                },
                user_id: r.get("user_id"),
                previous_agent: r.get("previous_agent"),
            },
            changed,
        )
    }))
}

/// An agent wrote in conversation `conversation_id`: its idle time starts again.
pub async fn agent_wrote(pool: &PgPool, conversation_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update conversations set last_agent_at = now()
         where id = $1 and handled_by = 'human'",
    )
    .bind(conversation_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Conversations humans hold with neither a hand-over nor an agent message for at least
/// `at_least` (the shortest idle time a bot may set): id, bot, and the later of the two.
pub async fn held_idle(
    pool: &PgPool,
    at_least: std::time::Duration,
) -> Result<Vec<(String, String, DateTime<Utc>)>, sqlx::Error> {
    let secs = f64::from(u32::try_from(at_least.as_secs()).unwrap_or(u32::MAX));
    let rows = sqlx::query(
        "select id, bot_id, greatest(handed_over_at, last_agent_at) as since
         from conversations
         where handled_by = 'human'
           and greatest(handed_over_at, last_agent_at) < now() - make_interval(secs => $1)
         order by since limit 500",
    )
    .bind(secs)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("id"), r.get("bot_id"), r.get("since")))
        .collect())
}

/// Returns conversation `id` to the bot if it is still held as it was at `since` (no hand-over
/// nor agent message after): another replica's sweep, or an agent, may have been first.
pub async fn return_idle(
    pool: &PgPool,
    id: &str,
    since: DateTime<Utc>,
) -> Result<Option<HandedOver>, sqlx::Error> {
    let row = sqlx::query(
        "with old as (
             select id, agent from conversations
             where id = $1 and handled_by = 'human'
               and greatest(handed_over_at, last_agent_at) = $2
             for update)
         update conversations c set handled_by = 'bot', agent = null,
                                    handed_over_at = now(), last_agent_at = null
         from old where c.id = old.id
         returning c.user_id, c.handed_over_at, old.agent as previous_agent",
    )
    .bind(id)
    .bind(since)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| HandedOver {
        state: patchbay_contract::ConversationState {
            conversation_id: id.to_owned(),
            handled_by: HandledBy::Bot,
            agent: None,
            since: r.get("handed_over_at"),
        },
        user_id: r.get("user_id"),
        previous_agent: r.get("previous_agent"),
    }))
}

fn journey_message(r: &sqlx::postgres::PgRow) -> patchbay_contract::JourneyMessage {
    patchbay_contract::JourneyMessage {
        id: r.get("id"),
        direction: r.get("direction"),
        conversation_id: r.get("conversation_id"),
        status: r.get("status"),
        platform_message_id: r.get("platform_message_id"),
        event_id: r.get("event_id"),
        source: r.get("source"),
        error: r
            .try_get::<Option<sqlx::types::Json<patchbay_contract::DeliveryError>>, _>("error")
            .ok()
            .flatten()
            .map(|j| j.0),
        created_at: r.get("created_at"),
        timeline: r
            .try_get::<Option<sqlx::types::Json<std::collections::BTreeMap<String, DateTime<Utc>>>>, _>(
                "timeline",
            )
            .ok()
            .flatten()
            .map(|j| j.0)
            .unwrap_or_default(),
    }
}

/// Message `message_id` of `bot_id` with what the router knows of its journey: when its event
/// was stored and, inbound, the bot's inline replies to it (their ids derive from the event's:
/// the dispatcher's command is `inline:<event id>`).
pub async fn journey(
    pool: &PgPool,
    bot_id: &str,
    message_id: &str,
) -> Result<Option<patchbay_contract::JourneyRecord>, sqlx::Error> {
    const COLUMNS: &str = "id, direction, conversation_id, status, platform_message_id, \
                           event_id, source, error, created_at, timeline";
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from messages where id = $1 and bot_id = $2"
    )))
    .bind(message_id)
    .bind(bot_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let message = journey_message(&row);
    let (stored_at, replies) = match (&message.event_id, message.direction.as_str()) {
        (Some(event_id), "inbound") => {
            let stored_at: Option<DateTime<Utc>> = sqlx::query_scalar(
                "select min(created_at) from inbound_events where event_id = $1",
            )
            .bind(event_id)
            .fetch_one(pool)
            .await?;
            let ids = message_ids(bot_id, &format!("inline:{event_id}"), 10);
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "select {COLUMNS} from messages where id = any($1) and bot_id = $2
                 order by created_at, id"
            )))
            .bind(&ids)
            .bind(bot_id)
            .fetch_all(pool)
            .await?;
            (stored_at, rows.iter().map(journey_message).collect())
        }
        _ => (None, Vec::new()),
    };
    Ok(Some(patchbay_contract::JourneyRecord {
        message,
        stored_at,
        replies,
    }))
}

/// A bot's conversations, those a human holds and whose user is waiting for an answer first,
/// then by the user's last message, newest first.
pub async fn inbox(
    pool: &PgPool,
    req: &patchbay_contract::InboxRequest,
) -> Result<Vec<patchbay_contract::InboxEntry>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select * from (
             {}, c.id as conversation_id, c.agent, c.handed_over_at,
                    c.user_wrote_at,
                    coalesce(c.handled_by = 'human'
                             and c.user_wrote_at > greatest(c.handed_over_at, c.last_agent_at),
                             false) as waiting
             from users u join conversations c on c.user_id = u.id
             where c.bot_id = $1 and ($2::text is null or c.handled_by = $2)) x
         order by waiting desc, user_wrote_at desc nulls last, conversation_id
         limit $3",
        profile_columns!()
    )))
    .bind(&req.bot_id)
    .bind(req.handled_by.map(HandledBy::as_str))
    .bind(i64::from(req.limit.clamp(1, 200)))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let user = profile(r)?;
            Some(patchbay_contract::InboxEntry {
                conversation_id: r.get("conversation_id"),
                handled_by: user.handled_by.unwrap_or(HandledBy::Bot),
                user_wrote_at: r.get("user_wrote_at"),
                user,
                agent: r.get("agent"),
                since: r.get("handed_over_at"),
                waiting: r.get::<Option<bool>, _>("waiting").unwrap_or(false),
            })
        })
        .collect())
}

fn stored_template(
    row: &sqlx::postgres::PgRow,
) -> Result<patchbay_contract::templates::StoredTemplate, RpcError> {
    let def: sqlx::types::Json<patchbay_contract::templates::TemplateDef> =
        row.try_get("definition").map_err(|e| {
            tracing::error!(error = %e, "a stored template does not read");
            RpcError::new(500, "internal", "a stored template does not read")
        })?;
    Ok(patchbay_contract::templates::StoredTemplate {
        id: row.get("id"),
        bot_id: row.get("bot_id"),
        def: def.0,
        variables: row.get("variables"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use patchbay_contract::{ChannelRef, InboundMessage, PlatformUser, V1};

    async fn database() -> (patchbay_testkit::postgres::PgServer, PgPool) {
        let pg = patchbay_testkit::postgres::PgServer::start()
            .await
            .expect("postgres");
        let pool = patchbay_store::connect(
            &pg.url(),
            "router",
            4,
            crate::MIGRATIONS,
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("router schema");
        (pg, pool)
    }

    fn message(id: &str, dedupe_key: &str, user: &str, text: &str, at_s: i64) -> InboundRecord {
        InboundRecord(Arc::new(InboundEvent {
            v: V1,
            id: id.into(),
            event_type: EventType::MessageReceived,
            bot_id: "bot_1".into(),
            channel: ChannelRef {
                id: "chn_1".into(),
                platform: Platform::Telegram,
            },
            occurred_at: DateTime::from_timestamp(1_800_000_000 + at_s, 0).unwrap(),
            sender: PlatformUser {
                platform_user_id: user.into(),
                display_name: Some(format!("{user} {text}")),
                username: None,
                locale: None,
                avatar_url: None,
                email: None,
                phone: None,
            },
            address: user.into(),
            chat: None,
            dedupe_key: dedupe_key.into(),
            message: Some(InboundMessage {
                platform_message_id: dedupe_key.into(),
                content: Content::Text { text: text.into() },
            }),
            referral: None,
            resubscribed: false,
            receipt: None,
        }))
    }

    /// One set-based statement cannot touch a row twice: a batch holding two messages of one
    /// user, and two envelopes of one platform event, is written in waves, each request
    /// answered as if it had been alone, in order.
    #[tokio::test]
    async fn a_batch_touching_one_row_twice_is_recorded_in_order() {
        let (_pg, pool) = database().await;
        let batch = vec![
            message("evt_a1", "tg:1", "alice", "one", 1),
            message("evt_b", "tg:2", "bob", "hi", 2),
            message("evt_a2", "tg:3", "alice", "two", 3),
            // The platform's retry of alice's first message, in another envelope.
            message("evt_a1bis", "tg:1", "alice", "one", 1),
        ];
        let stored = record_inbound(&pool, batch).await.expect("recorded");
        let ids: Vec<&str> = stored.iter().map(|s| s.event_id.as_str()).collect();
        assert_eq!(ids, ["evt_a1", "evt_b", "evt_a2", "evt_a1"]);
        assert!(stored.iter().all(|s| !s.already_dispatched));
        let alice = &stored[0];
        assert_eq!(alice.user.id, stored[2].user.id);
        assert_eq!(alice.conversation_id, stored[2].conversation_id);
        assert_eq!(alice.conversation_id, stored[3].conversation_id);
        assert_ne!(alice.user.id, stored[1].user.id);
        // The profile as the later message left it.
        assert_eq!(stored[2].user.display_name.as_deref(), Some("alice two"));
        let messages: Vec<(String, String)> = sqlx::query_as(
            "select m.event_id, m.content->>'text' from messages m order by m.created_at, m.id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            messages,
            [
                ("evt_a1".to_owned(), "one".to_owned()),
                ("evt_b".to_owned(), "hi".to_owned()),
                ("evt_a2".to_owned(), "two".to_owned()),
            ],
            "one message per platform event"
        );
        let window: DateTime<Utc> =
            sqlx::query_scalar("select last_inbound_at from conversations where id = $1")
                .bind(&alice.conversation_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            window.timestamp(),
            1_800_000_003,
            "the latest message opened it"
        );
    }

    /// Two verdicts on one message in one batch: both answered, the later one kept.
    #[tokio::test]
    async fn two_verdicts_on_one_message_in_a_batch_apply_in_order() {
        let (_pg, pool) = database().await;
        let stored = record_inbound(&pool, vec![message("evt_1", "tg:1", "carol", "hey", 0)])
            .await
            .expect("recorded");
        let conversation = &stored[0].conversation_id;
        insert_outbound(
            &pool,
            vec![OutboundRows {
                bot_id: "bot_1".into(),
                conversation_id: conversation.clone(),
                source: SendSource::Api,
                source_id: None,
                messages: vec![("msg_out".into(), Content::Text { text: "x".into() }, None)],
            }],
        )
        .await
        .expect("outbound stored");
        let verdict = |status: DeliveryStatus, error: Option<&str>| {
            StatusRecord(Arc::new(StatusEvent {
                v: V1,
                id: format!("evt_{status:?}"),
                message_id: "msg_out".into(),
                bot_id: "bot_1".into(),
                channel: ChannelRef {
                    id: "chn_1".into(),
                    platform: Platform::Telegram,
                },
                status,
                platform_message_id: Some("42".into()),
                error: error.map(|code| patchbay_contract::DeliveryError {
                    code: code.into(),
                    message: code.into(),
                    platform_code: None,
                }),
                at: Utc::now(),
                source: Some(SendSource::Api),
                source_id: None,
                also: Vec::new(),
            }))
        };
        let unknown = StatusRecord(Arc::new(StatusEvent {
            message_id: "msg_unknown".into(),
            ..(*verdict(DeliveryStatus::Sent, None).0).clone()
        }));
        let owners = record_status(
            &pool,
            vec![
                verdict(DeliveryStatus::Sent, None),
                unknown,
                verdict(DeliveryStatus::Failed, Some("blocked")),
            ],
        )
        .await
        .expect("recorded");
        assert_eq!(owners.len(), 3);
        assert_eq!(owners[0].as_ref().unwrap().user.id, stored[0].user.id);
        assert!(owners[1].is_none(), "an unknown message has no owner");
        assert_eq!(owners[2].as_ref().unwrap().conversation_id, *conversation);
        let (status, subscribed): (String, bool) = sqlx::query_as(
            "select m.status, u.subscribed from messages m join conversations c
             on c.id = m.conversation_id join users u on u.id = c.user_id where m.id = 'msg_out'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(status, "failed", "the later verdict is kept");
        assert!(!subscribed, "a blocked failure unsubscribes the user");
    }
}
