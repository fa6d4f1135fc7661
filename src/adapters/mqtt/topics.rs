//! Topic names of the MQTT contract (stable: vehicles in the field depend on them).

use crate::domain::Vin;

/// Topic filters a vehicle's device may publish to.
pub fn vehicle_publishes(vin: &str) -> Vec<String> {
    vec![
        format!("vehicles/{vin}/commands/+/response"),
        format!("vehicles/{vin}/state"),
        format!("vehicles/{vin}/events/+"),
        format!("vehicles/{vin}/connection"),
    ]
}

/// Topic filters a vehicle's device may subscribe to.
pub fn vehicle_subscribes(vin: &str) -> Vec<String> {
    vec![format!("vehicles/{vin}/commands/+/request"), "broadcast/#".to_owned()]
}

/// The broker client id of a device: its id, which is also its certificate's identity and its user
/// name at the broker (the secured broker forces the client id to it, so no client takes another's
/// session). Devices provisioned before this rule keep the `<VIN>-<device id>` they were given.
pub fn client_id(device_id: &str) -> String {
    device_id.to_owned()
}

/// Where tacho publishes a command request.
pub fn command_request(vin: &str, name: &str) -> String {
    format!("vehicles/{vin}/commands/{name}/request")
}

/// Where a vehicle answers a command.
pub fn command_response(vin: &str, name: &str) -> String {
    format!("vehicles/{vin}/commands/{name}/response")
}

/// A vehicle's state reports.
pub fn state(vin: &str) -> String {
    format!("vehicles/{vin}/state")
}

/// A vehicle's reported events of `kind`.
pub fn event(vin: &str, kind: &str) -> String {
    format!("vehicles/{vin}/events/{kind}")
}

/// A vehicle's connection state (and its Last Will).
pub fn connection(vin: &str) -> String {
    format!("vehicles/{vin}/connection")
}

/// A broadcast to every vehicle subscribed to `topic`.
pub fn broadcast(topic: &str) -> String {
    format!("broadcast/{topic}")
}

/// What tacho subscribes to (vehicle → cloud), each with QoS 1.
pub const INBOUND: [&str; 4] =
    ["vehicles/+/commands/+/response", "vehicles/+/state", "vehicles/+/events/+", "vehicles/+/connection"];

/// A vehicle → cloud topic, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `vehicles/{vin}/commands/{name}/response`
    Response {
        /// VIN of the topic.
        vin: Vin,
        /// Command name of the topic.
        name: String,
    },
    /// `vehicles/{vin}/state`
    State {
        /// VIN.
        vin: Vin,
    },
    /// `vehicles/{vin}/events/{kind}`
    Event {
        /// VIN.
        vin: Vin,
        /// Event type, e.g. `breakdown`.
        kind: String,
    },
    /// `vehicles/{vin}/connection`
    Connection {
        /// VIN.
        vin: Vin,
    },
}

/// Parses an inbound topic; `Err` says why it is not one tacho handles.
pub fn parse_inbound(topic: &str) -> Result<Inbound, String> {
    let parts: Vec<&str> = topic.split('/').collect();
    let vin = |raw: &str| Vin::parse(raw).map_err(|e| format!("'{raw}' is not a VIN: {e}"));
    let segment = |raw: &str| {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(raw.to_owned())
        } else {
            Err(format!("'{raw}' is not a valid topic segment"))
        }
    };
    match parts.as_slice() {
        ["vehicles", v, "commands", name, "response"] => Ok(Inbound::Response { vin: vin(v)?, name: segment(name)? }),
        ["vehicles", v, "state"] => Ok(Inbound::State { vin: vin(v)? }),
        ["vehicles", v, "events", kind] => Ok(Inbound::Event { vin: vin(v)?, kind: segment(kind)? }),
        ["vehicles", v, "connection"] => Ok(Inbound::Connection { vin: vin(v)? }),
        _ => Err(format!("'{topic}' is not a topic tacho handles")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIN: &str = "1HGCM82633A004352";

    #[test]
    fn inbound_topics_parse() {
        let vin = Vin::parse(VIN).expect("valid");
        assert_eq!(
            parse_inbound(&command_response(VIN, "lock_doors")),
            Ok(Inbound::Response { vin: vin.clone(), name: "lock_doors".into() })
        );
        assert_eq!(parse_inbound(&state(VIN)), Ok(Inbound::State { vin: vin.clone() }));
        assert_eq!(
            parse_inbound(&event(VIN, "breakdown")),
            Ok(Inbound::Event { vin: vin.clone(), kind: "breakdown".into() })
        );
        assert_eq!(parse_inbound(&connection(VIN)), Ok(Inbound::Connection { vin }));
    }

    #[test]
    fn foreign_or_malformed_topics_are_refused() {
        assert!(parse_inbound("vehicles/NOTAVIN/state").is_err());
        assert!(parse_inbound(&format!("vehicles/{VIN}/telemetry/x")).is_err());
        assert!(parse_inbound(&format!("vehicles/{VIN}/events/a b")).is_err());
    }
}
