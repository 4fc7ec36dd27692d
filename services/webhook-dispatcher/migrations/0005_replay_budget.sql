-- Replays are paced per bot: each bot may reopen at most PATCHBAY_REPLAY_PER_MINUTE dead
-- letters per minute (a fixed window starting at its first replay), so one tenant replaying a
-- large backlog cannot fill the dispatch stream that every bot shares.
create table replay_budgets (
    bot_id        text primary key,
    window_start  timestamptz not null,
    used          integer not null default 0
);
