//! What can be asked of a vehicle's registry entry.

use crate::domain::Vin;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Commands of the Vehicle aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum VehicleCommand {
    /// A factory registers a built vehicle.
    Register {
        /// The vehicle's VIN (also the stream id).
        vin: Vin,
        /// Model name.
        model: String,
        /// Model year.
        model_year: i32,
        /// Market code, e.g. `EU`.
        market: String,
        /// Factory options.
        options: Vec<String>,
        /// Initial data-collection configuration.
        data_collection: Map<String, Value>,
        /// When it was registered.
        at: DateTime<Utc>,
    },
    /// Put the vehicle in service (from registered or suspended).
    Activate {
        /// When.
        at: DateTime<Utc>,
    },
    /// Take the vehicle out of service for a while.
    Suspend {
        /// Why, for the audit trail.
        reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Retire the vehicle for good.
    Decommission {
        /// When.
        at: DateTime<Utc>,
    },
    /// A device is fitted to the vehicle.
    AttachDevice {
        /// The device id.
        device_id: String,
        /// Its kind (tcu, infotainment ...).
        kind: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A device is taken out (revoked, removed).
    DetachDevice {
        /// The device id.
        device_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A device is swapped for another in one step (dealer part replacement).
    ReplaceDevice {
        /// The device taken out.
        old_device_id: String,
        /// The device put in.
        new_device_id: String,
        /// When.
        at: DateTime<Utc>,
    },
}
