-- webhook-dispatcher owns the log of every callback attempt.
create table attempts (
    id             bigserial primary key,
    event_id       text not null,
    bot_id         text not null,
    event_type     text not null,
    attempt        integer not null,
    url            text not null,
    status_code    integer,
    duration_ms    integer not null,
    response_body  text,
    error          text,
    created_at     timestamptz not null default now()
);
create index attempts_event on attempts (event_id);
create index attempts_bot_time on attempts (bot_id, created_at);
