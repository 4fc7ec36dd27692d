-- A message's journey (`GET /v1/messages/{id}/journey`): when each of its stages happened
-- after it was stored (`sent`, `failed`, `suppressed`: the sender's time of the platform's
-- answer; `delivered`, `read`, and `failed` reported later: the platform's time of the
-- receipt), kept by the statements that already change its status, so no stage costs a round
-- trip of its own.
alter table messages add column timeline jsonb;

-- The status batch, with the time of each verdict. The five-argument form stays for replicas
-- of the previous release during a rolling update.
create function record_status_batch(
    p_message_id text[], p_status text[], p_platform_message_id text[], p_error jsonb[],
    p_blocked boolean[], p_at timestamptz[])
returns table (i integer, conversation_id text, user_id text, platform_user_id text,
               display_name text, username text, locale text, fields jsonb)
language plpgsql as $$
#variable_conflict use_column
declare
    v_conversation text;
    v_user text;
begin
    for k in 1 .. coalesce(cardinality(p_message_id), 0) loop
        update messages set
            -- A redelivered `sent` never undoes a platform receipt.
            status = case when p_status[k] = 'sent' and status in ('delivered', 'read')
                          then status else p_status[k] end,
            platform_message_id = coalesce(p_platform_message_id[k], platform_message_id),
            error = p_error[k], updated_at = now(),
            timeline = coalesce(timeline, '{}'::jsonb)
                       || jsonb_build_object(p_status[k], p_at[k])
        where id = p_message_id[k] and direction = 'outbound'
        returning messages.conversation_id into v_conversation;
        if not found then
            continue;
        end if;
        select c.user_id into v_user from conversations c where c.id = v_conversation;
        if p_blocked[k] then
            update users set subscribed = false where id = v_user;
        end if;
        return query
        select k, v_conversation, u.id, u.platform_user_id, u.display_name, u.username,
               u.locale, u.fields
        from users u where u.id = v_user;
    end loop;
end
$$;
