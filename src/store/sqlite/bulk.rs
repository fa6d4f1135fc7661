//! Read-model writes of a batch on SQLite: row by row (each statement prepared once per
//! connection), inside the batch's write transaction.

use crate::store::bulk::VehicleData;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

/// Writes the vehicle-data rows of a batch.
pub async fn write_vehicle_data(c: &mut SqliteConnection, data: &VehicleData) -> Result<(), sqlx::Error> {
    let (latest, history, reported) = (&data.latest, &data.history, &data.reported);
    for i in 0..latest.vins.len() {
        sqlx::query(
            "INSERT INTO rm_vehicle_state (vin, signal, value, vehicle_ts, received_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (vin, signal) DO UPDATE SET value = excluded.value, vehicle_ts = excluded.vehicle_ts, \
             received_at = excluded.received_at WHERE rm_vehicle_state.vehicle_ts <= excluded.vehicle_ts",
        )
        .bind(&latest.vins[i])
        .bind(&latest.signals[i])
        .bind(&latest.values[i])
        .bind(latest.vehicle_ts[i])
        .bind(latest.received_at[i])
        .execute(&mut *c)
        .await?;
    }
    for i in 0..history.vins.len() {
        sqlx::query(
            "INSERT INTO rm_state_history (vin, signals, vehicle_ts, received_at, position) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&history.vins[i])
        .bind(&history.signals[i])
        .bind(history.vehicle_ts[i])
        .bind(history.received_at[i])
        .bind(history.positions[i])
        .execute(&mut *c)
        .await?;
    }
    for i in 0..reported.vins.len() {
        sqlx::query(
            "INSERT INTO rm_vehicle_events (vin, msg_id, kind, data, vehicle_ts, received_at, position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (vin, msg_id) DO NOTHING",
        )
        .bind(&reported.vins[i])
        .bind(&reported.msg_ids[i])
        .bind(&reported.kinds[i])
        .bind(&reported.data[i])
        .bind(reported.vehicle_ts[i])
        .bind(reported.received_at[i])
        .bind(reported.positions[i])
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Moves `last_seen` of each vehicle in `seen`, one statement each.
pub async fn touch_last_seen(c: &mut SqliteConnection, seen: Vec<(String, DateTime<Utc>)>) -> Result<(), sqlx::Error> {
    for (vin, at) in seen {
        sqlx::query("UPDATE rm_vehicles SET last_seen = $2 WHERE vin = $1 AND (last_seen IS NULL OR last_seen < $3)")
            .bind(vin)
            .bind(at)
            .bind(at - chrono::Duration::seconds(1))
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}
