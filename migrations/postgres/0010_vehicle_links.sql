-- What tacho knows of each vehicle's connection (crate::domain::connection), written in the same
-- transaction as the facts it decides: admission compares connection messages by their times and
-- records only real changes. Filled from the log's last connection change of each vehicle.
CREATE TABLE vehicle_links
(
    vin        text PRIMARY KEY,
    connected  boolean     NOT NULL,
    session_ts timestamptz,
    ended_ts   timestamptz,
    changed_at timestamptz NOT NULL
);

INSERT INTO vehicle_links (vin, connected, changed_at)
SELECT DISTINCT ON (aggregate_id) aggregate_id,
       (payload -> 'ConnectionChanged' ->> 'online')::boolean,
       (payload -> 'ConnectionChanged' ->> 'received_at')::timestamptz
FROM events
WHERE aggregate_type = 'VehicleState' AND event_type = 'ConnectionChanged'
ORDER BY aggregate_id, sequence DESC;
