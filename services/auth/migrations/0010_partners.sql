-- Partner apps (`patchbay_contract::partners`): partners with their own key, the apps they
-- publish (the definition whole, as checked; the webhook secret sealed for the app), and the
-- apps' installations on bots. An installation's access tokens live with the other keys
-- (kind 'access'), naming it and the channels they may send through; ending the installation
-- ends them.
create table partners (
    id          text primary key,
    name        text not null,
    key_hash    text not null unique,
    created_at  timestamptz not null default now()
);

create table apps (
    id            text primary key,
    partner_id    text not null references partners (id) on delete cascade,
    definition    jsonb not null,
    secret_sealed text not null,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);
create index apps_partner on apps (partner_id);

create table installations (
    id          text primary key,
    app_id      text not null references apps (id) on delete cascade,
    bot_id      text not null references bots (id) on delete cascade,
    -- Some of the bot's channels; null: all of them.
    channels    text[],
    created_at  timestamptz not null default now(),
    unique (app_id, bot_id)
);
create index installations_bot on installations (bot_id);

alter table api_keys add column installation_id text references installations (id) on delete cascade,
                     add column channels text[];
create index api_keys_installation on api_keys (installation_id) where installation_id is not null;
