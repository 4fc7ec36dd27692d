-- BrandChat's API names users by a 64-bit integer: the first 52 bits of SHA-256 of the user's
-- id (patchbay_contract::brandchat::numeric_user_id computes the same), kept here to find the
-- user again. (Ids are ASCII without backslashes, so `decode(id, 'escape')` is their bytes.)
alter table users add column numeric_id bigint generated always as (
    ('x' || substr(encode(sha256(decode(id, 'escape')), 'hex'), 1, 13))::bit(52)::bigint
) stored;
create index users_bot_numeric_id on users (bot_id, numeric_id);
