//! Read-model writes of a batch on SQLite: row by row (each statement prepared once per
//! connection), inside the batch's write transaction.

use super::dialect;
use crate::store::bulk::{CommandRows, VehicleData};
use chrono::{DateTime, Utc};
use serde_json::Value;
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

/// Inserts the commands requested in a batch and folds the batch's changes into the others, one
/// statement per command.
pub async fn write_commands(c: &mut SqliteConnection, rows: &CommandRows) -> Result<(), sqlx::Error> {
    // A deadline counted from a dispatch is computed as the update computes it (SQLite's own time
    // arithmetic, to the millisecond), so a row is the same whichever batches its events came in.
    let insert = format!(
        "INSERT INTO rm_commands (command_id, vin, name, params, status, requester, idempotency_key, \
         consent_version, timeout_s, store_and_forward, ttl_s, requested_at, updated_at, transitions, version, \
         deadline_at, expires_at, result, error, dispatched_at, late_answers) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         CASE WHEN $20 IS NULL THEN $16 ELSE {} END, $17, $18, $19, $20, $21) \
         ON CONFLICT (command_id) DO NOTHING",
        dialect::plus_seconds("$20", "$9")
    );
    for new in &rows.inserts {
        let (status, updated_at) = new.status();
        sqlx::query(&insert)
            .bind(new.id)
            .bind(&new.vin)
            .bind(&new.name)
            .bind(&new.params)
            .bind(status)
            .bind(&new.requester)
            .bind(&new.idempotency_key)
            .bind(new.consent_version)
            .bind(new.timeout_s)
            .bind(new.store_and_forward)
            .bind(new.ttl_s)
            .bind(new.requested_at)
            .bind(updated_at)
            .bind(new.transitions())
            .bind(new.change.version)
            .bind(new.deadline_at())
            .bind(new.expires_at)
            .bind(&new.change.result)
            .bind(&new.change.error)
            .bind(new.change.dispatched_at)
            .bind(Value::from(new.change.late_answers.clone()))
            .execute(&mut *c)
            .await?;
    }
    for (id, change) in &rows.updates {
        // Statement text depends on how many items each array gains; the connection's statement
        // cache keeps the few shapes a batch has.
        let sql = format!(
            "UPDATE rm_commands SET status = coalesce($2, status), updated_at = coalesce($3, updated_at), \
             transitions = {}, result = coalesce($5, result), error = coalesce($6, error), version = $9, \
             dispatched_at = coalesce($7, dispatched_at), \
             deadline_at = CASE WHEN $7 IS NULL THEN deadline_at ELSE {} END, late_answers = {} \
             WHERE command_id = $1",
            dialect::json_append_all("transitions", "$4", change.transitions.len()),
            dialect::plus_seconds("$7", "timeout_s"),
            dialect::json_append_all("late_answers", "$8", change.late_answers.len()),
        );
        sqlx::query(&sql)
            .bind(id)
            .bind(change.status.map(|(s, _)| s))
            .bind(change.status.map(|(_, at)| at))
            .bind(Value::from(change.transitions.clone()))
            .bind(&change.result)
            .bind(&change.error)
            .bind(change.dispatched_at)
            .bind(Value::from(change.late_answers.clone()))
            .bind(change.version)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}
