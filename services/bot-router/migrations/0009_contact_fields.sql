-- Contact fields: a bot's own facts about a user (`PATCH /v1/users/{id}`, field messages),
-- shown in every event's user object and searchable by value
-- (`GET /v1/users?field.<name>=<value>`, a containment query on the GIN index). Adding a
-- column with a constant default rewrites nothing. The inbound upsert never changes `fields`,
-- so its updates stay HOT.
alter table users add column fields jsonb not null default '{}';
create index users_fields on users using gin (fields jsonb_path_ops);

-- Status events carry the user's fields too: the same function, answering them.
drop function record_status_batch(text[], text[], text[], jsonb[], boolean[]);
create function record_status_batch(
    p_message_id text[], p_status text[], p_platform_message_id text[], p_error jsonb[],
    p_blocked boolean[])
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
            error = p_error[k], updated_at = now()
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
