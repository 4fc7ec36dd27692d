-- BrandChat signs with the API key itself (hex HMAC-SHA1 of the body, both directions), so a
-- key must be readable to check and make those signatures: each key is also kept sealed with
-- the master key. The config bucket carries the sealed keys of `brandchat` bots only. Keys
-- issued before this migration have none: rotate them to use the BrandChat flavour.
alter table api_keys add column sealed text;
