-- The embedded store: the same log and read models as migrations/postgres, in SQLite's types.
-- Times are RFC 3339 text in UTC (they sort as text), JSON is text, UUIDs are 16-byte blobs.

-- The event log: sqlite-es's events table plus a global position. SQLite has one writer at a time,
-- so positions are handed out in commit order. The position is a column of its own (set by a
-- trigger) rather than the rowid, which VACUUM may renumber.
CREATE TABLE events
(
    aggregate_type  text    NOT NULL,
    aggregate_id    text    NOT NULL,
    sequence        integer NOT NULL CHECK (sequence >= 0),
    event_type      text    NOT NULL,
    event_version   text    NOT NULL,
    payload         text    NOT NULL,
    metadata        text    NOT NULL,
    global_position integer UNIQUE,
    recorded_at     text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE TRIGGER events_position AFTER INSERT ON events
BEGIN
    UPDATE events SET global_position = (SELECT coalesce(max(global_position), 0) + 1 FROM events)
    WHERE rowid = NEW.rowid;
END;

CREATE TABLE subscription_checkpoints
(
    name       text PRIMARY KEY,
    tx_id      integer NOT NULL DEFAULT 0,
    position   integer NOT NULL DEFAULT 0,
    updated_at text    NOT NULL
);

CREATE TABLE command_idempotency
(
    requester    text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    command_id   blob NOT NULL,
    created_at   text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (requester, key)
);

CREATE TABLE rm_vehicles
(
    vin              text PRIMARY KEY,
    status           text    NOT NULL,
    model            text    NOT NULL,
    model_year       integer NOT NULL,
    market           text    NOT NULL,
    options          text    NOT NULL,
    data_collection  text    NOT NULL,
    devices          text    NOT NULL DEFAULT '[]',
    connected        boolean NOT NULL DEFAULT false,
    connection_since text,
    last_seen        text,
    registered_at    text    NOT NULL,
    updated_at       text    NOT NULL,
    version          integer NOT NULL
);
CREATE INDEX rm_vehicles_status ON rm_vehicles (status, vin);
CREATE INDEX rm_vehicles_market ON rm_vehicles (market, vin);

CREATE TABLE rm_devices
(
    device_id              text PRIMARY KEY,
    vin                    text    NOT NULL,
    kind                   text    NOT NULL,
    status                 text    NOT NULL,
    certificate_thumbprint text    NOT NULL,
    client_id              text,
    allowed_topics         text    NOT NULL DEFAULT '[]',
    replaces               text,
    replaced_by            text,
    registered_at          text    NOT NULL,
    updated_at             text    NOT NULL,
    version                integer NOT NULL
);
CREATE INDEX rm_devices_vin ON rm_devices (vin);

CREATE TABLE rm_consents
(
    vin         text    NOT NULL,
    subject     text    NOT NULL,
    purpose     text    NOT NULL,
    status      text    NOT NULL,
    version     integer NOT NULL,
    legal_basis text    NOT NULL,
    expires_at  text,
    granted_at  text    NOT NULL,
    revoked_at  text,
    PRIMARY KEY (vin, subject, purpose)
);

CREATE TABLE rm_commands
(
    command_id        blob PRIMARY KEY,
    vin               text    NOT NULL,
    name              text    NOT NULL,
    params            text    NOT NULL,
    status            text    NOT NULL,
    requester         text    NOT NULL,
    idempotency_key   text,
    consent_version   integer,
    timeout_s         integer NOT NULL,
    store_and_forward boolean NOT NULL,
    ttl_s             integer NOT NULL,
    requested_at      text    NOT NULL,
    updated_at        text    NOT NULL,
    result            text,
    error             text,
    transitions       text    NOT NULL DEFAULT '[]',
    late_answers      text    NOT NULL DEFAULT '[]',
    version           integer NOT NULL,
    dispatched_at     text,
    deadline_at       text,
    expires_at        text
);
CREATE INDEX rm_commands_vin ON rm_commands (vin, requested_at DESC, command_id DESC);
CREATE INDEX rm_commands_open ON rm_commands (status, deadline_at)
    WHERE status IN ('requested', 'queued', 'dispatched', 'accepted', 'in_progress');

CREATE TABLE rm_vehicle_state
(
    vin         text NOT NULL,
    signal      text NOT NULL,
    value       text NOT NULL,
    vehicle_ts  text NOT NULL,
    received_at text NOT NULL,
    PRIMARY KEY (vin, signal)
);

CREATE TABLE rm_state_history
(
    vin         text    NOT NULL,
    signals     text    NOT NULL,
    vehicle_ts  text    NOT NULL,
    received_at text    NOT NULL,
    position    integer NOT NULL
);
CREATE INDEX rm_state_history_lookup ON rm_state_history (vin, vehicle_ts DESC);
CREATE INDEX rm_state_history_age ON rm_state_history (received_at);

CREATE TABLE rm_vehicle_events
(
    vin         text    NOT NULL,
    msg_id      text    NOT NULL,
    kind        text    NOT NULL,
    data        text    NOT NULL,
    vehicle_ts  text    NOT NULL,
    received_at text    NOT NULL,
    position    integer NOT NULL,
    PRIMARY KEY (vin, msg_id)
);
CREATE INDEX rm_vehicle_events_newest ON rm_vehicle_events (vin, received_at DESC, position DESC);

CREATE TABLE inbound_seen
(
    vin         text NOT NULL,
    msg_id      text NOT NULL,
    received_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (vin, msg_id)
);
CREATE INDEX inbound_seen_age ON inbound_seen (received_at);

CREATE TABLE dead_letters
(
    id          integer PRIMARY KEY AUTOINCREMENT,
    received_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    topic       text NOT NULL,
    payload     blob NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);
