-- Deadlines of commands (kept by the commands projection, swept by the deadline process).
ALTER TABLE rm_commands ADD COLUMN dispatched_at timestamptz;
ALTER TABLE rm_commands ADD COLUMN deadline_at timestamptz;
ALTER TABLE rm_commands ADD COLUMN expires_at timestamptz;
CREATE INDEX rm_commands_open ON rm_commands (status, deadline_at)
    WHERE status IN ('requested', 'queued', 'dispatched', 'accepted', 'in_progress');

-- Last-known state: one row per vehicle and VSS signal.
CREATE TABLE rm_vehicle_state
(
    vin         text        NOT NULL,
    signal      text        NOT NULL,
    value       jsonb       NOT NULL,
    vehicle_ts  timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (vin, signal)
);

-- Short history of signal values, pruned after the retention period.
CREATE TABLE rm_state_history
(
    vin         text        NOT NULL,
    signal      text        NOT NULL,
    value       jsonb       NOT NULL,
    vehicle_ts  timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    position    bigint      NOT NULL
);
CREATE INDEX rm_state_history_lookup ON rm_state_history (vin, signal, vehicle_ts DESC);
CREATE INDEX rm_state_history_age ON rm_state_history (received_at);

-- Events vehicles reported (breakdown, maintenance alerts ...).
CREATE TABLE rm_vehicle_events
(
    vin         text        NOT NULL,
    msg_id      text        NOT NULL,
    kind        text        NOT NULL,
    data        jsonb       NOT NULL,
    vehicle_ts  timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    position    bigint      NOT NULL,
    PRIMARY KEY (vin, msg_id)
);
CREATE INDEX rm_vehicle_events_newest ON rm_vehicle_events (vin, received_at DESC, position DESC);

-- Inbound message ids already stored (QoS 1 redelivery and vehicle retries are dropped).
CREATE TABLE inbound_seen
(
    vin         text        NOT NULL,
    msg_id      text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vin, msg_id)
);
CREATE INDEX inbound_seen_age ON inbound_seen (received_at);

-- MQTT messages refused as facts, with why.
CREATE TABLE dead_letters
(
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);
