//! Named reads and deletions for the processes ([`crate::processes`]): commands waiting on a vehicle
//! or on the clock, as the read models show them, and the pruning of what is kept for a while.
//!
//! The read models lag the log: whoever acts on these ids loads the aggregate, which decides.

use super::{Db, Sql};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How many commands one sweep takes at most.
const SWEEP_LIMIT: i64 = 500;

/// Whether the registry shows `vin` connected (false for an unknown vehicle).
pub async fn is_connected(db: &Db, vin: &str) -> Result<bool, sqlx::Error> {
    let sql = "SELECT connected FROM rm_vehicles WHERE vin = $1";
    let online: Option<bool> = Sql::new(sql).bind(vin).scalar_optional(db).await?;
    Ok(online.unwrap_or(false))
}

/// `vin`'s queued commands, oldest first.
pub async fn queued(db: &Db, vin: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = "SELECT command_id FROM rm_commands WHERE vin = $1 AND status = 'queued' ORDER BY requested_at";
    Sql::new(sql).bind(vin).scalars(db).await
}

/// `vin`'s commands sent by `requester` before `before` and not yet dispatched (requested or queued).
pub async fn not_sent_by(db: &Db, vin: &str, requester: &str, before: DateTime<Utc>) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = "SELECT command_id FROM rm_commands WHERE vin = $1 AND requester = $2 \
               AND status IN ('requested', 'queued') AND requested_at < $3";
    Sql::new(sql).bind(vin).bind(requester).bind(before).scalars(db).await
}

/// `vin`'s commands at the vehicle: dispatched, accepted or in progress.
pub async fn in_flight(db: &Db, vin: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = "SELECT command_id FROM rm_commands WHERE vin = $1 \
               AND status IN ('dispatched', 'accepted', 'in_progress')";
    Sql::new(sql).bind(vin).scalars(db).await
}

/// Commands not finished whose deadline is at or before `now`, earliest first.
pub async fn overdue(db: &Db, now: DateTime<Utc>) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql =
        "SELECT command_id FROM rm_commands WHERE status IN ('requested', 'dispatched', 'accepted', 'in_progress') \
         AND deadline_at <= $1 ORDER BY deadline_at LIMIT $2";
    Sql::new(sql).bind(now).bind(SWEEP_LIMIT).scalars(db).await
}

/// Queued commands whose time to live ended at or before `now`, earliest first.
pub async fn expired(db: &Db, now: DateTime<Utc>) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = "SELECT command_id FROM rm_commands WHERE status = 'queued' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2";
    Sql::new(sql).bind(now).bind(SWEEP_LIMIT).scalars(db).await
}

/// Queued commands whose vehicle the registry shows connected, oldest first.
pub async fn ready(db: &Db) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = "SELECT c.command_id FROM rm_commands c JOIN rm_vehicles v ON v.vin = c.vin \
         WHERE c.status = 'queued' AND v.connected ORDER BY c.requested_at LIMIT $1";
    Sql::new(sql).bind(SWEEP_LIMIT).scalars(db).await
}

/// What to prune: everything of each kind received or created before its time.
#[derive(Debug, Clone, Copy)]
pub struct Prune {
    /// State history.
    pub history_before: DateTime<Utc>,
    /// Vehicle message ids (the deduplication window).
    pub seen_before: DateTime<Utc>,
    /// Dead letters.
    pub dead_letters_before: DateTime<Utc>,
    /// Idempotency keys.
    pub keys_before: DateTime<Utc>,
}

/// Deletes what `prune` names; how many rows went.
pub async fn prune(db: &Db, prune: Prune) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for (sql, before) in [
        ("DELETE FROM rm_state_history WHERE received_at < $1", prune.history_before),
        ("DELETE FROM inbound_seen WHERE received_at < $1", prune.seen_before),
        ("DELETE FROM dead_letters WHERE received_at < $1", prune.dead_letters_before),
        ("DELETE FROM command_idempotency WHERE created_at < $1", prune.keys_before),
    ] {
        deleted += Sql::new(sql).bind(before).execute(db).await?;
    }
    Ok(deleted)
}
