-- A bot's own API request limit (both null: the installation's default).
alter table bots add column rate_per_second integer;
alter table bots add column rate_burst integer;
