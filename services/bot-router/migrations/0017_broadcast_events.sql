-- When a broadcast's `broadcast.completed` event was handed to the dispatcher. A broadcast is
-- driven until then: a cancelled one until what was already on its way has an outcome, so the
-- event's counts are final.
alter table broadcasts add column announced_at timestamptz;
update broadcasts set announced_at = coalesce(finished_at, now())
    where state in ('completed', 'cancelled');

-- What the drivers look for: every broadcast not yet announced.
drop index broadcasts_active;
create index broadcasts_active on broadcasts (start_at) where announced_at is null;
