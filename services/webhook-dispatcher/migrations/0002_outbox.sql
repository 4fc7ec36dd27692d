-- Events that could not be delivered at once wait here, per conversation, in arrival order.
-- The consumer acknowledges them to JetStream once parked, so a failing tenant never holds
-- messages in the shared consumer; the scheduler retries the head of each conversation.
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

-- Events delivered (2xx): a redelivered dispatch job is not posted again.
create table delivered (
    event_id      text primary key,
    delivered_at  timestamptz not null default now()
);
