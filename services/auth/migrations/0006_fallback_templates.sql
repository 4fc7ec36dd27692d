-- A bot's fallback templates per platform (platform name → {"name", "language",
-- "body_parameters"}), sent instead of free-form messages outside a messaging window.
alter table bots add column fallback_templates jsonb not null default '{}'::jsonb;
