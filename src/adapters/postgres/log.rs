//! Reading the log in commit order.
//!
//! `global_position` is handed out when a row is inserted, not when its transaction commits, so a
//! reader that followed positions alone could pass a position whose transaction commits later and
//! never see it. Readers therefore order by `(tx_id, global_position)` and only read rows whose
//! transaction is older than every running one (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`):
//! every transaction that commits after that has a higher `tx_id`, so it sorts after the checkpoint.

use crate::projections::{Checkpoint, StoredEvent};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

const COLUMNS: &str = "global_position, tx_id::text::bigint AS tx_id, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, payload, metadata, recorded_at";

/// A batch read from the log.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events after the checkpoint, in commit order.
    pub events: Vec<StoredEvent>,
    /// The last event of any type readable in the same snapshot: when `events` is not full, a
    /// reader may move its checkpoint there, so it never rescans events of types it skips.
    pub frontier: Option<Checkpoint>,
}

/// Reads up to `limit` events after `after` in commit order, only of `aggregate_types` when given.
pub async fn read_after(
    conn: &mut PgConnection,
    after: Checkpoint,
    aggregate_types: Option<&[&str]>,
    limit: i64,
) -> Result<Batch, sqlx::Error> {
    let types: Option<Vec<String>> = aggregate_types.map(|t| t.iter().map(|s| (*s).to_owned()).collect());
    // One statement, one snapshot: the frontier cannot pass an event the batch did not see.
    let sql = format!(
        "WITH horizon AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin), \
         batch AS (SELECT {COLUMNS} FROM events, horizon \
           WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) AND tx_id < horizon.xmin \
             AND ($3::text[] IS NULL OR aggregate_type = ANY($3)) \
           ORDER BY tx_id, global_position LIMIT $4), \
         frontier AS (SELECT tx_id::text::bigint AS f_tx, global_position AS f_pos FROM events, horizon \
           WHERE tx_id < horizon.xmin ORDER BY tx_id DESC, global_position DESC LIMIT 1) \
         SELECT batch.*, frontier.f_tx, frontier.f_pos FROM frontier LEFT JOIN batch ON true \
         ORDER BY batch.tx_id, batch.global_position"
    );
    let rows = sqlx::query(&sql).bind(after.tx_id).bind(after.position).bind(types).bind(limit).fetch_all(conn).await?;
    let mut batch = Batch::default();
    for row in &rows {
        if batch.frontier.is_none() {
            batch.frontier = Some(Checkpoint { tx_id: row.try_get("f_tx")?, position: row.try_get("f_pos")? });
        }
        if row.try_get::<Option<i64>, _>("global_position")?.is_some() {
            batch.events.push(from_row(row)?);
        }
    }
    Ok(batch)
}

/// Every event of one stream, in sequence order.
pub async fn read_stream(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence");
    sqlx::query(&sql).bind(aggregate_type).bind(aggregate_id).fetch_all(conn).await?.iter().map(from_row).collect()
}

/// Where the last event of a stream sits in commit order (what a reader must pass to have seen it).
pub async fn stream_head(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tx_id::text::bigint AS tx_id, global_position FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok(Checkpoint { tx_id: r.try_get("tx_id")?, position: r.try_get("global_position")? })).transpose()
}

/// The commit-order place of the event at `position`, if it exists.
pub async fn checkpoint_of(conn: &mut PgConnection, position: i64) -> Result<Option<Checkpoint>, sqlx::Error> {
    let row = sqlx::query("SELECT tx_id::text::bigint AS tx_id FROM events WHERE global_position = $1")
        .bind(position)
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok(Checkpoint { tx_id: r.try_get("tx_id")?, position })).transpose()
}

fn from_row(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        position: row.try_get("global_position")?,
        tx_id: row.try_get("tx_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// Appends one event to a stream tacho writes without an aggregate (broadcasts); fails with a
/// unique violation when `sequence` is taken.
pub async fn append(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    payload: &serde_json::Value,
    metadata: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, '1', $5::jsonb::json, $6::jsonb::json) RETURNING global_position",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .bind(event_type)
    .bind(payload)
    .bind(metadata)
    .fetch_one(conn)
    .await
}
