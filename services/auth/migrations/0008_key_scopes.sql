-- What an API key may do (patchbay_contract::scopes): null for every scope, as every key
-- issued before scopes existed.
alter table api_keys add column scopes text[];
