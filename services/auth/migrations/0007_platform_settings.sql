-- A bot's settings per platform (platform name → {"send_outside_window"?, "welcome"?}),
-- checked by the platform's crate: billed sends outside a window, a welcome message.
alter table bots add column platform_settings jsonb not null default '{}'::jsonb;
