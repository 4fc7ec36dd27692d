-- Callbacks can be limited to some platforms (empty: every platform).
alter table bots add column webhook_platforms jsonb not null default '[]';
