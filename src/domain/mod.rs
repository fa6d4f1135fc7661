//! The aggregates: pure decide/apply logic, no IO and no clock. Time and ids arrive on the commands.
//!
//! Stable names: `Aggregate::TYPE` and every `event_type` are written into the log and never renamed.

pub mod budget;
pub mod command;
pub mod connection;
pub mod consent;
pub mod device;
pub mod observation;
pub mod vehicle;
pub mod vin;
pub mod webhook;

pub use vin::{Vin, VinError};

/// Stable names of the log's stream types (the aggregate types), written into every row.
pub mod streams {
    /// The Vehicle aggregate.
    pub const VEHICLE: &str = "Vehicle";
    /// The Device aggregate.
    pub const DEVICE: &str = "Device";
    /// The Consent aggregate.
    pub const CONSENT: &str = "Consent";
    /// The Command aggregate.
    pub const COMMAND: &str = "Command";
    /// Facts observed about a vehicle (no aggregate: appended in batches).
    pub const VEHICLE_STATE: &str = "VehicleState";
    /// Broadcasts (no aggregate).
    pub const BROADCAST: &str = "Broadcast";
    /// The Webhook aggregate (subscriptions pushed to partners' endpoints).
    pub const WEBHOOK: &str = "Webhook";
    /// Every stream type.
    pub const ALL: [&str; 7] = [VEHICLE, DEVICE, CONSENT, COMMAND, VEHICLE_STATE, BROADCAST, WEBHOOK];
}

/// Every reason an aggregate refuses a command: a closed set, so each transport maps every one
/// (the HTTP layer to a status and problem code) and a new one cannot go unmapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The VIN is already registered.
    VehicleExists,
    /// The VIN is not registered.
    VehicleNotFound,
    /// The lifecycle does not allow this move.
    InvalidTransition,
    /// A field is out of its range.
    ValidationFailed,
    /// The device id is taken or already fitted.
    DeviceExists,
    /// The device is not fitted to this vehicle.
    DeviceNotAttached,
    /// No such device.
    DeviceNotFound,
    /// The device was replaced or revoked.
    DeviceRetired,
    /// Consent purpose outside the catalogue.
    UnknownPurpose,
    /// Command name outside the catalogue.
    UnknownCommand,
    /// Command parameters, timeout or TTL out of range.
    InvalidParameters,
    /// A second request on an existing command id.
    CommandExists,
    /// No such command.
    CommandNotFound,
    /// The command can no longer be canceled.
    CommandNotCancelable,
    /// A time-out asked for before the command's deadline.
    DeadlineNotReached,
    /// An answer on another vehicle's topic.
    WrongVehicle,
    /// A lookup the decision needs failed (retry later).
    Unavailable,
    /// A second create on an existing webhook subscription id.
    WebhookExists,
    /// No such webhook subscription.
    WebhookNotFound,
}

impl Refusal {
    /// The stable code, e.g. `vehicle_not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VehicleExists => "vehicle_exists",
            Self::VehicleNotFound => "vehicle_not_found",
            Self::InvalidTransition => "invalid_transition",
            Self::ValidationFailed => "validation_failed",
            Self::DeviceExists => "device_exists",
            Self::DeviceNotAttached => "device_not_attached",
            Self::DeviceNotFound => "device_not_found",
            Self::DeviceRetired => "device_retired",
            Self::UnknownPurpose => "unknown_purpose",
            Self::UnknownCommand => "unknown_command",
            Self::InvalidParameters => "invalid_parameters",
            Self::CommandExists => "command_exists",
            Self::CommandNotFound => "command_not_found",
            Self::CommandNotCancelable => "command_not_cancelable",
            Self::DeadlineNotReached => "deadline_not_reached",
            Self::WrongVehicle => "wrong_vehicle",
            Self::Unavailable => "unavailable",
            Self::WebhookExists => "subscription_exists",
            Self::WebhookNotFound => "subscription_not_found",
        }
    }
}

/// An aggregate's refusal, with its [`Refusal`] reason.
pub trait DomainError: std::error::Error {
    /// Why the command was refused.
    fn refusal(&self) -> Refusal;
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
