-- History: one row per state report (its signals as one JSON object) instead of one row per
-- signal: fewer writes per report.
DROP TABLE rm_state_history;
CREATE TABLE rm_state_history
(
    vin         text        NOT NULL,
    signals     jsonb       NOT NULL,
    vehicle_ts  timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    position    bigint      NOT NULL
);
CREATE INDEX rm_state_history_lookup ON rm_state_history (vin, vehicle_ts DESC);
CREATE INDEX rm_state_history_age ON rm_state_history (received_at);
-- The vehicle data read models are rebuilt from the log on the next start.
DELETE FROM rm_vehicle_state;
DELETE FROM rm_vehicle_events;
DELETE FROM subscription_checkpoints WHERE name = 'vehicle_state';
