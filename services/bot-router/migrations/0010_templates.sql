-- The template registry (`/v1/templates`): a bot's named templates, each with the form every
-- platform needs (patchbay_contract::templates::TemplateDef, kept whole as JSON) and the
-- variables its forms use.
create table templates (
    id          text primary key,
    bot_id      text not null,
    name        text not null,
    definition  jsonb not null,
    variables   text[] not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    unique (bot_id, name)
);
