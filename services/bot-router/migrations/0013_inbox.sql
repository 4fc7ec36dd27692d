-- An inbox: a bot's conversations, those waiting for a human first. `user_wrote_at` is when
-- Patchbay received the user's last message (the window's `last_inbound_at` is the platform's
-- clock, which cannot be compared with a hand-over's); the inbound statement sets it in the
-- update it makes anyway. Indexed by bot only (a column no update changes), so the window's
-- updates stay HOT.
alter table conversations add column user_wrote_at timestamptz;
create index conversations_by_bot on conversations (bot_id);
