//! Set-based read-model writes on PostgreSQL: one `UNNEST` statement per table.

use crate::store::bulk::VehicleData;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Writes the vehicle-data rows of a batch.
pub async fn write_vehicle_data(c: &mut PgConnection, data: &VehicleData) -> Result<(), sqlx::Error> {
    let (latest, history, reported) = (&data.latest, &data.history, &data.reported);
    if !latest.vins.is_empty() {
        sqlx::query(
            "INSERT INTO rm_vehicle_state (vin, signal, value, vehicle_ts, received_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[]) \
             ON CONFLICT (vin, signal) DO UPDATE SET value = EXCLUDED.value, vehicle_ts = EXCLUDED.vehicle_ts, \
             received_at = EXCLUDED.received_at WHERE rm_vehicle_state.vehicle_ts <= EXCLUDED.vehicle_ts",
        )
        .bind(&latest.vins)
        .bind(&latest.signals)
        .bind(&latest.values)
        .bind(&latest.vehicle_ts)
        .bind(&latest.received_at)
        .execute(&mut *c)
        .await?;
    }
    if !history.vins.is_empty() {
        sqlx::query(
            "INSERT INTO rm_state_history (vin, signals, vehicle_ts, received_at, position) \
             SELECT * FROM UNNEST($1::text[], $2::jsonb[], $3::timestamptz[], $4::timestamptz[], $5::bigint[])",
        )
        .bind(&history.vins)
        .bind(&history.signals)
        .bind(&history.vehicle_ts)
        .bind(&history.received_at)
        .bind(&history.positions)
        .execute(&mut *c)
        .await?;
    }
    if !reported.vins.is_empty() {
        sqlx::query(
            "INSERT INTO rm_vehicle_events (vin, msg_id, kind, data, vehicle_ts, received_at, position) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], \
             $6::timestamptz[], $7::bigint[]) ON CONFLICT (vin, msg_id) DO NOTHING",
        )
        .bind(&reported.vins)
        .bind(&reported.msg_ids)
        .bind(&reported.kinds)
        .bind(&reported.data)
        .bind(&reported.vehicle_ts)
        .bind(&reported.received_at)
        .bind(&reported.positions)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Moves `last_seen` of each vehicle in `seen` in one statement.
pub async fn touch_last_seen(c: &mut PgConnection, seen: Vec<(String, DateTime<Utc>)>) -> Result<(), sqlx::Error> {
    let (vins, times): (Vec<String>, Vec<DateTime<Utc>>) = seen.into_iter().unzip();
    sqlx::query(
        "UPDATE rm_vehicles v SET last_seen = u.at \
         FROM UNNEST($1::text[], $2::timestamptz[]) AS u(vin, at) \
         WHERE v.vin = u.vin AND (v.last_seen IS NULL OR v.last_seen < u.at - interval '1 second')",
    )
    .bind(&vins)
    .bind(&times)
    .execute(c)
    .await?;
    Ok(())
}
