//! Vehicle data read models: last-known state per VSS signal (`rm_vehicle_state`, newest vehicle
//! time wins, so a late report never overwrites a fresher value), its short history
//! (`rm_state_history`, one row per report, pruned after the retention period) and the events vehicles reported
//! (`rm_vehicle_events`). Set-based writes: thousands of reports per batch.

use super::{Projection, ProjectionError};
use crate::domain::observation::{VehicleFact, STREAM_TYPE};
use crate::store::log::StoredEvent;
use crate::store::Conn;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::SqliteConnection;
use std::collections::HashMap;

/// Keeps the vehicle data read models.
pub struct StateProjection;

impl StateProjection {
    /// Subscriber name.
    pub const NAME: &'static str = "vehicle_state";
}

#[derive(Default)]
struct Rows {
    vins: Vec<String>,
    signals: Vec<String>,
    values: Vec<Value>,
    vehicle_ts: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
}

impl Rows {
    fn push(&mut self, vin: &str, signal: &str, value: Value, ts: DateTime<Utc>, received: DateTime<Utc>) {
        self.vins.push(vin.to_owned());
        self.signals.push(signal.to_owned());
        self.values.push(value);
        self.vehicle_ts.push(ts);
        self.received_at.push(received);
    }
}

/// History rows, column by column: vin, signals, vehicle time, received time, position.
type History = (Vec<String>, Vec<Value>, Vec<DateTime<Utc>>, Vec<DateTime<Utc>>, Vec<i64>);
/// Reported events, column by column: vin, msg id, kind, data, vehicle time, received time, position.
type Reported = (Vec<String>, Vec<String>, Vec<String>, Vec<Value>, Vec<DateTime<Utc>>, Vec<DateTime<Utc>>, Vec<i64>);

#[async_trait::async_trait]
impl Projection for StateProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[STREAM_TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_vehicle_state", "rm_state_history", "rm_vehicle_events"]
    }

    async fn apply(&self, conn: &mut Conn<'_>, event: &StoredEvent) -> Result<(), ProjectionError> {
        self.apply_batch(conn, std::slice::from_ref(event)).await
    }

    async fn apply_batch(&self, conn: &mut Conn<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        let mut history: History = Default::default();
        // Per (vin, signal) only the freshest value of the batch goes to the upsert.
        let mut latest: HashMap<(String, String), (Value, DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
        let mut reported: Reported = Default::default();
        for event in events {
            let vin = event.aggregate_id.as_str();
            match event.decode::<VehicleFact>()? {
                VehicleFact::StateReported { signals, vehicle_ts, received_at, .. } => {
                    history.0.push(vin.to_owned());
                    history.1.push(Value::Object(signals.clone()));
                    history.2.push(vehicle_ts);
                    history.3.push(received_at);
                    history.4.push(event.position);
                    for (signal, value) in signals {
                        let key = (vin.to_owned(), signal);
                        let fresher = latest.get(&key).is_none_or(|(_, ts, _)| vehicle_ts >= *ts);
                        if fresher {
                            latest.insert(key, (value, vehicle_ts, received_at));
                        }
                    }
                }
                VehicleFact::VehicleEventReported { msg_id, kind, data, vehicle_ts, received_at, .. } => {
                    reported.0.push(vin.to_owned());
                    reported.1.push(msg_id);
                    reported.2.push(kind);
                    reported.3.push(data);
                    reported.4.push(vehicle_ts);
                    reported.5.push(received_at);
                    reported.6.push(event.position);
                }
                VehicleFact::ConnectionChanged { .. } => {}
            }
        }
        let mut current = Rows::default();
        for ((vin, signal), (value, ts, received)) in latest {
            current.push(&vin, &signal, value, ts, received);
        }
        let c = match conn {
            Conn::Postgres(c) => c,
            Conn::Sqlite(c) => return write_sqlite(c, &current, &history, &reported).await,
        };
        if !current.vins.is_empty() {
            sqlx::query(
                "INSERT INTO rm_vehicle_state (vin, signal, value, vehicle_ts, received_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[]) \
                 ON CONFLICT (vin, signal) DO UPDATE SET value = EXCLUDED.value, vehicle_ts = EXCLUDED.vehicle_ts, \
                 received_at = EXCLUDED.received_at WHERE rm_vehicle_state.vehicle_ts <= EXCLUDED.vehicle_ts",
            )
            .bind(&current.vins)
            .bind(&current.signals)
            .bind(&current.values)
            .bind(&current.vehicle_ts)
            .bind(&current.received_at)
            .execute(&mut **c)
            .await?;
            sqlx::query(
                "INSERT INTO rm_state_history (vin, signals, vehicle_ts, received_at, position) \
                 SELECT * FROM UNNEST($1::text[], $2::jsonb[], $3::timestamptz[], $4::timestamptz[], $5::bigint[])",
            )
            .bind(&history.0)
            .bind(&history.1)
            .bind(&history.2)
            .bind(&history.3)
            .bind(&history.4)
            .execute(&mut **c)
            .await?;
        }
        if !reported.0.is_empty() {
            sqlx::query(
                "INSERT INTO rm_vehicle_events (vin, msg_id, kind, data, vehicle_ts, received_at, position) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], \
                 $6::timestamptz[], $7::bigint[]) ON CONFLICT (vin, msg_id) DO NOTHING",
            )
            .bind(&reported.0)
            .bind(&reported.1)
            .bind(&reported.2)
            .bind(&reported.3)
            .bind(&reported.4)
            .bind(&reported.5)
            .bind(&reported.6)
            .execute(&mut **c)
            .await?;
        }
        Ok(())
    }
}

/// The same writes on SQLite, row by row (prepared once per connection, in the batch's transaction).
async fn write_sqlite(
    c: &mut SqliteConnection,
    current: &Rows,
    history: &History,
    reported: &Reported,
) -> Result<(), ProjectionError> {
    for i in 0..current.vins.len() {
        sqlx::query(
            "INSERT INTO rm_vehicle_state (vin, signal, value, vehicle_ts, received_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (vin, signal) DO UPDATE SET value = excluded.value, vehicle_ts = excluded.vehicle_ts, \
             received_at = excluded.received_at WHERE rm_vehicle_state.vehicle_ts <= excluded.vehicle_ts",
        )
        .bind(&current.vins[i])
        .bind(&current.signals[i])
        .bind(&current.values[i])
        .bind(current.vehicle_ts[i])
        .bind(current.received_at[i])
        .execute(&mut *c)
        .await?;
    }
    for i in 0..history.0.len() {
        sqlx::query(
            "INSERT INTO rm_state_history (vin, signals, vehicle_ts, received_at, position) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&history.0[i])
        .bind(&history.1[i])
        .bind(history.2[i])
        .bind(history.3[i])
        .bind(history.4[i])
        .execute(&mut *c)
        .await?;
    }
    for i in 0..reported.0.len() {
        sqlx::query(
            "INSERT INTO rm_vehicle_events (vin, msg_id, kind, data, vehicle_ts, received_at, position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (vin, msg_id) DO NOTHING",
        )
        .bind(&reported.0[i])
        .bind(&reported.1[i])
        .bind(&reported.2[i])
        .bind(&reported.3[i])
        .bind(reported.4[i])
        .bind(reported.5[i])
        .bind(reported.6[i])
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}
