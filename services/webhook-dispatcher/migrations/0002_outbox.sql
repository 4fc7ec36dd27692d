-- Events that could not be delivered at once wait here, per conversation, in arrival order.
-- The consumer acknowledges them to JetStream once parked, so a failing tenant never holds
-- messages in the consumer all tenants share; the scheduler retries the head of each
-- conversation.
create table parked (
    id               bigserial primary key,
    conversation_id  text not null,
    bot_id           text not null,
    event_id         text not null unique,
    job              jsonb not null,
    attempts         integer not null default 0,
    next_attempt_at  timestamptz not null,
    leased_until     timestamptz,
    created_at       timestamptz not null default now()
);
create index parked_conversation on parked (conversation_id, id);
create index parked_due on parked (next_attempt_at);

-- One row per event handed to the dispatcher: where its delivery stands (the delivery API
-- reads it; a delivered event is never posted again unless retried or replayed).
create table deliveries (
    event_id          text primary key,
    bot_id            text not null,
    conversation_id   text not null,
    event_type        text not null,
    status            text not null check (status in ('pending', 'delivered', 'failed')),
    attempts          integer not null default 0,
    last_status_code  integer,
    last_error        text,
    job               jsonb not null,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
create index deliveries_bot_time on deliveries (bot_id, created_at desc, event_id desc);
create index deliveries_bot_failed on deliveries (bot_id, created_at) where status = 'failed';
