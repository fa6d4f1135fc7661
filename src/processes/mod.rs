//! Processes: the side effects the log drives, each a checkpointed subscriber that runs on one
//! instance at a time and is at-least-once (its effects are idempotent).
//!
//! - [`dispatcher`]: sends requested commands to their vehicles through a [`CommandLink`].
//! - [`vehicle`]: a vehicle's connection (Last Will interrupts what is in flight, coming online
//!   sends what is queued) and revoked consents (cancel what is queued).
//! - [`sweep`]: the clock (deadlines, TTLs) and pruning.
//!
//! Processes read the store and move aggregates; the transport is behind [`CommandLink`], which the
//! MQTT adapter implements.

pub mod dispatcher;
pub mod sweep;
pub mod vehicle;

use crate::projections::ProjectionError;
use std::collections::HashMap;

/// A command request on its way to its vehicle.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Command id (the vehicle answers with it).
    pub command_id: uuid::Uuid,
    /// VIN.
    pub vin: String,
    /// Catalogue name.
    pub name: String,
    /// Parameters.
    pub params: serde_json::Value,
    /// Seconds the vehicle has to answer.
    pub timeout_s: u32,
}

/// Why a request was not confirmed sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SendError(pub String);

/// The port commands leave tacho through. `send` MUST return `Ok` only once the transport confirmed
/// the request (MQTT: the broker's PUBACK); an error means it may or may not have arrived, and the
/// dispatcher sends it again later with the same command id.
#[async_trait::async_trait]
pub trait CommandLink: Send + Sync + 'static {
    /// Sends `command` to its vehicle.
    async fn send(&self, command: &Outgoing) -> Result<(), SendError>;
}

fn effect(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Effect(e.to_string())
}

/// The metadata of events a process records: who acted.
fn acting(actor: &str) -> HashMap<String, String> {
    HashMap::from([("actor".to_owned(), actor.to_owned())])
}
