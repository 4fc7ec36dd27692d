-- Human agents (the console's agent sign-in): an agent's invite is a credential of its bot kept
-- beside the keys (kind 'agent'), with the agent's name; key rotations leave it alone.
alter table api_keys add column agent_name text;
create index api_keys_agents on api_keys (bot_id) where kind = 'agent';
