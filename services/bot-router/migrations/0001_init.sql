-- bot-router owns users, conversations, messages and the inbound de-duplication record.
create table users (
    id                text primary key,
    bot_id            text not null,
    channel_id        text not null,
    platform          text not null,
    platform_user_id  text not null,
    address           text not null,
    display_name      text,
    username          text,
    locale            text,
    avatar_url        text,
    subscribed        boolean not null default true,
    created_at        timestamptz not null default now(),
    last_seen_at      timestamptz,
    unique (channel_id, platform_user_id)
);
create index users_bot_address on users (bot_id, platform, address);

create table conversations (
    id               text primary key,
    bot_id           text not null,
    user_id          text not null unique references users (id),
    last_inbound_at  timestamptz,
    handled_by       text not null default 'bot',
    created_at       timestamptz not null default now()
);

-- One row per platform event ever received: catches platform retries that arrive after the
-- stream's duplicate window, and remembers whether the tenant event was already stored.
create table inbound_events (
    dedupe_key     text primary key,
    event_id       text not null,
    bot_id         text not null,
    event_type     text not null,
    created_at     timestamptz not null default now(),
    dispatched_at  timestamptz
);

create table messages (
    id                   text primary key,
    conversation_id      text not null references conversations (id),
    bot_id               text not null,
    direction            text not null check (direction in ('inbound', 'outbound')),
    event_id             text,
    platform_message_id  text,
    content              jsonb not null,
    source               text,
    status               text not null,
    error                jsonb,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now()
);
create index messages_conversation on messages (conversation_id, created_at);
