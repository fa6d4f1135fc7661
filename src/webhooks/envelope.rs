//! CloudEvents 1.0 envelopes (JSON format) of the log's events, as partners receive them: `id` is
//! the event's stable identity in the log (`{stream type}:{stream id}:{sequence}`), so a receiver
//! deduplicates redeliveries; `type` is `io.tacho.` and the log's stable event type; `data` is the
//! event as stored; two extension attributes say where it sits in the log (`tachoposition`) and
//! the consent version it was delivered under (`tachoconsentversion`).

use crate::domain::observation::{self, STREAM_TYPE};
use crate::domain::streams;
use crate::domain::webhook::Topic;
use crate::store::log::StoredEvent;
use serde_json::{json, Value};

/// What a subscription would have to ask for to receive `event`; `None` for events never delivered
/// (consents, devices, webhooks themselves, broadcasts).
pub fn topic_of(event: &StoredEvent) -> Option<Topic> {
    match event.aggregate_type.as_str() {
        streams::COMMAND => Some(Topic::Command),
        streams::VEHICLE => Some(Topic::VehicleRegistry),
        STREAM_TYPE => match event.event_type.as_str() {
            "StateReported" => Some(Topic::VehicleState),
            "VehicleEventReported" => Some(Topic::VehicleEvent),
            observation::CONNECTION_CHANGED => Some(Topic::VehicleConnection),
            _ => None,
        },
        _ => None,
    }
}

/// The event's stable id.
pub fn event_id(event: &StoredEvent) -> String {
    format!("{}:{}:{}", event.aggregate_type, event.aggregate_id, event.sequence)
}

/// The stream types that hold what `topics` ask for.
pub fn stream_types(topics: impl IntoIterator<Item = Topic>) -> Vec<&'static str> {
    let mut types: Vec<&'static str> = topics
        .into_iter()
        .map(|t| match t {
            Topic::Command => streams::COMMAND,
            Topic::VehicleRegistry => streams::VEHICLE,
            Topic::VehicleEvent | Topic::VehicleState | Topic::VehicleConnection => STREAM_TYPE,
        })
        .collect();
    types.sort_unstable();
    types.dedup();
    types
}

/// The envelope of `event` about `subject` (a VIN, or a command id), what names a position left out
/// unless `location` (the `location` purpose), as the read API does: a state report's position
/// signals, and the keys naming a location at any depth of a reported event's data.
pub fn envelope(event: &StoredEvent, subject: &str, consent_version: Option<u32>, location: bool) -> Value {
    let mut data = match &event.payload {
        Value::Object(outer) if outer.len() == 1 => outer.values().next().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    if !location {
        match event.event_type.as_str() {
            "StateReported" => {
                if let Some(Value::Object(signals)) = data.get_mut("signals") {
                    *signals = observation::without_location(std::mem::take(signals), false).0;
                }
            }
            "VehicleEventReported" => {
                if let Some(reported) = data.get_mut("data") {
                    *reported = observation::redact_location(reported.take());
                }
            }
            _ => {}
        }
    }
    let mut envelope = json!({
        "specversion": "1.0",
        "id": event_id(event),
        "source": format!("/tacho/{}/{}", event.aggregate_type, event.aggregate_id),
        "type": format!("io.tacho.{}", event.event_type),
        "subject": subject,
        "time": event.recorded_at,
        "datacontenttype": "application/json",
        "data": data,
        "tachoposition": event.position,
    });
    if let Some(version) = consent_version {
        envelope["tachoconsentversion"] = json!(version);
    }
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn stored(aggregate_type: &str, event_type: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            position: 42,
            tx_id: 7,
            aggregate_type: aggregate_type.into(),
            aggregate_id: "1HGCM82633A004352".into(),
            sequence: 3,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload,
            metadata: json!({}),
            recorded_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().unwrap(),
            unreadable: None,
        }
    }

    #[test]
    fn a_state_report_is_a_cloudevent_without_its_location_unless_consented() {
        let signals = json!({"Vehicle.Speed": 50, "Vehicle.CurrentLocation.Latitude": 48.1});
        let event =
            stored(STREAM_TYPE, "StateReported", json!({"StateReported": {"msg_id": "m1", "signals": signals}}));
        assert_eq!(topic_of(&event), Some(Topic::VehicleState));
        let sent = envelope(&event, "1HGCM82633A004352", Some(4), false);
        assert_eq!(sent["specversion"], "1.0");
        assert_eq!(sent["id"], "VehicleState:1HGCM82633A004352:3");
        assert_eq!(sent["type"], "io.tacho.StateReported");
        assert_eq!(sent["subject"], "1HGCM82633A004352");
        assert_eq!(sent["time"], "2026-01-02T03:04:05Z");
        assert_eq!(sent["tachoposition"], 42);
        assert_eq!(sent["tachoconsentversion"], 4);
        assert_eq!(sent["data"]["signals"], json!({"Vehicle.Speed": 50}));
        let with_location = envelope(&event, "1HGCM82633A004352", Some(4), true);
        assert_eq!(with_location["data"]["signals"], signals);
    }

    #[test]
    fn a_reported_events_location_keys_go_only_with_the_location_purpose() {
        let data = json!({"code": "P0300", "where": {"lat": 48.1, "lon": 11.5}, "gps": [1, 2]});
        let payload = json!({"VehicleEventReported": {"msg_id": "m1", "kind": "breakdown", "data": data}});
        let event = stored(STREAM_TYPE, "VehicleEventReported", payload);
        assert_eq!(topic_of(&event), Some(Topic::VehicleEvent));
        let sent = envelope(&event, "1HGCM82633A004352", Some(4), false);
        assert_eq!(sent["data"]["data"], json!({"code": "P0300", "where": {}}));
        assert_eq!(sent["data"]["kind"], "breakdown");
        assert_eq!(envelope(&event, "1HGCM82633A004352", Some(4), true)["data"]["data"], data);
    }

    #[test]
    fn only_deliverable_streams_have_a_topic() {
        assert_eq!(topic_of(&stored(streams::COMMAND, "CommandSucceeded", json!({}))), Some(Topic::Command));
        assert_eq!(topic_of(&stored(streams::VEHICLE, "VehicleActivated", json!({}))), Some(Topic::VehicleRegistry));
        assert_eq!(topic_of(&stored(streams::CONSENT, "ConsentGranted", json!({}))), None);
        assert_eq!(topic_of(&stored(streams::WEBHOOK, "WebhookCreated", json!({}))), None);
        assert_eq!(
            stream_types([Topic::VehicleEvent, Topic::VehicleState, Topic::Command]),
            [streams::COMMAND, STREAM_TYPE]
        );
    }
}
