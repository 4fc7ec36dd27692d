-- GET /v1/users?platform=…&platform_user_id=… looks a bot's user up by the platform's id.
create index users_bot_platform_user on users (bot_id, platform, platform_user_id);
