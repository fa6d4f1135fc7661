//! The Device aggregate (id = device id): a telematics unit or other ECU fitted to one vehicle.

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    normalize_thumbprint, validate_device_id, Device, DeviceCommand, DeviceError, DeviceEvent, DeviceStatus,
};
