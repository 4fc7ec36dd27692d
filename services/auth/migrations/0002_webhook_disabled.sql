-- A callback endpoint that answered 410 Gone is disabled until an operator re-enables it.
alter table bots add column webhook_disabled_reason text;
alter table bots add column webhook_disabled_at timestamptz;
