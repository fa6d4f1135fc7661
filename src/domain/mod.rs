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
