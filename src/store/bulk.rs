//! Set-based writes of the read models that take thousands of rows per batch (vehicle data,
//! `last_seen`, commands): written by [`super::postgres::bulk`] (`UNNEST`, one statement per table)
//! or [`super::sqlite::bulk`] (row by row in the batch's write transaction).

use super::{postgres, sqlite, Conn};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// Last-known values (`rm_vehicle_state`), one per (vin, signal): a row never overwrites a value of
/// a later vehicle time.
#[derive(Debug, Default)]
pub struct LatestValues {
    /// VIN of each row.
    pub vins: Vec<String>,
    /// VSS path.
    pub signals: Vec<String>,
    /// Value.
    pub values: Vec<Value>,
    /// Vehicle time.
    pub vehicle_ts: Vec<DateTime<Utc>>,
    /// When tacho received it.
    pub received_at: Vec<DateTime<Utc>>,
}

/// State history (`rm_state_history`), one row per report.
#[derive(Debug, Default)]
pub struct HistoryRows {
    /// VIN of each report.
    pub vins: Vec<String>,
    /// Its signals, as one JSON object.
    pub signals: Vec<Value>,
    /// Vehicle time.
    pub vehicle_ts: Vec<DateTime<Utc>>,
    /// When tacho received it.
    pub received_at: Vec<DateTime<Utc>>,
    /// Its position in the log.
    pub positions: Vec<i64>,
}

/// Events vehicles reported (`rm_vehicle_events`); a message id seen before is skipped.
#[derive(Debug, Default)]
pub struct ReportedRows {
    /// VIN of each event.
    pub vins: Vec<String>,
    /// Vehicle-side message id.
    pub msg_ids: Vec<String>,
    /// Event type.
    pub kinds: Vec<String>,
    /// Event data.
    pub data: Vec<Value>,
    /// Vehicle time.
    pub vehicle_ts: Vec<DateTime<Utc>>,
    /// When tacho received it.
    pub received_at: Vec<DateTime<Utc>>,
    /// Its position in the log.
    pub positions: Vec<i64>,
}

/// What one batch of vehicle facts adds to the vehicle-data read models.
#[derive(Debug, Default)]
pub struct VehicleData {
    /// Freshest value per (vin, signal).
    pub latest: LatestValues,
    /// One row per report.
    pub history: HistoryRows,
    /// Reported events.
    pub reported: ReportedRows,
}

/// Writes `data` in the transaction `conn` is in.
pub async fn write_vehicle_data(conn: &mut Conn<'_>, data: &VehicleData) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Postgres(c) => postgres::bulk::write_vehicle_data(c, data).await,
        Conn::Sqlite(c) => sqlite::bulk::write_vehicle_data(c, data).await,
    }
}

/// Moves each vehicle's `last_seen` to its time in `seen`, when that is a second or more later.
pub async fn touch_last_seen(conn: &mut Conn<'_>, seen: Vec<(String, DateTime<Utc>)>) -> Result<(), sqlx::Error> {
    if seen.is_empty() {
        return Ok(());
    }
    match conn {
        Conn::Postgres(c) => postgres::bulk::touch_last_seen(c, seen).await,
        Conn::Sqlite(c) => sqlite::bulk::touch_last_seen(c, seen).await,
    }
}

/// A command's read-model row (`rm_commands`), inserted when a batch holds its request: the
/// request's fields with what the rest of the batch did to it.
#[derive(Debug)]
pub struct NewCommand {
    /// Id.
    pub id: Uuid,
    /// VIN.
    pub vin: String,
    /// Catalogue name.
    pub name: String,
    /// Normalized parameters.
    pub params: Value,
    /// Who asked.
    pub requester: String,
    /// Idempotency key, when one was given.
    pub idempotency_key: Option<String>,
    /// Consent version it was requested under.
    pub consent_version: Option<i64>,
    /// Seconds to wait for a final answer.
    pub timeout_s: i64,
    /// Queue while offline.
    pub store_and_forward: bool,
    /// Queue time to live.
    pub ttl_s: i64,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When it expires if still queued.
    pub expires_at: DateTime<Utc>,
    /// What the batch did after the request.
    pub change: CommandChange,
}

/// What a batch does to one command's row, folded in log order: the last status, the transitions to
/// append, the last result or error, the last dispatch, late answers to append and the version.
#[derive(Debug, Default)]
pub struct CommandChange {
    /// The last status and when it was reached.
    pub status: Option<(&'static str, DateTime<Utc>)>,
    /// `{status, at}` of each status change, in order.
    pub transitions: Vec<Value>,
    /// The last result set.
    pub result: Option<Value>,
    /// The last error set.
    pub error: Option<Value>,
    /// When it was last dispatched (the deadline runs from there).
    pub dispatched_at: Option<DateTime<Utc>>,
    /// Answers that came after the final status, in order.
    pub late_answers: Vec<Value>,
    /// Sequence of the last event that changed the row.
    pub version: i64,
}

/// What one batch of command events does to `rm_commands`: rows to insert, rows to update.
#[derive(Debug, Default)]
pub struct CommandRows {
    /// Commands requested in the batch.
    pub inserts: Vec<NewCommand>,
    /// Commands requested before it, by id.
    pub updates: Vec<(Uuid, CommandChange)>,
}

/// Writes a batch's command rows in the transaction `conn` is in.
pub async fn write_commands(conn: &mut Conn<'_>, rows: &CommandRows) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Postgres(c) => postgres::bulk::write_commands(c, rows).await,
        Conn::Sqlite(c) => sqlite::bulk::write_commands(c, rows).await,
    }
}

impl NewCommand {
    /// Its status and when it was reached: the batch's last, else requested.
    pub fn status(&self) -> (&'static str, DateTime<Utc>) {
        self.change.status.unwrap_or(("requested", self.requested_at))
    }

    /// Every transition, the request's first.
    pub fn transitions(&self) -> Value {
        let requested = serde_json::json!({ "status": "requested", "at": self.requested_at });
        Value::Array(std::iter::once(requested).chain(self.change.transitions.iter().cloned()).collect())
    }

    /// When tacho stops waiting for a final answer: `timeout_s` after the last dispatch, else after
    /// the request.
    pub fn deadline_at(&self) -> DateTime<Utc> {
        self.change.dispatched_at.unwrap_or(self.requested_at) + chrono::Duration::seconds(self.timeout_s)
    }
}
