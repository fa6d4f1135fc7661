-- Tamper evidence: each event's hash, chained to the previous event of its stream, and a running
-- chain over every seal in the order they were made (commit order). Written by the `seals`
-- subscriber; `tacho audit verify` recomputes both from the log.
CREATE TABLE event_seals
(
    seal_no         bigint PRIMARY KEY,
    global_position bigint NOT NULL UNIQUE,
    aggregate_type  text   NOT NULL,
    aggregate_id    text   NOT NULL,
    sequence        bigint NOT NULL,
    stream_hash     text   NOT NULL,
    chain_hash      text   NOT NULL
);
CREATE UNIQUE INDEX event_seals_stream ON event_seals (aggregate_type, aggregate_id, sequence);
