//! The Consent aggregate (id = VIN): which subject allowed what purpose, under which version.

mod aggregate;
#[cfg(test)]
mod tests;
pub mod upcast;

pub use aggregate::{Consent, ConsentCommand, ConsentError, ConsentEvent, Grant, Purpose};
