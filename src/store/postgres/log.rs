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
//!    below `next` when none is (never beyond `next`: `pg_locks` does not read every lock at one
//!    instant, so only ids below it are known to be covered).
//!
//! Both run in the function `tacho_read_after` (migration `0011_read_after.sql`): one round trip;
//! a VOLATILE PL/pgSQL function in READ COMMITTED takes a fresh snapshot for each statement.
//!
//! A writer listed and committed in between is visible to the second snapshot. One not listed took
//! its lock on `events` after the first statement, and a writer takes that lock before it gets its
//! transaction id (an `INSERT INTO events` opens the table before it writes; a transaction that
//! writes elsewhere first locks `events` at its start, see [`lock_log`]), so its id is at least
//! `next`. Either way nothing below the horizon can still appear.

use crate::store::log::{BatchRow, Checkpoint, NewEvent};
use sqlx::PgConnection;

/// An event's transaction id as a bigint.
pub const TX_ID: &str = "tx_id::text::bigint";

/// Reads a `json` column as the text stored.
pub const AS_TEXT: &str = "::text";

/// Makes the current transaction one of the log's writers before it writes anything else (so
/// before it gets its transaction id): a transaction that appends events after other writes.
pub(in crate::store) async fn lock_log(c: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE").execute(c).await?;
    Ok(())
}

/// A row of `tacho_read_after`: an event (or none), the frontier, and whether writers were running.
#[derive(sqlx::FromRow)]
struct ReadRow {
    #[sqlx(flatten)]
    row: BatchRow,
    held_back: Option<bool>,
}

/// Up to `limit` events after `after` below the writers' horizon, and the frontier; and whether
/// writers of the log were running. One round trip: the function `tacho_read_after` (migration
/// `0011_read_after.sql`) runs the two statements, each on its own snapshot.
pub(in crate::store) async fn read_after(
    c: &mut PgConnection,
    after: Checkpoint,
    types: Option<Vec<String>>,
    limit: i64,
) -> Result<(Vec<BatchRow>, bool), sqlx::Error> {
    let rows: Vec<ReadRow> = sqlx::query_as("SELECT * FROM tacho_read_after($1, $2, $3, $4)")
        .bind(after.tx_id)
        .bind(after.position)
        .bind(types)
        .bind(limit)
        .fetch_all(c)
        .await?;
    let held_back = rows.first().and_then(|r| r.held_back).unwrap_or(false);
    Ok((rows.into_iter().map(|r| r.row).collect(), held_back))
}

/// Appends `events` in their order in one statement; the place of the last in commit order.
pub(in crate::store) async fn append_all(
    c: &mut PgConnection,
    events: &[NewEvent<'_>],
) -> Result<Checkpoint, sqlx::Error> {
    fn column<'a>(events: &'a [NewEvent<'_>], f: impl Fn(&'a NewEvent<'_>) -> &'a str) -> Vec<&'a str> {
        events.iter().map(f).collect()
    }
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| e.payload).collect();
    let metadata: Vec<&serde_json::Value> = events.iter().map(|e| e.metadata).collect();
    let (position, tx_id): (Option<i64>, Option<i64>) = sqlx::query_as(
        "WITH appended AS (INSERT INTO events \
           (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT t, a, s, e, v, p::json, m::json \
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
           WITH ORDINALITY AS x(t, a, s, e, v, p, m, n) ORDER BY n \
         RETURNING global_position, tx_id) \
         SELECT max(global_position), max(tx_id::text::bigint) FROM appended",
    )
    .bind(column(events, |e| e.aggregate_type))
    .bind(column(events, |e| e.aggregate_id))
    .bind(&sequences)
    .bind(column(events, |e| e.event_type))
    .bind(column(events, |e| e.event_version))
    .bind(&payloads)
    .bind(&metadata)
    .fetch_one(c)
    .await?;
    match (position, tx_id) {
        (Some(position), Some(tx_id)) => Ok(Checkpoint { tx_id, position }),
        _ => Err(sqlx::Error::RowNotFound),
    }
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
