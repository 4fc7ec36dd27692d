-- Access tokens and refresh tokens (`POST /v1/auth/token`). An access token is a short-lived
-- credential with its API key's scopes, kept beside the keys (kind 'access') so every service
-- finds it as it finds a key; the family is one exchange of an API key and every refresh
-- after it. Refresh tokens rotate on use: a used one presented again revokes its family.
alter table api_keys add column kind text not null default 'key',
                     add column family_id text;
create index api_keys_family on api_keys (family_id) where family_id is not null;
create index api_keys_access_expiry on api_keys (expires_at) where kind = 'access';

create table refresh_tokens (
    id          text primary key,
    family_id   text not null,
    bot_id      text not null references bots (id) on delete cascade,
    -- The API key the family was exchanged for: revoking or expiring it ends the family.
    key_id      text not null references api_keys (id) on delete cascade,
    token_hash  text not null unique,
    scopes      text[],
    expires_at  timestamptz not null,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now()
);
create index refresh_tokens_family on refresh_tokens (family_id);
create index refresh_tokens_key on refresh_tokens (key_id);
create index refresh_tokens_expiry on refresh_tokens (expires_at);
