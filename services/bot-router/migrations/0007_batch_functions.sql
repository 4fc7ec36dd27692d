-- Group commit (patchbay_store::batch): the hot path's statements for a whole batch of
-- concurrent handlers, in one call (one round trip, one commit). Each function runs the
-- single-row statement it replaces once per element, in order, inside the call: the same SQL
-- with the same plans (primary-key lookups, whatever the tables' statistics), and two elements
-- touching one row simply run one after the other. Arrays are parallel, one element per
-- request; results come back with the element's 1-based index `i`. Names the functions'
-- result columns share with table columns mean the columns (`#variable_conflict`).

-- An inbound event: de-duplication row, user, conversation (window), message.
create function record_inbound_batch(
    p_dedupe_key text[], p_event_id text[], p_bot_id text[], p_event_type text[],
    p_user_id text[], p_channel_id text[], p_platform text[], p_platform_user_id text[],
    p_address text[], p_display_name text[], p_username text[], p_locale text[],
    p_avatar_url text[], p_subscribed boolean[], p_occurred_at timestamptz[], p_email text[],
    p_phone text[], p_conversation_id text[], p_window_opened timestamptz[],
    p_message_id text[], p_platform_message_id text[], p_content jsonb[])
returns table (i integer, event_id text, dispatched_at timestamptz, user_id text,
               display_name text, username text, locale text, conversation_id text)
language plpgsql as $$
#variable_conflict use_column
begin
    for k in 1 .. coalesce(cardinality(p_dedupe_key), 0) loop
        return query
        with ie as (
             insert into inbound_events as e (dedupe_key, event_id, bot_id, event_type)
             values (p_dedupe_key[k], p_event_id[k], p_bot_id[k], p_event_type[k])
             on conflict (dedupe_key) do update set dedupe_key = excluded.dedupe_key
             returning e.event_id, e.dispatched_at),
         u as (
             insert into users as x (id, bot_id, channel_id, platform, platform_user_id,
                                     address, display_name, username, locale, avatar_url,
                                     subscribed, last_seen_at, email, phone)
             select p_user_id[k], p_bot_id[k], p_channel_id[k], p_platform[k],
                    p_platform_user_id[k], p_address[k], p_display_name[k], p_username[k],
                    p_locale[k], p_avatar_url[k], p_subscribed[k], p_occurred_at[k],
                    p_email[k], p_phone[k]
             from ie where ie.dispatched_at is null
             on conflict (channel_id, platform_user_id) do update set
                 address = excluded.address,
                 display_name = coalesce(excluded.display_name, x.display_name),
                 username = coalesce(excluded.username, x.username),
                 locale = coalesce(excluded.locale, x.locale),
                 avatar_url = coalesce(excluded.avatar_url, x.avatar_url),
                 email = coalesce(excluded.email, x.email),
                 phone = coalesce(excluded.phone, x.phone),
                 subscribed = excluded.subscribed,
                 last_seen_at = greatest(x.last_seen_at, excluded.last_seen_at)
             returning x.id, x.display_name, x.username, x.locale),
         c as (
             insert into conversations as v (id, bot_id, user_id, last_inbound_at)
             select p_conversation_id[k], p_bot_id[k], u.id, p_window_opened[k] from u
             on conflict (user_id) do update set
                 last_inbound_at = greatest(v.last_inbound_at, excluded.last_inbound_at)
             returning v.id),
         m as (
             insert into messages (id, conversation_id, bot_id, direction, event_id,
                                   platform_message_id, content, status, created_at)
             select p_message_id[k], c.id, p_bot_id[k], 'inbound', ie.event_id,
                    p_platform_message_id[k], p_content[k], 'received', p_occurred_at[k]
             from c cross join ie
             where p_content[k] is not null and ie.event_id = p_event_id[k]
             on conflict (id) do nothing)
        select k, ie.event_id, ie.dispatched_at, u.id, u.display_name, u.username, u.locale,
               c.id
        from ie left join u on true left join c on true;
    end loop;
end
$$;

-- The user a send command is for, within its bot: by user id, or by platform address (the
-- most recently seen user with it, on the given channel if any). Unknown: no row.
create function resolve_recipients_batch(
    p_bot_id text[], p_user_id text[], p_platform text[], p_address text[],
    p_channel_id text[])
returns table (i integer, user_id text, channel_id text, platform text, address text,
               conversation_id text, last_inbound_at timestamptz)
language plpgsql stable as $$
#variable_conflict use_column
begin
    for k in 1 .. coalesce(cardinality(p_bot_id), 0) loop
        if p_user_id[k] is not null then
            return query
            select k, u.id, u.channel_id, u.platform, u.address, c.id, c.last_inbound_at
            from users u join conversations c on c.user_id = u.id
            where u.id = p_user_id[k] and u.bot_id = p_bot_id[k];
        else
            return query
            select k, u.id, u.channel_id, u.platform, u.address, c.id, c.last_inbound_at
            from users u join conversations c on c.user_id = u.id
            where u.bot_id = p_bot_id[k] and u.platform = p_platform[k]
              and u.address = p_address[k]
              and (p_channel_id[k] is null or u.channel_id = p_channel_id[k])
            order by u.last_seen_at desc nulls last limit 1;
        end if;
    end loop;
end
$$;

-- A platform's verdict on an outbound message, and who it concerns (no row: unknown message).
-- A `blocked` failure marks the user unsubscribed.
create function record_status_batch(
    p_message_id text[], p_status text[], p_platform_message_id text[], p_error jsonb[],
    p_blocked boolean[])
returns table (i integer, conversation_id text, user_id text, platform_user_id text,
               display_name text, username text, locale text)
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
               u.locale
        from users u where u.id = v_user;
    end loop;
end
$$;
