//! Schema evolution of the Consent events. Stored events are never rewritten: an event of an older
//! payload version is brought to the current shape when it is read, by the aggregate store
//! (cqrs-es upcasters) and by the subscribers alike.
//!
//! `ConsentGranted` version 2 added `granted_by`. A version 1 event gets the actor of its metadata
//! (who sent the request that recorded it), else its own subject.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

/// The payload version `ConsentGranted` is written with now.
pub const CONSENT_GRANTED_VERSION: &str = "2";

/// `payload` (as stored, `{"ConsentGranted": {...}}`) in the current shape of its event type;
/// `None` when it is current already.
pub fn upcast(event_type: &str, event_version: &str, payload: &Value, metadata: &Value) -> Option<Value> {
    if event_type != "ConsentGranted" || event_version != "1" {
        return None;
    }
    let mut payload = payload.clone();
    let granted = payload.get_mut("ConsentGranted")?.as_object_mut()?;
    let by = metadata
        .get("actor")
        .and_then(Value::as_str)
        .or_else(|| granted.get("subject").and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    granted.insert("granted_by".to_owned(), Value::String(by));
    Some(payload)
}

/// The same for the cqrs-es aggregate stores.
pub struct ConsentGrantedV1;

impl EventUpcaster for ConsentGrantedV1 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "ConsentGranted" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(payload) = upcast(&event.event_type, &event.event_version, &event.payload, &event.metadata) {
            event.payload = payload;
            event.event_version = CONSENT_GRANTED_VERSION.to_owned();
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::consent::{Consent, ConsentEvent};
    use cqrs_es::Aggregate;
    use serde_json::json;

    fn version_1() -> Value {
        json!({"ConsentGranted": {"vin": "1HGCM82633A004352", "subject": "alice", "purpose": "remote_commands",
               "version": 1, "legal_basis": "consent", "expires_at": null, "at": "2026-01-01T00:00:00Z"}})
    }

    #[test]
    fn a_version_1_grant_takes_its_actor_as_granted_by_and_still_folds() {
        let upcast = upcast("ConsentGranted", "1", &version_1(), &json!({"actor": "owner-7"})).unwrap();
        let event: ConsentEvent = serde_json::from_value(upcast).unwrap();
        assert!(matches!(&event, ConsentEvent::ConsentGranted { granted_by, .. } if granted_by == "owner-7"));
        let mut consent = Consent::default();
        consent.apply(event);
        let at = "2026-02-01T00:00:00Z".parse().unwrap();
        assert_eq!(consent.allows("alice", "remote_commands", at), Some(1));
    }

    #[test]
    fn without_an_actor_the_subject_granted_it() {
        let upcast = upcast("ConsentGranted", "1", &version_1(), &json!({})).unwrap();
        assert_eq!(upcast["ConsentGranted"]["granted_by"], "alice");
    }

    #[test]
    fn current_events_are_left_alone() {
        assert_eq!(upcast("ConsentGranted", "2", &version_1(), &json!({})), None);
        assert_eq!(upcast("ConsentRevoked", "1", &json!({}), &json!({})), None);
    }

    #[test]
    fn the_cqrs_es_upcaster_bumps_the_version() {
        let event = SerializedEvent {
            aggregate_id: "1HGCM82633A004352".into(),
            sequence: 1,
            aggregate_type: "Consent".into(),
            event_type: "ConsentGranted".into(),
            event_version: "1".into(),
            payload: version_1(),
            metadata: json!({"actor": "alice"}),
        };
        assert!(ConsentGrantedV1.can_upcast("ConsentGranted", "1"));
        let upcast = ConsentGrantedV1.upcast(event);
        assert_eq!(upcast.event_version, "2");
        assert_eq!(upcast.payload["ConsentGranted"]["granted_by"], "alice");
    }
}
