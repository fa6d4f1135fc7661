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

/// Whether a name (a signal path, or a key in a value) says "where the vehicle is": one of its
/// segments (split on `.`, `/`, `_`, `-`, `:` and spaces; any letter case) is a location word, or
/// contains `latitude`, `longitude` or `currentlocation` (`gpsLatitude`). A denylist: it catches
/// VSS's `Vehicle.CurrentLocation` branch and the usual spellings of coordinates, not every way a
/// vehicle could encode a position.
fn names_location(name: &str) -> bool {
    const WORDS: [&str; 9] = ["lat", "lon", "lng", "gps", "gnss", "geo", "geolocation", "coordinates", "location"];
    const WITHIN: [&str; 3] = ["latitude", "longitude", "currentlocation"];
    let contains = |segment: &str, word: &str| {
        segment.as_bytes().windows(word.len()).any(|window| window.eq_ignore_ascii_case(word.as_bytes()))
    };
    name.split(['.', '/', '_', '-', ':', ' ']).any(|segment| {
        WORDS.iter().any(|w| segment.eq_ignore_ascii_case(w)) || WITHIN.iter().any(|w| contains(segment, w))
    })
}

/// Whether `value` holds, at any depth, a key that names a location (bounded: values are at most
/// 32 levels deep once admitted).
pub fn holds_location(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, v)| names_location(key) || holds_location(v)),
        Value::Array(items) => items.iter().any(holds_location),
        _ => false,
    }
}

/// Whether signal `name` with `value` tells where the vehicle is: its path names a location
/// (`Vehicle.CurrentLocation...`, in any case), or its value nests a key that does. Only the `location` consent
/// lets such a signal in, and out to a reader.
pub fn is_location(name: &str, value: &Value) -> bool {
    names_location(name) || holds_location(value)
}

/// `value` without the keys, at any depth, that name a location.
pub fn redact_location(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter().filter(|(key, _)| !names_location(key)).map(|(k, v)| (k, redact_location(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_location).collect()),
        other => other,
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
        if is_location(&name, &value) {
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
        assert_eq!(dropped, ["Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocationX"]);
        assert!(kept.contains_key("Vehicle.Speed"));
        assert_eq!(without_location(signals, true).1, Vec::<String>::new());
    }

    #[test]
    fn the_location_filter_sees_through_case_and_nesting() {
        let signals = json!({
            "vehicle.currentlocation.latitude": 48.1,
            "Vehicle.CURRENTLOCATION": {"Lat": 1},
            "Vehicle.Cabin.Note": {"where": {"Vehicle.CurrentLocation.Longitude": 11.5}},
            "Vehicle.Trip": [{"latitude": 1.0}],
            "Vehicle.Private.Gps": {"gpsLatitude": "48.1"},
            "Vehicle.Nav": {"lon": 11.5},
            "Vehicle.Speed": 50,
            "Vehicle.Cabin.Lights": {"on": true},
            "Vehicle.Cabin.Seat.Row1.Pos1.Position": 3
        });
        let Value::Object(signals) = signals else { unreachable!() };
        let (kept, mut dropped) = without_location(signals, false);
        dropped.sort();
        assert_eq!(
            dropped,
            [
                "Vehicle.CURRENTLOCATION",
                "Vehicle.Cabin.Note",
                "Vehicle.Nav",
                "Vehicle.Private.Gps",
                "Vehicle.Trip",
                "vehicle.currentlocation.latitude"
            ]
        );
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            ["Vehicle.Cabin.Lights", "Vehicle.Cabin.Seat.Row1.Pos1.Position", "Vehicle.Speed"]
        );
        let redacted = redact_location(json!({"code": "P0420", "at": {"Latitude": 1, "LONGITUDE": 2, "road": "A9"}}));
        assert_eq!(redacted, json!({"code": "P0420", "at": {"road": "A9"}}));
    }
}
