//! The log on PostgreSQL: commit order is `(tx_id, global_position)` below the writers' horizon
//! (see [`crate::store::log`]).
//!
//! **The writers' horizon.** A reader may pass a transaction id only once no transaction that may
//! still append to the log has a lower one. `pg_snapshot_xmin` is the oldest transaction running
//! anywhere on the server: any idle `BEGIN` in another database would hold every reader back. So
//! the horizon counts only the log's writers, the transactions holding a write lock on `events`:
//!
//! 1. one statement lists their transaction ids (`pg_locks`) and the next transaction id to be
//!    handed out, `next`;
//! 2. the next statement, on a newer snapshot, reads below the oldest of them still running, or
//!    below `next` when none is.
//!
//! A writer listed and committed in between is visible to the second snapshot. One not listed took
//! its lock on `events` after the first statement, and a writer takes that lock before it gets its
//! transaction id (an `INSERT INTO events` opens the table before it writes; a transaction that
//! writes elsewhere first locks `events` at its start, see [`lock_log`]), so its id is at least
//! `next`. Either way nothing below the horizon can still appear.

use crate::store::log::{columns, BatchRow, Checkpoint, NewEvent};
use sqlx::PgConnection;

/// An event's transaction id as a bigint.
pub const TX_ID: &str = "tx_id::text::bigint";

/// Reads a `json` column as the text stored.
pub const AS_TEXT: &str = "::text";

/// The log's writers now: the transaction ids (low 32 bits, as `pg_locks` shows them) of the
/// transactions holding a write lock on `events`, and the next transaction id to be handed out.
const WRITERS: &str = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next, \
       coalesce(array_agg(DISTINCT x.transactionid::text::bigint) \
                FILTER (WHERE x.transactionid IS NOT NULL), '{}') AS writers \
     FROM pg_locks r JOIN pg_locks x ON x.virtualtransaction = r.virtualtransaction \
       AND x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted \
     WHERE r.locktype = 'relation' AND r.relation = 'events'::regclass AND r.mode <> 'AccessShareLock' \
       AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// The horizon on the current snapshot, given [`WRITERS`] as `$writers` and `$next`: the oldest
/// writer still running, and never beyond `next` (`pg_locks` does not read every lock at one instant:
/// a writer that got its id at or after `next` may be missing from the list while one after it is
/// listed, so only ids below `next` are known to be covered).
fn horizon(writers: &str, next: &str) -> String {
    format!(
        "SELECT least(coalesce((SELECT x FROM pg_snapshot_xip(pg_current_snapshot()) x \
           WHERE x::text::bigint % 4294967296 = ANY({writers}) ORDER BY x LIMIT 1), {next}::text::xid8), \
           {next}::text::xid8) AS xmin"
    )
}

/// Makes the current transaction one of the log's writers before it writes anything else (so
/// before it gets its transaction id): a transaction that appends events after other writes.
pub(in crate::store) async fn lock_log(c: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE").execute(c).await?;
    Ok(())
}

/// Up to `limit` events after `after` below the writers' horizon, and the frontier; and whether
/// writers of the log were running.
pub(in crate::store) async fn read_after(
    c: &mut PgConnection,
    after: Checkpoint,
    types: Option<Vec<String>>,
    limit: i64,
) -> Result<(Vec<BatchRow>, bool), sqlx::Error> {
    let (next, writers): (i64, Vec<i64>) = sqlx::query_as(WRITERS).fetch_one(&mut *c).await?;
    // One statement, one snapshot: the frontier cannot pass an event the batch did not see.
    let columns = columns(TX_ID, AS_TEXT);
    let sql = format!(
        "WITH horizon AS ({}), \
         batch AS (SELECT {columns} FROM events, horizon \
           WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) AND tx_id < horizon.xmin \
             AND ($3::text[] IS NULL OR aggregate_type = ANY($3)) \
           ORDER BY tx_id, global_position LIMIT $4), \
         frontier AS (SELECT tx_id::text::bigint AS f_tx, global_position AS f_pos FROM events, horizon \
           WHERE tx_id < horizon.xmin ORDER BY tx_id DESC, global_position DESC LIMIT 1) \
         SELECT batch.*, frontier.f_tx, frontier.f_pos FROM frontier LEFT JOIN batch ON true \
         ORDER BY batch.tx_id, batch.global_position",
        horizon("$5", "$6")
    );
    let held_back = !writers.is_empty();
    let rows = sqlx::query_as(&sql)
        .bind(after.tx_id)
        .bind(after.position)
        .bind(types)
        .bind(limit)
        .bind(writers)
        .bind(next)
        .fetch_all(c)
        .await?;
    Ok((rows, held_back))
}

/// Appends `event`; its place in commit order.
pub(in crate::store) async fn append(c: &mut PgConnection, event: &NewEvent<'_>) -> Result<Checkpoint, sqlx::Error> {
    let (position, tx_id): (i64, i64) = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, $7, $5::jsonb::json, $6::jsonb::json) RETURNING global_position, tx_id::text::bigint",
    )
    .bind(event.aggregate_type)
    .bind(event.aggregate_id)
    .bind(event.sequence)
    .bind(event.event_type)
    .bind(event.payload)
    .bind(event.metadata)
    .bind(event.event_version)
    .fetch_one(c)
    .await?;
    Ok(Checkpoint { tx_id, position })
}
