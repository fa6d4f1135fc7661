//! Decide and apply for the Vehicle aggregate.

use super::{VehicleCommand, VehicleEvent};
use crate::domain::{budget, DomainError, Refusal};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Lifecycle of a vehicle: Registered → Active ⇄ Suspended → Decommissioned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleStatus {
    /// Not registered yet (no events).
    #[default]
    Unknown,
    /// Registered by the factory, not in service.
    Registered,
    /// In service: accepts remote commands.
    Active,
    /// Out of service for a while.
    Suspended,
    /// Retired, terminal.
    Decommissioned,
}

impl VehicleStatus {
    /// The stable name used in read models and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Registered => "registered",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Decommissioned => "decommissioned",
        }
    }
}

/// Refusals of the Vehicle aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VehicleError {
    /// Register on a VIN that is taken.
    #[error("vehicle {0} is already registered")]
    AlreadyRegistered(String),
    /// Any command but Register on a VIN never registered.
    #[error("vehicle is not registered")]
    NotFound,
    /// A lifecycle move the state machine does not allow.
    #[error("a {from} vehicle cannot be {action}")]
    InvalidTransition {
        /// Current status.
        from: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// Bad registration data.
    #[error("{0}")]
    Invalid(String),
    /// Attach of a device already fitted.
    #[error("device {0} is already attached")]
    DeviceAlreadyAttached(String),
    /// Replace of a device that is not fitted.
    #[error("device {0} is not attached to this vehicle")]
    DeviceNotAttached(String),
}

impl DomainError for VehicleError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::AlreadyRegistered(_) => Refusal::VehicleExists,
            Self::NotFound => Refusal::VehicleNotFound,
            Self::InvalidTransition { .. } => Refusal::InvalidTransition,
            Self::Invalid(_) => Refusal::ValidationFailed,
            Self::DeviceAlreadyAttached(_) => Refusal::DeviceExists,
            Self::DeviceNotAttached(_) => Refusal::DeviceNotAttached,
        }
    }
}

/// The Vehicle aggregate state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vehicle {
    /// VIN, empty before registration.
    pub vin: String,
    /// Lifecycle status.
    pub status: VehicleStatus,
    /// Model name.
    pub model: String,
    /// Model year.
    pub model_year: i32,
    /// Market code.
    pub market: String,
    /// Attached devices: id → kind.
    pub devices: BTreeMap<String, String>,
}

impl Vehicle {
    fn transition(&self, action: &'static str) -> VehicleError {
        VehicleError::InvalidTransition { from: self.status.as_str(), action }
    }

    fn decide(&self, command: VehicleCommand) -> Result<Vec<VehicleEvent>, VehicleError> {
        use VehicleStatus as S;
        if self.status == S::Unknown && !matches!(command, VehicleCommand::Register { .. }) {
            return Err(VehicleError::NotFound);
        }
        Ok(match command {
            VehicleCommand::Register { vin, model, model_year, market, options, data_collection, at } => {
                if self.status != S::Unknown {
                    return Err(VehicleError::AlreadyRegistered(self.vin.clone()));
                }
                validate_registration(&model, model_year, &market)?;
                budget::check_object(&data_collection, budget::MAX_VALUE_BYTES)
                    .map_err(|e| VehicleError::Invalid(format!("data_collection: {e}")))?;
                vec![VehicleEvent::VehicleRegistered {
                    vin: vin.to_string(),
                    model: model.trim().to_owned(),
                    model_year,
                    market: market.trim().to_owned(),
                    options,
                    data_collection,
                    at,
                }]
            }
            VehicleCommand::Activate { at } => match self.status {
                S::Registered | S::Suspended => vec![VehicleEvent::VehicleActivated { at }],
                S::Active => vec![],
                _ => return Err(self.transition("activated")),
            },
            VehicleCommand::Suspend { reason, at } => match self.status {
                S::Active => vec![VehicleEvent::VehicleSuspended { reason, at }],
                S::Suspended => vec![],
                _ => return Err(self.transition("suspended")),
            },
            VehicleCommand::Decommission { at } => match self.status {
                S::Decommissioned => vec![],
                _ => vec![VehicleEvent::VehicleDecommissioned { at }],
            },
            VehicleCommand::AttachDevice { device_id, kind, at } => {
                if self.status == S::Decommissioned {
                    return Err(self.transition("fitted with a device"));
                }
                if self.devices.contains_key(&device_id) {
                    return Err(VehicleError::DeviceAlreadyAttached(device_id));
                }
                vec![VehicleEvent::DeviceAttached { device_id, kind, at }]
            }
            VehicleCommand::DetachDevice { device_id, at } => {
                if !self.devices.contains_key(&device_id) {
                    return Err(VehicleError::DeviceNotAttached(device_id));
                }
                vec![VehicleEvent::DeviceDetached { device_id, at }]
            }
            VehicleCommand::ReplaceDevice { old_device_id, new_device_id, at } => {
                if self.status == S::Decommissioned {
                    return Err(self.transition("fitted with a device"));
                }
                if !self.devices.contains_key(&old_device_id) {
                    return Err(VehicleError::DeviceNotAttached(old_device_id));
                }
                if self.devices.contains_key(&new_device_id) {
                    return Err(VehicleError::DeviceAlreadyAttached(new_device_id));
                }
                vec![VehicleEvent::DeviceSwapped { old_device_id, new_device_id, at }]
            }
        })
    }
}

fn validate_registration(model: &str, model_year: i32, market: &str) -> Result<(), VehicleError> {
    if model.trim().is_empty() || model.len() > 100 {
        return Err(VehicleError::Invalid("model must be 1 to 100 characters".into()));
    }
    if !(1950..=2100).contains(&model_year) {
        return Err(VehicleError::Invalid("model_year must be between 1950 and 2100".into()));
    }
    let market = market.trim();
    if market.is_empty() || market.len() > 16 {
        return Err(VehicleError::Invalid("market must be 1 to 16 characters".into()));
    }
    Ok(())
}

impl Aggregate for Vehicle {
    const TYPE: &'static str = crate::domain::streams::VEHICLE;
    type Command = VehicleCommand;
    type Event = VehicleEvent;
    type Error = VehicleError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            VehicleEvent::VehicleRegistered { vin, model, model_year, market, .. } => {
                self.vin = vin;
                self.model = model;
                self.model_year = model_year;
                self.market = market;
                self.status = VehicleStatus::Registered;
            }
            VehicleEvent::VehicleActivated { .. } => self.status = VehicleStatus::Active,
            VehicleEvent::VehicleSuspended { .. } => self.status = VehicleStatus::Suspended,
            VehicleEvent::VehicleDecommissioned { .. } => self.status = VehicleStatus::Decommissioned,
            VehicleEvent::DeviceAttached { device_id, kind, .. } => {
                self.devices.insert(device_id, kind);
            }
            VehicleEvent::DeviceDetached { device_id, .. } => {
                self.devices.remove(&device_id);
            }
            VehicleEvent::DeviceSwapped { old_device_id, new_device_id, .. } => {
                let kind = self.devices.remove(&old_device_id).unwrap_or_default();
                self.devices.insert(new_device_id, kind);
            }
        }
    }
}
