//! The log on SQLite: one writer at a time, so position order is commit order (see
//! [`crate::store::log`]).

use crate::store::log::{columns, BatchRow, Checkpoint, NewEvent};
use sqlx::SqliteConnection;

/// An event's transaction id: one writer at a time, so none is needed.
pub const TX_ID: &str = "0";

/// JSON is kept as text already.
pub const AS_TEXT: &str = "";

/// Up to `limit` events after `after`, and the frontier.
pub(in crate::store) async fn read_after(
    c: &mut SqliteConnection,
    after: Checkpoint,
    types: Option<Vec<String>>,
    limit: i64,
) -> Result<Vec<BatchRow>, sqlx::Error> {
    // A read transaction of its own would be one snapshot too; a single statement is.
    let columns = columns(TX_ID, AS_TEXT);
    let sql = format!(
        "WITH frontier AS (SELECT 0 AS f_tx, max(global_position) AS f_pos FROM events), \
         batch AS (SELECT {columns} FROM events WHERE global_position > $1 \
           AND ($2 IS NULL OR aggregate_type IN (SELECT value FROM json_each($2))) \
           ORDER BY global_position LIMIT $3) \
         SELECT batch.*, frontier.f_tx, frontier.f_pos FROM frontier LEFT JOIN batch ON true \
         WHERE frontier.f_pos IS NOT NULL ORDER BY batch.global_position"
    );
    sqlx::query_as(&sql).bind(after.position).bind(types.map(|t| serde_json::json!(t))).bind(limit).fetch_all(c).await
}

/// Appends `event`; its place in commit order.
pub(in crate::store) async fn append(
    c: &mut SqliteConnection,
    event: &NewEvent<'_>,
) -> Result<Checkpoint, sqlx::Error> {
    let rowid: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, $7, $5, $6) RETURNING rowid",
    )
    .bind(event.aggregate_type)
    .bind(event.aggregate_id)
    .bind(event.sequence)
    .bind(event.event_type)
    .bind(event.payload)
    .bind(event.metadata)
    .bind(event.event_version)
    .fetch_one(&mut *c)
    .await?;
    // The position is set by a trigger after the insert.
    let position =
        sqlx::query_scalar("SELECT global_position FROM events WHERE rowid = $1").bind(rowid).fetch_one(c).await?;
    Ok(Checkpoint { tx_id: 0, position })
}
