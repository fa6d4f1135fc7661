-- The prune's age indexes back to B-trees (0012 made them BRIN). Rows do not stay in received
-- order on disk: the prune deletes the oldest, vacuum frees their pages, and new rows fill them;
-- a BRIN range is widened by each insert and never narrowed, so after a while every range would
-- match the prune's cutoff and the hourly prune would read the whole table.
DROP INDEX inbound_seen_age;
CREATE INDEX inbound_seen_age ON inbound_seen (received_at);
DROP INDEX rm_state_history_age;
CREATE INDEX rm_state_history_age ON rm_state_history (received_at);
