-- A delivery's row is written once, with the outcome of its first attempt, instead of as
-- `pending` at admission and again after the attempt. Admission only reads: whether the event
-- is known (a redelivery or a platform retry: delivered or dead-lettered already, or reopened
-- by a retry or replay) and whether earlier events of its conversation are parked. The row is
-- created by the first of: the attempt log (`record_attempts_batch`), parking (`park`), dead
-- lettering (`mark_failed`). An event in its first attempt has no row yet; a crash before the
-- attempt is logged re-posts it on redelivery, as before (same `webhook-id`).
-- `admit_batch` and `record_attempt_batch` (0003) stay for dispatchers of the previous
-- version during a rolling upgrade.

create function admission_batch(p_event_id text[], p_conversation_id text[])
returns table (i integer, status text, parked boolean)
language plpgsql stable as $$
#variable_conflict use_column
begin
    for k in 1 .. coalesce(cardinality(p_event_id), 0) loop
        return query
        select k,
               (select d.status from deliveries d where d.event_id = p_event_id[k]),
               exists (select 1 from parked p where p.conversation_id = p_conversation_id[k]);
    end loop;
end
$$;

-- Logs callback attempts and records each outcome on its delivery, creating the delivery
-- (with its job, for retries and replays) on its first attempt.
create function record_attempts_batch(
    p_event_id text[], p_delivered boolean[], p_status_code integer[], p_error text[],
    p_bot_id text[], p_event_type text[], p_attempt integer[], p_url text[],
    p_duration_ms integer[], p_response_body text[], p_conversation_id text[],
    p_job jsonb[])
returns void
language plpgsql as $$
#variable_conflict use_column
begin
    for k in 1 .. coalesce(cardinality(p_event_id), 0) loop
        insert into attempts (event_id, bot_id, event_type, attempt, url, status_code,
                              duration_ms, response_body, error)
        values (p_event_id[k], p_bot_id[k], p_event_type[k], p_attempt[k], p_url[k],
                p_status_code[k], p_duration_ms[k], p_response_body[k], p_error[k]);
        insert into deliveries as d (event_id, bot_id, conversation_id, event_type, status,
                                     job, attempts, last_status_code, last_error)
        values (p_event_id[k], p_bot_id[k], p_conversation_id[k], p_event_type[k],
                case when p_delivered[k] then 'delivered' else 'pending' end, p_job[k], 1,
                p_status_code[k], p_error[k])
        on conflict (event_id) do update set
            attempts = d.attempts + 1,
            last_status_code = excluded.last_status_code,
            last_error = excluded.last_error,
            status = case when p_delivered[k] then 'delivered' else d.status end,
            updated_at = now();
    end loop;
end
$$;
