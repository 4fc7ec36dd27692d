-- Who sent an outbound message, beside `source`: the human agent's or the broadcast's id its
-- command named, so every event about the message (sent, failed, delivered, read) can name it.
alter table messages add column source_id text;
