//! What can be asked of a remote command: by its requester, the dispatcher, the vehicle and the clock.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A new remote command as the requester asked it (validated by the aggregate).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestCommand {
    /// The command's id (stream id).
    pub command_id: Uuid,
    /// Target vehicle.
    pub vin: String,
    /// Catalogue name.
    pub name: String,
    /// Parameters (JSON object or null).
    pub params: Value,
    /// Seconds to wait for a final answer once dispatched.
    pub timeout_s: u32,
    /// Queue while the vehicle is offline instead of failing fast.
    pub store_and_forward: bool,
    /// How long a queued command may wait.
    pub ttl_s: u32,
    /// Subject of the token that asked.
    pub requester: String,
    /// The client's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// When tacho accepted the request.
    pub at: DateTime<Utc>,
}

/// A status the vehicle can report on the response topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerStatus {
    /// It will execute.
    Accepted,
    /// It is executing.
    InProgress,
    /// Done.
    Succeeded,
    /// Could not do it.
    Failed,
    /// Will not do it.
    Rejected,
}

impl AnswerStatus {
    /// A final answer ends the command.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Rejected)
    }
}

/// A vehicle's answer as received on `vehicles/{vin}/commands/{name}/response`.
#[derive(Debug, Clone, PartialEq)]
pub struct VehicleAnswer {
    /// VIN from the topic the answer came on.
    pub topic_vin: String,
    /// Reported status.
    pub status: AnswerStatus,
    /// Error or rejection code.
    pub code: Option<String>,
    /// Human-readable message.
    pub message: Option<String>,
    /// Result payload of a success.
    pub result: Option<Value>,
    /// Vehicle time.
    pub vehicle_ts: Option<DateTime<Utc>>,
    /// When tacho received it.
    pub at: DateTime<Utc>,
}

/// Commands of the Command aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandCommand {
    /// A requester asks for a remote command.
    Request(RequestCommand),
    /// The vehicle is offline and store-and-forward was asked.
    Queue {
        /// When.
        at: DateTime<Utc>,
    },
    /// tacho is about to publish it: the TTL, the vehicle's status and the requester's consent are
    /// checked again (it may have waited for days); a command that passes is released (no longer
    /// cancelable), one that does not is expired, timed out or rejected instead.
    Release {
        /// When.
        at: DateTime<Utc>,
    },
    /// The broker could not take the request: failed with `reason`, or queued again when
    /// store-and-forward was asked and the broker had no subscriber for it.
    FailUndelivered {
        /// Why.
        undelivered: super::Undelivered,
        /// What the broker said.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The broker acknowledged the publish (PUBACK).
    MarkDispatched {
        /// When.
        at: DateTime<Utc>,
    },
    /// The vehicle is offline and store-and-forward was not asked.
    FailOffline {
        /// When.
        at: DateTime<Utc>,
    },
    /// The vehicle answered.
    RecordAnswer(VehicleAnswer),
    /// The deadline passed.
    TimeOut {
        /// When.
        at: DateTime<Utc>,
    },
    /// The TTL of a queued command ran out.
    Expire {
        /// When.
        at: DateTime<Utc>,
    },
    /// The vehicle's Last Will arrived: interrupts the command if it was dispatched before `at`.
    Interrupt {
        /// When the Last Will was received.
        at: DateTime<Utc>,
    },
    /// The requester gives up (or tacho, for a revoked consent).
    Cancel {
        /// Who canceled.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}
