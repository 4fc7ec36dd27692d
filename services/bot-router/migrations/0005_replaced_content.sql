-- What the tenant asked to send when a fallback template went out in its place (outside a
-- messaging window); `content` holds what was sent.
alter table messages add column replaced_content jsonb;
