//! How far each reader of the log is behind it, and, on PostgreSQL, which backend holds the log's
//! readers back (the oldest running writer of the log).

use super::{Db, Sql};
use chrono::{DateTime, Utc};

/// Most events counted behind a reader (a count beyond says "at least").
pub const COUNTED: i64 = 100_000;

/// How far one reader is behind the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    /// Subscriber name.
    pub subscriber: String,
    /// Events after its checkpoint (at most [`COUNTED`]).
    pub events: i64,
    /// Seconds since the oldest event after its checkpoint was recorded (0 when none).
    pub seconds: f64,
}

/// The lag of each of `names` (a name without a checkpoint is behind the whole log).
pub async fn of(db: &Db, names: &[&str]) -> Result<Vec<Lag>, sqlx::Error> {
    // The events after a checkpoint, by the commit-order index.
    // The events after a checkpoint in commit order, by the index of that order.
    let (after, order) = match db {
        Db::Postgres(_) => {
            ("(e.tx_id, e.global_position) > (c.tx_id::text::xid8, c.position)", "e.tx_id, e.global_position")
        }
        Db::Sqlite(_) => ("e.global_position > c.position", "e.global_position"),
    };
    let sql = format!(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM events e WHERE {after} LIMIT $2) n), \
                (SELECT e.recorded_at FROM events e WHERE {after} ORDER BY {order} LIMIT 1) \
         FROM (SELECT coalesce((SELECT tx_id FROM subscription_checkpoints WHERE name = $1), 0) AS tx_id, \
                      coalesce((SELECT position FROM subscription_checkpoints WHERE name = $1), 0) AS position) c"
    );
    let now = Utc::now();
    let mut lags = Vec::with_capacity(names.len());
    for name in names {
        let (events, oldest): (i64, Option<DateTime<Utc>>) =
            Sql::new(&sql).bind(*name).bind(COUNTED).fetch_one(db).await?;
        let seconds = oldest.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0).unwrap_or(0.0);
        lags.push(Lag { subscriber: (*name).to_owned(), events, seconds });
    }
    Ok(lags)
}

/// The oldest running transaction that writes the log, other than this connection's: what the
/// readers wait for. `None` on SQLite (one writer, never idle) or when there is none.
pub async fn oldest_writer(db: &Db) -> Result<Option<String>, sqlx::Error> {
    let Db::Postgres(pool) = db else { return Ok(None) };
    /// pid, application name, state, transaction start. (Not its statement: `/readyz` is public.)
    type Backend = (i32, String, Option<String>, Option<DateTime<Utc>>);
    let row: Option<Backend> = sqlx::query_as(
        "SELECT a.pid, a.application_name, a.state, a.xact_start \
         FROM pg_locks r JOIN pg_stat_activity a ON a.pid = r.pid \
         WHERE r.locktype = 'relation' AND r.relation = 'events'::regclass AND r.mode <> 'AccessShareLock' \
           AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND a.pid <> pg_backend_pid() \
         ORDER BY a.xact_start LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(pid, application, state, since)| {
        format!(
            "backend {pid} ({}, {} since {})",
            if application.is_empty() {
                "no application name".to_owned()
            } else {
                format!("application {application}")
            },
            state.unwrap_or_else(|| "unknown state".into()),
            since.map(|t| t.to_rfc3339()).unwrap_or_else(|| "?".into()),
        )
    }))
}
