//! Set-based writes of the read models that take thousands of rows per batch (vehicle data,
//! `last_seen`): the rows column by column, written by [`super::postgres::bulk`] (`UNNEST`, one
//! statement per table) or [`super::sqlite::bulk`] (row by row in the batch's write transaction).

use super::{postgres, sqlite, Conn};
use chrono::{DateTime, Utc};
use serde_json::Value;

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
