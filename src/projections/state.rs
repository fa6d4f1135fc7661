//! Vehicle data read models: last-known state per VSS signal (`rm_vehicle_state`, newest vehicle
//! time wins, so a late report never overwrites a fresher value), its short history
//! (`rm_state_history`, one row per report, pruned after the retention period) and the events vehicles reported
//! (`rm_vehicle_events`). Set-based writes: thousands of reports per batch.

use super::{Projection, ProjectionError};
use crate::domain::observation::{VehicleFact, STREAM_TYPE};
use crate::store::bulk::{self, VehicleData};
use crate::store::log::StoredEvent;
use crate::store::Conn;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;

/// Keeps the vehicle data read models.
pub struct StateProjection;

impl StateProjection {
    /// Subscriber name.
    pub const NAME: &'static str = "vehicle_state";
}

/// Per (vin, signal), the freshest value of a batch: value, vehicle time, received time.
type Freshest = HashMap<(String, String), (Value, DateTime<Utc>, DateTime<Utc>)>;

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
        let mut data = VehicleData::default();
        // Per (vin, signal) only the freshest value of the batch goes to the upsert.
        let mut latest: Freshest = HashMap::new();
        for event in events {
            let vin = event.aggregate_id.as_str();
            match event.decode::<VehicleFact>()? {
                VehicleFact::StateReported { signals, vehicle_ts, received_at, .. } => {
                    for (signal, value) in &signals {
                        let key = (vin.to_owned(), signal.clone());
                        let fresher = latest.get(&key).is_none_or(|(_, ts, _)| vehicle_ts >= *ts);
                        if fresher {
                            latest.insert(key, (value.clone(), vehicle_ts, received_at));
                        }
                    }
                    let history = &mut data.history;
                    history.vins.push(vin.to_owned());
                    history.signals.push(Value::Object(signals));
                    history.vehicle_ts.push(vehicle_ts);
                    history.received_at.push(received_at);
                    history.positions.push(event.position);
                }
                VehicleFact::VehicleEventReported { msg_id, kind, data: payload, vehicle_ts, received_at, .. } => {
                    let reported = &mut data.reported;
                    reported.vins.push(vin.to_owned());
                    reported.msg_ids.push(msg_id);
                    reported.kinds.push(kind);
                    reported.data.push(payload);
                    reported.vehicle_ts.push(vehicle_ts);
                    reported.received_at.push(received_at);
                    reported.positions.push(event.position);
                }
                VehicleFact::ConnectionChanged { .. } => {}
            }
        }
        for ((vin, signal), (value, ts, received)) in latest {
            let rows = &mut data.latest;
            rows.vins.push(vin);
            rows.signals.push(signal);
            rows.values.push(value);
            rows.vehicle_ts.push(ts);
            rows.received_at.push(received);
        }
        bulk::write_vehicle_data(conn, &data).await?;
        Ok(())
    }
}
