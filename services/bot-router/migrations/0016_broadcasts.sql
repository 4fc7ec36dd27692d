-- Broadcasts: one message to many users of a bot.

-- A bot can mark a user as not wanting its broadcasts (`PATCH /v1/users/{id}`
-- `{"broadcasts": false}`); conversations go on.
alter table users add column broadcast_opt_out boolean not null default false;

-- A bot's users in id order: an audience is stored a page at a time from where it stopped.
create index users_bot_id on users (bot_id, id);

create table broadcasts (
    id text primary key,
    bot_id text not null,
    -- What the tenant asked for (`BroadcastSpec`): audience, messages or template, start.
    spec jsonb not null,
    -- scheduled | queueing | sending | cancelled | completed (`paused` is the flag below).
    state text not null,
    paused boolean not null default false,
    start_at timestamptz not null,
    -- The last user id whose audience row is stored (the audience is stored in id order).
    queued_to text,
    -- The last recipient handed to the send path (released in user id order).
    released_to text,
    -- The replica driving it, until when.
    owner text,
    lease_until timestamptz,
    -- Recipients by state, kept by the triggers below.
    recipients bigint not null default 0,
    queued bigint not null default 0,
    released bigint not null default 0,
    sent bigint not null default 0,
    delivered bigint not null default 0,
    read bigint not null default 0,
    failed bigint not null default 0,
    skipped bigint not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    finished_at timestamptz
) with (fillfactor = 50);

create index broadcasts_by_bot on broadcasts (bot_id, id desc);
create index broadcasts_active on broadcasts (start_at)
    where state in ('scheduled', 'queueing', 'sending');

-- One row per recipient, stored before anything goes out: queued → released (handed to the
-- send path) → sent → delivered → read, or failed / skipped with a reason.
create table broadcast_recipients (
    broadcast_id text not null references broadcasts (id) on delete cascade,
    user_id text not null,
    state text not null,
    reason text,
    -- The id of the recipient's last message (set when released): its `sent` means all went.
    message_id text,
    primary key (broadcast_id, user_id)
);

create index broadcast_recipients_released on broadcast_recipients (broadcast_id, user_id)
    where state = 'released';
create index broadcast_recipients_reasons on broadcast_recipients (broadcast_id, state, reason)
    where state in ('failed', 'skipped');

-- The counts follow every change of a recipient's state, a statement at a time. The rows of
-- `broadcasts` are locked in id order first, so statements touching several broadcasts cannot
-- deadlock on them.
create function broadcast_recipients_inserted() returns trigger language plpgsql as $$
begin
    perform 1 from broadcasts b
        where b.id in (select distinct broadcast_id from new_rows) order by b.id for update;
    update broadcasts b set
        recipients = b.recipients + d.total,
        queued = b.queued + d.queued,
        released = b.released + d.released,
        sent = b.sent + d.sent,
        delivered = b.delivered + d.delivered,
        read = b.read + d.read,
        failed = b.failed + d.failed,
        skipped = b.skipped + d.skipped,
        updated_at = now()
    from (
        select broadcast_id,
            count(*) as total,
            count(*) filter (where state = 'queued') as queued,
            count(*) filter (where state = 'released') as released,
            count(*) filter (where state = 'sent') as sent,
            count(*) filter (where state = 'delivered') as delivered,
            count(*) filter (where state = 'read') as read,
            count(*) filter (where state = 'failed') as failed,
            count(*) filter (where state = 'skipped') as skipped
        from new_rows group by broadcast_id
    ) d
    where b.id = d.broadcast_id;
    return null;
end $$;

create function broadcast_recipients_moved() returns trigger language plpgsql as $$
begin
    perform 1 from broadcasts b
        where b.id in (select distinct broadcast_id from new_rows) order by b.id for update;
    update broadcasts b set
        queued = b.queued + d.queued,
        released = b.released + d.released,
        sent = b.sent + d.sent,
        delivered = b.delivered + d.delivered,
        read = b.read + d.read,
        failed = b.failed + d.failed,
        skipped = b.skipped + d.skipped,
        updated_at = now()
    from (
        select n.broadcast_id,
            count(*) filter (where n.state = 'queued') - count(*) filter (where o.state = 'queued') as queued,
            count(*) filter (where n.state = 'released') - count(*) filter (where o.state = 'released') as released,
            count(*) filter (where n.state = 'sent') - count(*) filter (where o.state = 'sent') as sent,
            count(*) filter (where n.state = 'delivered') - count(*) filter (where o.state = 'delivered') as delivered,
            count(*) filter (where n.state = 'read') - count(*) filter (where o.state = 'read') as read,
            count(*) filter (where n.state = 'failed') - count(*) filter (where o.state = 'failed') as failed,
            count(*) filter (where n.state = 'skipped') - count(*) filter (where o.state = 'skipped') as skipped
        from new_rows n
        join old_rows o on o.broadcast_id = n.broadcast_id and o.user_id = n.user_id
        where n.state <> o.state
        group by n.broadcast_id
    ) d
    where b.id = d.broadcast_id;
    return null;
end $$;

create trigger broadcast_recipients_inserted after insert on broadcast_recipients
    referencing new table as new_rows
    for each statement execute function broadcast_recipients_inserted();

create trigger broadcast_recipients_moved after update on broadcast_recipients
    referencing old table as old_rows new table as new_rows
    for each statement execute function broadcast_recipients_moved();

-- Where a status or receipt of a broadcast's message moves its recipient (only forward:
-- released → sent → delivered → read; failed or skipped from any state not final yet). `sent`
-- and later count only for the recipient's last message; a failure of any message counts.
create function broadcast_outcomes(
    p_broadcasts text[], p_users text[], p_messages text[], p_states text[], p_reasons text[]
) returns void language sql as $$
    update broadcast_recipients r set state = x.state, reason = x.reason
    from (
        select distinct on (b, u) b, u, m, state, reason
        from unnest(p_broadcasts, p_users, p_messages, p_states, p_reasons) as t(b, u, m, state, reason)
        order by b, u, case state when 'failed' then 0 when 'skipped' then 1 when 'read' then 2
            when 'delivered' then 3 else 4 end
    ) x
    where r.broadcast_id = x.b and r.user_id = x.u
      and case x.state
          when 'failed' then r.state in ('queued', 'released', 'sent')
          when 'skipped' then r.state in ('queued', 'released')
          when 'sent' then r.state = 'released' and r.message_id = x.m
          when 'delivered' then r.state in ('released', 'sent') and r.message_id = x.m
          when 'read' then r.state in ('released', 'sent', 'delivered') and r.message_id = x.m
          else false
      end
$$;
