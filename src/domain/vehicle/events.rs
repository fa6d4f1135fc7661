//! What happened to a vehicle's registry entry. Event types are stable strings.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Events of the Vehicle aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VehicleEvent {
    /// The vehicle entered the registry.
    VehicleRegistered {
        /// VIN.
        vin: String,
        /// Model name.
        model: String,
        /// Model year.
        model_year: i32,
        /// Market code.
        market: String,
        /// Factory options.
        options: Vec<String>,
        /// Data-collection configuration.
        data_collection: Map<String, Value>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The vehicle is in service.
    VehicleActivated {
        /// When.
        at: DateTime<Utc>,
    },
    /// The vehicle is out of service for a while.
    VehicleSuspended {
        /// Why.
        reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The vehicle is retired.
    VehicleDecommissioned {
        /// When.
        at: DateTime<Utc>,
    },
    /// A device was fitted.
    DeviceAttached {
        /// Device id.
        device_id: String,
        /// Kind.
        kind: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A device was taken out.
    DeviceDetached {
        /// Device id.
        device_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// One device replaced another in one step.
    DeviceSwapped {
        /// Device taken out.
        old_device_id: String,
        /// Device put in.
        new_device_id: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for VehicleEvent {
    fn event_type(&self) -> String {
        match self {
            Self::VehicleRegistered { .. } => "VehicleRegistered",
            Self::VehicleActivated { .. } => "VehicleActivated",
            Self::VehicleSuspended { .. } => "VehicleSuspended",
            Self::VehicleDecommissioned { .. } => "VehicleDecommissioned",
            Self::DeviceAttached { .. } => "DeviceAttached",
            Self::DeviceDetached { .. } => "DeviceDetached",
            Self::DeviceSwapped { .. } => "DeviceSwapped",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
