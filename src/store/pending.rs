//! Named reads and deletions for the processes ([`crate::processes`]): commands waiting on a vehicle
//! or on the clock, as the read models show them, and the pruning of what is kept for a while.
//!
//! The read models lag the log: whoever acts on these ids loads the aggregate, which decides.

use super::sql::On;
use super::{Db, Sql};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How many commands one sweep takes at most.
const SWEEP_LIMIT: i64 = 500;

/// Whether the registry shows `vin` connected (false for an unknown vehicle).
pub async fn is_connected<'a>(on: impl Into<On<'a>>, vin: &str) -> Result<bool, sqlx::Error> {
    let sql = "SELECT connected FROM rm_vehicles WHERE vin = $1";
    let online: Option<bool> = Sql::new(sql).bind(vin).scalar_optional(on).await?;
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

/// What the clock has to do now, and when it next has to.
#[derive(Debug, Default)]
pub struct Due {
    /// Commands not finished whose deadline passed, earliest first.
    pub overdue: Vec<Uuid>,
    /// Queued commands whose time to live ended.
    pub expired: Vec<Uuid>,
    /// Queued commands whose vehicle the registry shows connected, with their VIN.
    pub ready: Vec<(Uuid, String)>,
    /// The earliest deadline or end of a time to live still ahead.
    pub next: Option<DateTime<Utc>>,
}

/// A row of [`due`]: what kind, command id, VIN, time.
type DueRow = (String, Option<Uuid>, Option<String>, Option<DateTime<Utc>>);

/// What is due at `now`, and the next time something falls due, in one statement.
pub async fn due(db: &Db, now: DateTime<Utc>) -> Result<Due, sqlx::Error> {
    let sql = "SELECT 'overdue' AS kind, command_id, CAST(NULL AS text) AS vin, CAST(NULL AS timestamptz) AS at FROM \
           (SELECT command_id FROM rm_commands WHERE status IN ('requested', 'dispatched', 'accepted', 'in_progress') \
            AND deadline_at <= $1 ORDER BY deadline_at LIMIT $2) o \
         UNION ALL SELECT 'expired', command_id, NULL, NULL FROM \
           (SELECT command_id FROM rm_commands WHERE status = 'queued' AND expires_at <= $1 \
            ORDER BY expires_at LIMIT $2) e \
         UNION ALL SELECT 'ready', command_id, vin, NULL FROM \
           (SELECT c.command_id, c.vin FROM rm_commands c JOIN rm_vehicles v ON v.vin = c.vin \
            WHERE c.status = 'queued' AND v.connected ORDER BY c.requested_at LIMIT $2) r \
         UNION ALL SELECT 'next', NULL, NULL, min(at) FROM \
           (SELECT min(deadline_at) AS at FROM rm_commands \
              WHERE status IN ('requested', 'dispatched', 'accepted', 'in_progress') AND deadline_at > $1 \
            UNION ALL SELECT min(expires_at) FROM rm_commands WHERE status = 'queued' AND expires_at > $1) n";
    let rows: Vec<DueRow> = Sql::new(sql).bind(now).bind(SWEEP_LIMIT).fetch_all(db).await?;
    let mut due = Due::default();
    for (kind, id, vin, at) in rows {
        match (kind.as_str(), id) {
            ("overdue", Some(id)) => due.overdue.push(id),
            ("expired", Some(id)) => due.expired.push(id),
            ("ready", Some(id)) => due.ready.push((id, vin.unwrap_or_default())),
            _ => due.next = at,
        }
    }
    Ok(due)
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
    /// Webhook rows no subscription uses (a secret whose event never came or whose grace period
    /// ended, the place and attempts of a deleted subscription), made before this.
    pub webhook_orphans_before: DateTime<Utc>,
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
    // A secret signs while it is its subscription's, or its previous one within the grace period.
    let secrets = "DELETE FROM webhook_secrets WHERE created_at < $1 AND NOT EXISTS (SELECT 1 FROM rm_webhooks w \
         WHERE w.webhook_id = webhook_secrets.webhook_id AND w.status <> 'deleted' AND \
         (w.secret = webhook_secrets.fingerprint OR (w.previous_secret = webhook_secrets.fingerprint \
         AND w.previous_until > $2)))";
    deleted += Sql::new(secrets).bind(prune.webhook_orphans_before).bind(Utc::now()).execute(db).await?;
    for (table, made) in [("webhook_cursors", "updated_at"), ("webhook_deliveries", "attempted_at")] {
        let sql = format!(
            "DELETE FROM {table} WHERE {made} < $1 AND NOT EXISTS (SELECT 1 FROM rm_webhooks w \
             WHERE w.webhook_id = {table}.webhook_id AND w.status <> 'deleted')"
        );
        deleted += Sql::new(&sql).bind(prune.webhook_orphans_before).execute(db).await?;
    }
    Ok(deleted)
}
