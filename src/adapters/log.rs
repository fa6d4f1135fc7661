//! Reading the log in commit order, on either store.
//!
//! **PostgreSQL.** `global_position` is handed out when a row is inserted, not when its transaction
//! commits, so a reader that followed positions alone could pass a position whose transaction
//! commits later and never see it. Readers therefore order by `(tx_id, global_position)` and only
//! read rows whose transaction is older than every running one
//! (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`): every transaction that commits after that
//! has a higher `tx_id`, so it sorts after the checkpoint.
//!
//! **SQLite.** One writer at a time: a position is handed out inside the write transaction that
//! commits before the next writer starts, so position order is commit order and `tx_id` is 0.

use super::sql::Conn;
use crate::on_conn;
use crate::projections::{Checkpoint, StoredEvent};

const PG_COLUMNS: &str = "global_position, tx_id::text::bigint AS tx_id, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, payload, metadata, recorded_at";
const SQLITE_COLUMNS: &str = "global_position, 0 AS tx_id, aggregate_type, aggregate_id, sequence, \
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

impl Batch {
    /// Where a batch read after `from` with `limit` leaves a reader's checkpoint: its last event, or
    /// the snapshot's frontier when the batch was not full (nothing of interest lies before it).
    pub fn next_checkpoint(&self, from: Checkpoint, limit: i64) -> Checkpoint {
        let last = self.events.last().map(StoredEvent::checkpoint).unwrap_or(from);
        match self.frontier {
            Some(frontier) if (self.events.len() as i64) < limit => last.max(frontier),
            _ => last,
        }
    }
}

/// Reads up to `limit` events after `after` in commit order, only of `aggregate_types` when given.
pub async fn read_after(
    conn: &mut Conn<'_>,
    after: Checkpoint,
    aggregate_types: Option<&[&str]>,
    limit: i64,
) -> Result<Batch, sqlx::Error> {
    let types: Option<Vec<String>> = aggregate_types.map(|t| t.iter().map(|s| (*s).to_owned()).collect());
    match conn {
        Conn::Postgres(c) => {
            // One statement, one snapshot: the frontier cannot pass an event the batch did not see.
            let sql = format!(
                "WITH horizon AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin), \
                 batch AS (SELECT {PG_COLUMNS} FROM events, horizon \
                   WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) AND tx_id < horizon.xmin \
                     AND ($3::text[] IS NULL OR aggregate_type = ANY($3)) \
                   ORDER BY tx_id, global_position LIMIT $4), \
                 frontier AS (SELECT tx_id::text::bigint AS f_tx, global_position AS f_pos FROM events, horizon \
                   WHERE tx_id < horizon.xmin ORDER BY tx_id DESC, global_position DESC LIMIT 1) \
                 SELECT batch.*, frontier.f_tx, frontier.f_pos FROM frontier LEFT JOIN batch ON true \
                 ORDER BY batch.tx_id, batch.global_position"
            );
            let rows: Vec<BatchRow> = sqlx::query_as(&sql)
                .bind(after.tx_id)
                .bind(after.position)
                .bind(types)
                .bind(limit)
                .fetch_all(&mut **c)
                .await?;
            Ok(batch(rows))
        }
        Conn::Sqlite(c) => {
            // A read transaction of its own would be one snapshot too; a single statement is.
            let sql = format!(
                "WITH frontier AS (SELECT 0 AS f_tx, max(global_position) AS f_pos FROM events), \
                 batch AS (SELECT {SQLITE_COLUMNS} FROM events WHERE global_position > $1 \
                   AND ($2 IS NULL OR aggregate_type IN (SELECT value FROM json_each($2))) \
                   ORDER BY global_position LIMIT $3) \
                 SELECT batch.*, frontier.f_tx, frontier.f_pos FROM frontier LEFT JOIN batch ON true \
                 WHERE frontier.f_pos IS NOT NULL ORDER BY batch.global_position"
            );
            let rows: Vec<BatchRow> = sqlx::query_as(&sql)
                .bind(after.position)
                .bind(types.map(|t| serde_json::json!(t)))
                .bind(limit)
                .fetch_all(&mut **c)
                .await?;
            Ok(batch(rows))
        }
    }
}

