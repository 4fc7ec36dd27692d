-- Per bot: how long a conversation stays with a human agent without an agent message before it
-- returns to the bot (seconds; null: the default, 30 minutes).
alter table bots add column handover_idle_secs integer;
