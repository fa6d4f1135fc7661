//! Processes: the side effects the log drives, each a checkpointed subscriber that runs on one
//! instance at a time and is at-least-once (its effects are idempotent).
//!
//! - [`dispatcher`]: sends requested commands to their vehicles through a [`CommandLink`].
//! - [`vehicle`]: a vehicle's connection (Last Will interrupts what is in flight, coming online
//!   sends what is queued) and revoked consents (cancel what is queued).
//! - [`rights`]: the devices' rights at the broker, kept in step with the registry.
//! - [`sweep`]: the clock (deadlines, TTLs) and pruning.
//!
//! Processes read the store and move aggregates; the transport is behind [`CommandLink`], which the
//! MQTT adapter implements.

pub mod dispatcher;
pub mod rights;
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

/// What the transport said of a request it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Confirmed on its way to the vehicle (MQTT: PUBACK success).
    Delivered,
    /// Taken, but nobody was subscribed to the vehicle's request topic (MQTT v5: PUBACK 16): it
    /// reached no one.
    NoSubscriber,
}

/// Why a request was not confirmed sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The transport refused this request (MQTT: a PUBACK reason code of 128 or more): sending it
    /// again would be refused again; other requests are not concerned.
    #[error("refused: {0}")]
    Refused(String),
    /// The transport is not available (broker down, no confirmation in time): the request may or may
    /// not have arrived; it is sent again later with the same command id.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The port commands leave tacho through. `send` MUST return `Ok` only once the transport confirmed
/// the request (MQTT: the broker's PUBACK).
#[async_trait::async_trait]
pub trait CommandLink: Send + Sync + 'static {
    /// Sends `command` to its vehicle.
    async fn send(&self, command: &Outgoing) -> Result<Sent, SendError>;
}

fn effect(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Effect(e.to_string())
}

/// The read model lags the aggregates: a command it still lists may have moved on, and the aggregate
/// refuses. That is not a failure of the process (retrying would stall it); other errors are.
pub(crate) fn ignore_refusal<E: std::error::Error>(
    result: Result<(), cqrs_es::AggregateError<E>>,
) -> Result<(), ProjectionError> {
    match result {
        Ok(()) | Err(cqrs_es::AggregateError::UserError(_)) => Ok(()),
        // A stream that does not load can never be moved: retrying would stall every vehicle.
        Err(cqrs_es::AggregateError::DeserializationError(e)) => {
            tracing::error!(error = %e, "a command's stream does not load; passed over");
            Ok(())
        }
        Err(e) => Err(effect(e)),
    }
}

/// The metadata of events a process records: who acted.
fn acting(actor: &str) -> HashMap<String, String> {
    HashMap::from([("actor".to_owned(), actor.to_owned())])
}
