//! The Vehicle aggregate (id = VIN): registry entry, lifecycle and attached devices.

mod aggregate;
mod commands;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Vehicle, VehicleError, VehicleStatus};
pub use commands::VehicleCommand;
pub use events::VehicleEvent;
