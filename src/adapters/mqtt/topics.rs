//! Topic names of the MQTT contract (stable: vehicles in the field depend on them).

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

/// The broker client id of a device.
pub fn client_id(vin: &str, device_id: &str) -> String {
    format!("{vin}-{device_id}")
}
