//! Observed facts about a vehicle: state reports, reported events and connection changes.
//!
//! Vehicle state is not an aggregate (its stream would grow without bound and cqrs-es reloads a
//! whole stream per command): these facts are appended to the log, one stream per vehicle, after the
//! registry and consent checks. Event types are stable strings.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The aggregate type of the fact streams (stream id = VIN).
pub const STREAM_TYPE: &str = super::streams::VEHICLE_STATE;

/// The event type of a [`VehicleFact::ConnectionChanged`].
pub const CONNECTION_CHANGED: &str = "ConnectionChanged";

/// VSS branch whose signals need the `location` consent.
pub const LOCATION_BRANCH: &str = "Vehicle.CurrentLocation";

/// A fact observed about a vehicle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VehicleFact {
    /// A state report: VSS signal values at vehicle time `vehicle_ts`.
    StateReported {
        /// Vehicle-side message id.
        msg_id: String,
        /// Signal values.
        signals: Map<String, Value>,
        /// Vehicle time.
        vehicle_ts: DateTime<Utc>,
        /// When tacho received it.
        received_at: DateTime<Utc>,
        /// Version of the `telemetry` consent that allowed it.
        consent_version: u32,
    },
    /// An event the vehicle reported.
    VehicleEventReported {
        /// Vehicle-side message id.
        msg_id: String,
        /// Event type (topic segment), e.g. `breakdown`.
        kind: String,
        /// Event data.
        data: Value,
        /// Vehicle time.
        vehicle_ts: DateTime<Utc>,
        /// When tacho received it.
        received_at: DateTime<Utc>,
        /// Version of the `telemetry` consent that allowed it.
        consent_version: u32,
    },
    /// The vehicle connected or disconnected (an offline message may be its Last Will).
    ConnectionChanged {
        /// Connected now.
        online: bool,
        /// Vehicle time, when it sent one.
        vehicle_ts: Option<DateTime<Utc>>,
        /// When tacho received it.
        received_at: DateTime<Utc>,
    },
}

impl VehicleFact {
    /// The stable event type.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::StateReported { .. } => "StateReported",
            Self::VehicleEventReported { .. } => "VehicleEventReported",
            Self::ConnectionChanged { .. } => CONNECTION_CHANGED,
        }
    }

    /// When tacho received it.
    pub fn received_at(&self) -> DateTime<Utc> {
        match self {
            Self::StateReported { received_at, .. }
            | Self::VehicleEventReported { received_at, .. }
            | Self::ConnectionChanged { received_at, .. } => *received_at,
        }
    }

    /// The message id it is deduplicated by, if any.
    pub fn msg_id(&self) -> Option<&str> {
        match self {
            Self::StateReported { msg_id, .. } | Self::VehicleEventReported { msg_id, .. } => Some(msg_id),
            Self::ConnectionChanged { .. } => None,
        }
    }
}

/// Splits `signals` into those allowed and the names of position signals dropped because the
/// `location` consent is missing.
pub fn without_location(signals: Map<String, Value>, location_allowed: bool) -> (Map<String, Value>, Vec<String>) {
    if location_allowed {
        return (signals, vec![]);
    }
    let mut kept = Map::new();
    let mut dropped = vec![];
    for (name, value) in signals {
        if name == LOCATION_BRANCH || name.starts_with(&format!("{LOCATION_BRANCH}.")) {
            dropped.push(name);
        } else {
            kept.insert(name, value);
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn position_signals_are_dropped_without_location_consent() {
        let signals =
            json!({"Vehicle.Speed": 0, "Vehicle.CurrentLocation.Latitude": 48.1, "Vehicle.CurrentLocationX": 1});
        let Value::Object(signals) = signals else { unreachable!() };
        let (kept, dropped) = without_location(signals.clone(), false);
        assert_eq!(dropped, ["Vehicle.CurrentLocation.Latitude"]);
        assert!(kept.contains_key("Vehicle.Speed") && kept.contains_key("Vehicle.CurrentLocationX"));
        assert_eq!(without_location(signals, true).1, Vec::<String>::new());
    }
}
