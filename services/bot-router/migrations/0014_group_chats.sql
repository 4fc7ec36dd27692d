-- Groups and rooms as conversations of their own (LINE groups and rooms, Telegram groups).
-- The chat is a "user" of kind `group` or `room` that owns the conversation; each member who
-- writes in it is a user of their own, named on the messages they wrote there.
alter table users add column chat_kind text;
alter table messages add column sender_id text;

-- Before, a member who wrote in a group took the group's id as their address, so a message
-- meant for them alone went to the group. On LINE and Telegram a person's address is their id.
update users set address = platform_user_id
 where platform in ('line', 'telegram') and address <> platform_user_id;
