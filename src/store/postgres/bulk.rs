//! Set-based read-model writes on PostgreSQL: one `UNNEST` statement per table.

use crate::store::bulk::{CommandRows, VehicleData};
use chrono::{DateTime, Utc};
use serde_json::Value;
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
         WHERE v.vin = u.vin AND v.vin = ANY($1) AND (v.last_seen IS NULL OR v.last_seen < u.at - interval '1 second')",
    )
    .bind(&vins)
    .bind(&times)
    .execute(c)
    .await?;
    Ok(())
}

/// Inserts the commands requested in a batch and folds the batch's changes into the others, one
/// statement each. The updates name their rows also as `= ANY(ids)`: the planner then reads them by
/// the primary key whatever it guesses of `UNNEST`'s length (a plan cached while the table was small
/// otherwise scans the whole table on every batch).
pub async fn write_commands(c: &mut PgConnection, rows: &CommandRows) -> Result<(), sqlx::Error> {
    let new = &rows.inserts;
    if !new.is_empty() {
        let status: Vec<_> = new.iter().map(|n| n.status()).collect();
        sqlx::query(
            "INSERT INTO rm_commands (command_id, vin, name, params, status, requester, idempotency_key, \
             consent_version, timeout_s, store_and_forward, ttl_s, requested_at, updated_at, transitions, version, \
             deadline_at, expires_at, result, error, dispatched_at, late_answers) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[], $7::text[], \
             $8::bigint[], $9::bigint[], $10::boolean[], $11::bigint[], $12::timestamptz[], $13::timestamptz[], \
             $14::jsonb[], $15::bigint[], $16::timestamptz[], $17::timestamptz[], $18::jsonb[], $19::jsonb[], \
             $20::timestamptz[], $21::jsonb[]) \
             ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(new.iter().map(|n| n.id).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.vin.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.name.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| &n.params).collect::<Vec<_>>())
        .bind(status.iter().map(|(s, _)| *s).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.requester.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.idempotency_key.as_deref()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.consent_version).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.timeout_s).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.store_and_forward).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.ttl_s).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.requested_at).collect::<Vec<_>>())
        .bind(status.iter().map(|(_, at)| *at).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.transitions()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.change.version).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.deadline_at()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.expires_at).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.change.result.as_ref()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.change.error.as_ref()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.change.dispatched_at).collect::<Vec<_>>())
        .bind(new.iter().map(|n| Value::from(n.change.late_answers.clone())).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    let changed = &rows.updates;
    if !changed.is_empty() {
        sqlx::query(
            "UPDATE rm_commands c SET status = coalesce(u.status, c.status), \
             updated_at = coalesce(u.updated_at, c.updated_at), transitions = c.transitions || u.transitions, \
             result = coalesce(u.result, c.result), error = coalesce(u.error, c.error), version = u.version, \
             dispatched_at = coalesce(u.dispatched_at, c.dispatched_at), \
             deadline_at = CASE WHEN u.dispatched_at IS NULL THEN c.deadline_at \
                           ELSE u.dispatched_at + make_interval(secs => c.timeout_s) END, \
             late_answers = c.late_answers || u.late_answers \
             FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::jsonb[], $6::jsonb[], \
             $7::timestamptz[], $8::jsonb[], $9::bigint[]) \
             AS u(command_id, status, updated_at, transitions, result, error, dispatched_at, late_answers, version) \
             WHERE c.command_id = u.command_id AND c.command_id = ANY($1)",
        )
        .bind(changed.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| c.status.map(|(s, _)| s)).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| c.status.map(|(_, at)| at)).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| Value::from(c.transitions.clone())).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| c.result.as_ref()).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| c.error.as_ref()).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| c.dispatched_at).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| Value::from(c.late_answers.clone())).collect::<Vec<_>>())
        .bind(changed.iter().map(|(_, c)| c.version).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}
