//! The log on PostgreSQL: commit order is `(tx_id, global_position)` below the snapshot horizon
//! (see [`crate::store::log`]).

use crate::store::log::{columns, BatchRow, Checkpoint, NewEvent};
use sqlx::PgConnection;

/// An event's transaction id as a bigint.
pub const TX_ID: &str = "tx_id::text::bigint";

/// Reads a `json` column as the text stored.
pub const AS_TEXT: &str = "::text";

/// Up to `limit` events after `after` below the snapshot horizon, and the frontier.
pub(in crate::store) async fn read_after(
    c: &mut PgConnection,
    after: Checkpoint,
    types: Option<Vec<String>>,
    limit: i64,
) -> Result<Vec<BatchRow>, sqlx::Error> {
    // One statement, one snapshot: the frontier cannot pass an event the batch did not see.
    let columns = columns(TX_ID, AS_TEXT);
    let sql = format!(
        "WITH horizon AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin), \
         batch AS (SELECT {columns} FROM events, horizon \
           WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) AND tx_id < horizon.xmin \
             AND ($3::text[] IS NULL OR aggregate_type = ANY($3)) \
           ORDER BY tx_id, global_position LIMIT $4), \
         frontier AS (SELECT tx_id::text::bigint AS f_tx, global_position AS f_pos FROM events, horizon \
           WHERE tx_id < horizon.xmin ORDER BY tx_id DESC, global_position DESC LIMIT 1) \
         SELECT batch.*, frontier.f_tx, frontier.f_pos FROM frontier LEFT JOIN batch ON true \
         ORDER BY batch.tx_id, batch.global_position"
    );
    sqlx::query_as(&sql).bind(after.tx_id).bind(after.position).bind(types).bind(limit).fetch_all(c).await
}

/// Appends `event`; its position.
pub(in crate::store) async fn append(c: &mut PgConnection, event: &NewEvent<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, $7, $5::jsonb::json, $6::jsonb::json) RETURNING global_position",
    )
    .bind(event.aggregate_type)
    .bind(event.aggregate_id)
    .bind(event.sequence)
    .bind(event.event_type)
    .bind(event.payload)
    .bind(event.metadata)
    .bind(event.event_version)
    .fetch_one(c)
    .await
}
