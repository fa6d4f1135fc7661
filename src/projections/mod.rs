//! Read models and the machinery that keeps them: durable, checkpointed subscribers of the log.
//!
//! A subscriber applies each event exactly once: its read-model writes and its checkpoint are one
//! transaction. It reads the log in commit order (see [`crate::adapters::log`]).

pub mod commands;
pub mod consents;
pub mod devices;
pub mod rebuild;
mod runner;
pub mod seal;
pub mod state;
pub mod vehicles;
pub mod views;

pub use rebuild::Rebuilt;
pub use runner::{Checkpoint, Process, Projection, ProjectionError, Subscriptions, EVENTS_CHANNEL};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One row of the log as subscribers see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    /// Global position (PostgreSQL: bigserial, unique, gaps possible, not commit order on its own;
    /// SQLite: commit order).
    #[sqlx(rename = "global_position")]
    pub position: i64,
    /// Id of the transaction that wrote it: with `position`, the commit order.
    pub tx_id: i64,
    /// Aggregate type (stable name).
    pub aggregate_type: String,
    /// Stream id.
    pub aggregate_id: String,
    /// Sequence in the stream, from 1.
    pub sequence: i64,
    /// Event type (stable name).
    pub event_type: String,
    /// Payload schema version.
    pub event_version: String,
    /// Payload as serialized by cqrs-es (`{"EventType": {...}}`).
    pub payload: Value,
    /// Metadata: actor, request id ...
    pub metadata: Value,
    /// When the database recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// Where this event sits in commit order.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { tx_id: self.tx_id, position: self.position }
    }

    /// Deserializes the payload, upcast to the current version, into an aggregate's event enum.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, ProjectionError> {
        let upcast = crate::domain::upcast(&self.event_type, &self.event_version, &self.payload, &self.metadata);
        E::deserialize(upcast.as_ref().unwrap_or(&self.payload)).map_err(|e| {
            ProjectionError::Decode(format!(
                "{} {}#{} ({}): {e}",
                self.aggregate_type, self.aggregate_id, self.sequence, self.event_type
            ))
        })
    }
}
