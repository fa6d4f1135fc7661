//! The aggregates: pure decide/apply logic, no IO and no clock. Time and ids arrive on the commands.
//!
//! Stable names: `Aggregate::TYPE` and every `event_type` are written into the log and never renamed.

pub mod command;
pub mod consent;
pub mod device;
pub mod observation;
pub mod vehicle;
pub mod vin;

pub use vin::{Vin, VinError};

/// A refusal with a stable, machine-readable code (the HTTP layer maps codes to statuses).
pub trait DomainError: std::error::Error {
    /// The stable code written on the wire, e.g. `vehicle_not_active`.
    fn code(&self) -> &'static str;
}

/// `payload` of a stored event in the current shape of its event type (`None`: current already).
/// Every reader of the log goes through it, so an old event loads, replays and verifies.
pub fn upcast(
    event_type: &str,
    event_version: &str,
    payload: &serde_json::Value,
    metadata: &serde_json::Value,
) -> Option<serde_json::Value> {
    consent::upcast::upcast(event_type, event_version, payload, metadata)
}

/// The same as cqrs-es upcasters, for the aggregate stores.
pub fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
    vec![Box::new(consent::upcast::ConsentGrantedV1)]
}
