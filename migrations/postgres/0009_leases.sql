-- Leases: which instance may run each process (a side effect that must happen once), until when.
-- Times are the database's clock, the one clock all instances share. `epoch` grows with every
-- change of holder: a holder writes (checkpoints) only while its epoch is the current one.
CREATE TABLE process_leases
(
    name       text PRIMARY KEY,
    holder     text        NOT NULL,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
