-- POST /v1/conversations finds a bot's user by phone or e-mail; custom channels and WhatsApp
-- give them. GET /v1/conversations/{id}/messages pages a conversation newest first.
alter table users add column email text, add column phone text;
create index users_bot_email on users (bot_id, email) where email is not null;
create index users_bot_phone on users (bot_id, phone) where phone is not null;
drop index messages_conversation;
create index messages_conversation on messages (conversation_id, created_at desc, id desc);
