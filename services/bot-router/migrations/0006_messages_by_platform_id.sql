-- Platform receipts (message.delivered, message.read, failed WhatsApp statuses) name the
-- platform's message id; the router finds the bot's outbound message by it.
create index messages_bot_platform_message on messages (bot_id, platform_message_id)
    where direction = 'outbound' and platform_message_id is not null;
