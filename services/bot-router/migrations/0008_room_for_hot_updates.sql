-- Every inbound message updates its user (last seen, profile) and conversation (window), and
-- its de-duplication row is marked once its dispatch job is stored. With free space on the
-- page, PostgreSQL keeps such updates on the page ("HOT") and writes no index entries; `users`
-- has seven indexes. Applies to pages written from now on.
alter table users set (fillfactor = 70);
alter table conversations set (fillfactor = 70);
alter table inbound_events set (fillfactor = 80);