/// A batch row: an event (all `None` when the batch is empty) and the frontier.
#[derive(sqlx::FromRow)]
struct BatchRow {
    global_position: Option<i64>,
    tx_id: Option<i64>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    sequence: Option<i64>,
    event_type: Option<String>,
    event_version: Option<String>,
    payload: Option<serde_json::Value>,
    metadata: Option<serde_json::Value>,
    recorded_at: Option<chrono::DateTime<chrono::Utc>>,
    f_tx: i64,
    f_pos: i64,
}

impl BatchRow {
    fn event(self) -> Option<StoredEvent> {
        Some(StoredEvent {
            position: self.global_position?,
            tx_id: self.tx_id?,
            aggregate_type: self.aggregate_type?,
            aggregate_id: self.aggregate_id?,
            sequence: self.sequence?,
            event_type: self.event_type?,
            event_version: self.event_version?,
            payload: self.payload?,
            metadata: self.metadata?,
            recorded_at: self.recorded_at?,
        })
    }
}

fn batch(rows: Vec<BatchRow>) -> Batch {
    let mut batch = Batch::default();
    for row in rows {
        batch.frontier.get_or_insert(Checkpoint { tx_id: row.f_tx, position: row.f_pos });
        batch.events.extend(row.event());
    }
    batch
}

/// Every event of one stream, in sequence order.
pub async fn read_stream(
    conn: &mut Conn<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("{} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence", select_events(conn));
    on_conn!(conn, |c| sqlx::query_as(&sql).bind(aggregate_type).bind(aggregate_id).fetch_all(c).await)
}

/// Where the last event of a stream sits in commit order (what a reader must pass to have seen it).
pub async fn stream_head(
    conn: &mut Conn<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
        place(conn)
    );
    let row: Option<(i64, i64)> =
        on_conn!(conn, |c| sqlx::query_as(&sql).bind(aggregate_type).bind(aggregate_id).fetch_optional(c).await)?;
    Ok(row.map(|(tx_id, position)| Checkpoint { tx_id, position }))
}

/// The commit-order place of the event at `position`, if it exists.
pub async fn checkpoint_of(conn: &mut Conn<'_>, position: i64) -> Result<Option<Checkpoint>, sqlx::Error> {
    let sql = format!("SELECT {} FROM events WHERE global_position = $1", place(conn));
    let row: Option<(i64, i64)> = on_conn!(conn, |c| sqlx::query_as(&sql).bind(position).fetch_optional(c).await)?;
    Ok(row.map(|(tx_id, position)| Checkpoint { tx_id, position }))
}

/// The columns of an event's place in commit order: `tx_id, global_position`.
fn place(conn: &Conn<'_>) -> &'static str {
    match conn {
        Conn::Postgres(_) => "tx_id::text::bigint, global_position",
        Conn::Sqlite(_) => "0, global_position",
    }
}

/// `SELECT <the event columns> FROM events` for `conn`'s dialect (add a `WHERE`).
pub fn select_events(conn: &Conn<'_>) -> String {
    let columns = match conn {
        Conn::Postgres(_) => PG_COLUMNS,
        Conn::Sqlite(_) => SQLITE_COLUMNS,
    };
    format!("SELECT {columns} FROM events")
}

/// Appends one event to a stream tacho writes without an aggregate (broadcasts); fails with a
/// unique violation when `sequence` is taken. Returns its position.
pub async fn append(
    conn: &mut Conn<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    payload: &serde_json::Value,
    metadata: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    let sql = match conn {
        Conn::Postgres(_) => {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ($1, $2, $3, $4, '1', $5::jsonb::json, $6::jsonb::json) RETURNING global_position"
        }
        Conn::Sqlite(_) => {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ($1, $2, $3, $4, '1', $5, $6) RETURNING rowid"
        }
    };
    let inserted: i64 = on_conn!(conn, |c| {
        sqlx::query_scalar(sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(sequence)
            .bind(event_type)
            .bind(payload)
            .bind(metadata)
            .fetch_one(c)
            .await
    })?;
    match conn {
        Conn::Postgres(_) => Ok(inserted),
        // The position is set by a trigger after the insert.
        Conn::Sqlite(c) => {
            sqlx::query_scalar("SELECT global_position FROM events WHERE rowid = $1")
                .bind(inserted)
                .fetch_one(&mut **c)
                .await
        }
    }
}
