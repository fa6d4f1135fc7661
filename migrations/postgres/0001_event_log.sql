-- The event log: postgres-es's events table plus a commit-ordered global position.
-- Subscribers read in (tx_id, global_position) order, only below the oldest running transaction
-- (pg_snapshot_xmin), so an event whose transaction commits late is never skipped.
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    global_position bigserial                    NOT NULL UNIQUE,
    tx_id           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_commit_order ON events (tx_id, global_position);

CREATE FUNCTION tacho_notify_events() RETURNS trigger LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('tacho_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION tacho_notify_events();

-- One row per subscriber: the last event it applied, in commit order.
CREATE TABLE subscription_checkpoints
(
    name       text PRIMARY KEY,
    tx_id      bigint      NOT NULL DEFAULT 0,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Idempotency keys of command requests: strongly consistent, written before the command.
CREATE TABLE command_idempotency
(
    requester    text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    command_id   uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (requester, key)
);
