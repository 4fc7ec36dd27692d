-- auth owns tenants, bots, their secrets and keys, and channels.
create table tenants (
    id          text primary key,
    name        text not null,
    created_at  timestamptz not null default now()
);

insert into tenants (id, name) values ('ten_default', 'Default tenant');

create table bots (
    id               text primary key,
    tenant_id        text not null references tenants (id),
    name             text not null,
    enabled          boolean not null default true,
    webhook_url      text,
    webhook_flavour  text not null default 'native',
    webhook_events   jsonb not null,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);

-- Standard Webhooks signing secrets, sealed with the master key; several during a rotation.
create table webhook_secrets (
    id          bigserial primary key,
    bot_id      text not null references bots (id) on delete cascade,
    sealed      text not null,
    expires_at  timestamptz,
    created_at  timestamptz not null default now()
);
create index webhook_secrets_bot on webhook_secrets (bot_id);

-- API keys, stored as SHA-256 only.
create table api_keys (
    id          text primary key,
    bot_id      text not null references bots (id) on delete cascade,
    key_hash    text not null unique,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now()
);
create index api_keys_bot on api_keys (bot_id);

-- Channels: one bot's connection to one messenger account; credentials sealed.
create table channels (
    id                  text primary key,
    bot_id              text not null references bots (id) on delete cascade,
    platform            text not null,
    credentials_sealed  text not null,
    api_base_url        text,
    enabled             boolean not null default true,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);
create index channels_bot on channels (bot_id);
