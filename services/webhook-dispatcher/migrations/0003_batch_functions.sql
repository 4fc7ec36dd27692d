-- Group commit (patchbay_store::batch): the hot path's two statements for a whole batch of
-- concurrent handlers, in one call (one round trip, one commit). Each function runs the
-- single-row statement it replaces once per element, in order, inside the call: the same SQL
-- with the same plans (primary-key lookups, whatever the tables' statistics), and two elements
-- touching one row simply run one after the other. Arrays are parallel, one element per
-- request; results come back with the element's 1-based index `i`.

-- Registers an event for delivery (once): where its delivery stands, and whether earlier
-- events of its conversation are parked.
create function admit_batch(
    p_event_id text[], p_bot_id text[], p_conversation_id text[], p_event_type text[],
    p_job jsonb[])
returns table (i integer, status text, parked boolean)
language plpgsql as $$
#variable_conflict use_column
begin
    for k in 1 .. coalesce(cardinality(p_event_id), 0) loop
        return query
        with d as (
             insert into deliveries as x (event_id, bot_id, conversation_id, event_type,
                                          status, job)
             values (p_event_id[k], p_bot_id[k], p_conversation_id[k], p_event_type[k],
                     'pending', p_job[k])
             on conflict (event_id) do update set event_id = excluded.event_id
             returning x.status)
        select k, d.status,
               exists (select 1 from parked p where p.conversation_id = p_conversation_id[k])
        from d;
    end loop;
end
$$;

-- Logs callback attempts and records each outcome on its delivery's summary.
create function record_attempt_batch(
    p_event_id text[], p_delivered boolean[], p_status_code integer[], p_error text[],
    p_bot_id text[], p_event_type text[], p_attempt integer[], p_url text[],
    p_duration_ms integer[], p_response_body text[])
returns void
language plpgsql as $$
#variable_conflict use_column
begin
    for k in 1 .. coalesce(cardinality(p_event_id), 0) loop
        insert into attempts (event_id, bot_id, event_type, attempt, url, status_code,
                              duration_ms, response_body, error)
        values (p_event_id[k], p_bot_id[k], p_event_type[k], p_attempt[k], p_url[k],
                p_status_code[k], p_duration_ms[k], p_response_body[k], p_error[k]);
        update deliveries set attempts = attempts + 1, last_status_code = p_status_code[k],
            last_error = p_error[k],
            status = case when p_delivered[k] then 'delivered' else status end,
            updated_at = now()
        where event_id = p_event_id[k];
    end loop;
end
$$;
