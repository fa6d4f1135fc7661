-- What tacho knows of each vehicle's connection (crate::domain::connection), written in the same
-- transaction as the facts it decides: admission compares connection messages by their times and
-- records only real changes. Filled from the log's last connection change of each vehicle.
CREATE TABLE vehicle_links
(
    vin        text PRIMARY KEY,
    connected  integer NOT NULL,
    session_ts text,
    ended_ts   text,
    changed_at text    NOT NULL
);

INSERT INTO vehicle_links (vin, connected, changed_at)
SELECT e.aggregate_id,
       json_extract(e.payload, '$.ConnectionChanged.online'),
       json_extract(e.payload, '$.ConnectionChanged.received_at')
FROM events e
WHERE e.aggregate_type = 'VehicleState' AND e.event_type = 'ConnectionChanged'
  AND e.sequence = (SELECT max(l.sequence) FROM events l
                    WHERE l.aggregate_type = 'VehicleState' AND l.aggregate_id = e.aggregate_id
                      AND l.event_type = 'ConnectionChanged');
