-- Cheaper writes on the ingestion path (issue 13).
--
-- The age indexes serve only the hourly prune (`received_at < cutoff`); rows arrive in received
-- order, so a BRIN index finds the old ones as well as a B-tree did, and costs next to nothing per
-- insert (a B-tree insert per report per table before).
DROP INDEX inbound_seen_age;
CREATE INDEX inbound_seen_age ON inbound_seen USING brin (received_at);
DROP INDEX rm_state_history_age;
CREATE INDEX rm_state_history_age ON rm_state_history USING brin (received_at);

-- The last-known state and the registry's `last_seen` are updated in place at every report: room
-- on each page lets PostgreSQL update a row where it is without touching its indexes (HOT).
ALTER TABLE rm_vehicle_state SET (fillfactor = 70);
ALTER TABLE rm_vehicles SET (fillfactor = 80);
