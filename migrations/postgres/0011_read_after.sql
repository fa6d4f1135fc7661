-- A read of the log in one round trip (see src/store/postgres/log.rs, "the writers' horizon"):
-- the first statement lists the log's writers and the next transaction id, the second reads the
-- batch below the horizon on a newer snapshot. In READ COMMITTED a VOLATILE PL/pgSQL function
-- takes a fresh snapshot for each statement it runs, as two statements sent one after the other
-- would.
CREATE FUNCTION tacho_read_after(after_tx bigint, after_pos bigint, types text[], lim bigint)
    RETURNS TABLE
            (
                global_position bigint,
                tx_id           bigint,
                aggregate_type  text,
                aggregate_id    text,
                sequence        bigint,
                event_type      text,
                event_version   text,
                payload         text,
                metadata        text,
                recorded_at     timestamptz,
                f_tx            bigint,
                f_pos           bigint,
                held_back       boolean
            )
    LANGUAGE plpgsql
    VOLATILE
AS
$$
#variable_conflict use_column
DECLARE
    next_xid bigint;
    writers  bigint[];
BEGIN
    -- Both statements on one snapshot would pass a writer that committed between them unseen.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'tacho reads the log in READ COMMITTED only, not %', current_setting('transaction_isolation');
    END IF;
    -- The transactions holding a write lock on `events` (low 32 bits, as pg_locks shows them), and
    -- the next transaction id to be handed out.
    SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
           coalesce(array_agg(DISTINCT x.transactionid::text::bigint)
                    FILTER (WHERE x.transactionid IS NOT NULL), '{}')
    INTO next_xid, writers
    FROM pg_locks r
             JOIN pg_locks x ON x.virtualtransaction = r.virtualtransaction
        AND x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted
    WHERE r.locktype = 'relation'
      AND r.relation = 'events'::regclass
      AND r.mode <> 'AccessShareLock'
      AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database());

    -- On a newer snapshot: below the oldest listed writer still running, and never beyond next_xid
    -- (pg_locks does not read every lock at one instant). One statement: the frontier cannot pass
    -- an event the batch did not see.
    RETURN QUERY
        WITH horizon AS (SELECT least(coalesce((SELECT x
                                                FROM pg_snapshot_xip(pg_current_snapshot()) x
                                                WHERE x::text::bigint % 4294967296 = ANY (writers)
                                                ORDER BY x
                                                LIMIT 1), next_xid::text::xid8),
                                      next_xid::text::xid8) AS xmin),
             batch AS (SELECT e.global_position, e.tx_id::text::bigint AS tx_id, e.aggregate_type, e.aggregate_id,
                              e.sequence, e.event_type, e.event_version, e.payload::text AS payload,
                              e.metadata::text AS metadata, e.recorded_at, e.tx_id AS xid
                       FROM events e,
                            horizon
                       WHERE (e.tx_id, e.global_position) > (after_tx::text::xid8, after_pos)
                         AND e.tx_id < horizon.xmin
                         AND (types IS NULL OR e.aggregate_type = ANY (types))
                       ORDER BY e.tx_id, e.global_position
                       LIMIT lim),
             frontier AS (SELECT e.tx_id::text::bigint AS f_tx, e.global_position AS f_pos
                          FROM events e,
                               horizon
                          WHERE e.tx_id < horizon.xmin
                          ORDER BY e.tx_id DESC, e.global_position DESC
                          LIMIT 1)
        -- Always one row at least: whether writers were running is said even of an empty log.
        SELECT b.global_position, b.tx_id, b.aggregate_type, b.aggregate_id, b.sequence, b.event_type,
               b.event_version, b.payload, b.metadata, b.recorded_at, f.f_tx, f.f_pos,
               cardinality(writers) > 0
        FROM (SELECT 1) AS one
                 LEFT JOIN frontier f ON true
                 LEFT JOIN batch b ON true
        ORDER BY b.xid, b.global_position;
END
$$;
