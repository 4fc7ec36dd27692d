-- Human hand-over. `conversations.handled_by` ('bot' or 'human', since 0001) says who answers;
-- the agent holding it, when it last changed hands, and when the agent last wrote (a
-- conversation returns to the bot once the later of the two is the bot's idle time old).
alter table conversations add column agent text,
                          add column handed_over_at timestamptz,
                          add column last_agent_at timestamptz;
create index conversations_held_by_humans on conversations (bot_id)
    where handled_by = 'human';

-- The recipient lookup answers who holds the conversation too: a send for a conversation a
-- human holds is held back. (Inbound events read it in their set-based statement.)
drop function resolve_recipients_batch(text[], text[], text[], text[], text[]);
create function resolve_recipients_batch(
    p_bot_id text[], p_user_id text[], p_platform text[], p_address text[],
    p_channel_id text[])
returns table (i integer, user_id text, channel_id text, platform text, address text,
               conversation_id text, last_inbound_at timestamptz, handled_by text)
language plpgsql stable as $$
#variable_conflict use_column
begin
    for k in 1 .. coalesce(cardinality(p_bot_id), 0) loop
        if p_user_id[k] is not null then
            return query
            select k, u.id, u.channel_id, u.platform, u.address, c.id, c.last_inbound_at, c.handled_by
            from users u join conversations c on c.user_id = u.id
            where u.id = p_user_id[k] and u.bot_id = p_bot_id[k];
        else
            return query
            select k, u.id, u.channel_id, u.platform, u.address, c.id, c.last_inbound_at, c.handled_by
            from users u join conversations c on c.user_id = u.id
            where u.bot_id = p_bot_id[k] and u.platform = p_platform[k]
              and u.address = p_address[k]
              and (p_channel_id[k] is null or u.channel_id = p_channel_id[k])
            order by u.last_seen_at desc nulls last limit 1;
        end if;
    end loop;
end
$$;
