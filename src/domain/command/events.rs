//! What happened to a remote command. Event types are stable strings.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Who refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectedBy {
    /// tacho's checks (consent, vehicle status).
    Tacho,
    /// The vehicle itself.
    Vehicle,
}

/// Why a command was rejected, as its state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// tacho refused it: no `remote_commands` consent of the requester was in force.
    ConsentMissing,
    /// tacho refused it: the vehicle was not active.
    VehicleNotActive,
    /// The vehicle refused it, with its own code.
    ByVehicle(String),
}

impl Rejection {
    /// Code of tacho's refusal for lack of consent.
    pub const CONSENT_MISSING: &'static str = "consent_missing";
    /// Code of tacho's refusal of an inactive vehicle.
    pub const VEHICLE_NOT_ACTIVE: &'static str = "vehicle_not_active";

    /// The rejection a `CommandRejected` event records.
    pub fn of(by: RejectedBy, code: &str) -> Self {
        match (by, code) {
            (RejectedBy::Tacho, Self::CONSENT_MISSING) => Self::ConsentMissing,
            (RejectedBy::Tacho, Self::VEHICLE_NOT_ACTIVE) => Self::VehicleNotActive,
            (_, code) => Self::ByVehicle(code.to_owned()),
        }
    }

    /// The stable code written in the log and on the wire.
    pub fn code(&self) -> &str {
        match self {
            Self::ConsentMissing => Self::CONSENT_MISSING,
            Self::VehicleNotActive => Self::VEHICLE_NOT_ACTIVE,
            Self::ByVehicle(code) => code,
        }
    }

    /// Who refused.
    pub fn by(&self) -> RejectedBy {
        match self {
            Self::ConsentMissing | Self::VehicleNotActive => RejectedBy::Tacho,
            Self::ByVehicle(_) => RejectedBy::Vehicle,
        }
    }
}

/// Why tacho failed a command it could not deliver: the codes of the `CommandFailed` events tacho
/// records itself (every other failure code is the vehicle's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// The vehicle was offline and store-and-forward was not asked.
    VehicleOffline,
    /// The broker had no subscriber for the vehicle's request topic (MQTT v5 PUBACK 16) and
    /// store-and-forward was not asked.
    VehicleUnreachable,
    /// The broker refused the request (a PUBACK reason code 128 or above, such as not authorized).
    PublishRefused,
}

impl Undelivered {
    /// Every one, for documentation and the check below.
    pub const ALL: [Self; 3] = [Self::VehicleOffline, Self::VehicleUnreachable, Self::PublishRefused];

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::VehicleOffline => "vehicle_offline",
            Self::VehicleUnreachable => "vehicle_unreachable",
            Self::PublishRefused => "publish_refused",
        }
    }

    /// Whether a failure `code` without vehicle time is one of tacho's.
    pub fn is_tachos(code: &str) -> bool {
        Self::ALL.iter().any(|u| u.code() == code)
    }
}

/// Events of the Command aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandEvent {
    /// The request as tacho accepted it, with the consent version that allowed it.
    CommandRequested {
        /// Id.
        command_id: Uuid,
        /// VIN.
        vin: String,
        /// Catalogue name.
        name: String,
        /// Normalized parameters.
        params: Value,
        /// Seconds to wait for a final answer.
        timeout_s: u32,
        /// Queue while offline.
        store_and_forward: bool,
        /// Queue time to live.
        ttl_s: u32,
        /// Who asked.
        requester: String,
        /// Client idempotency key.
        idempotency_key: Option<String>,
        /// Consent version that allowed it (none when rejected for consent).
        consent_version: Option<u32>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Refused, by tacho or by the vehicle.
    CommandRejected {
        /// Who refused.
        by: RejectedBy,
        /// Stable reason code.
        code: String,
        /// Explanation.
        message: Option<String>,
        /// Vehicle time, when the vehicle refused.
        vehicle_ts: Option<DateTime<Utc>>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Waiting for the vehicle to come online.
    CommandQueued {
        /// When.
        at: DateTime<Utc>,
    },
    /// tacho checked the command once more (TTL, vehicle status, consent) and is publishing it: from
    /// here on it may reach the vehicle, so it can no longer be canceled. Its status does not change.
    CommandReleased {
        /// When.
        at: DateTime<Utc>,
    },
    /// The broker acknowledged the request.
    CommandDispatched {
        /// When.
        at: DateTime<Utc>,
    },
    /// The vehicle will execute.
    CommandAccepted {
        /// Vehicle time.
        vehicle_ts: Option<DateTime<Utc>>,
        /// When received.
        at: DateTime<Utc>,
    },
    /// The vehicle is executing.
    CommandInProgress {
        /// Progress message.
        message: Option<String>,
        /// Vehicle time.
        vehicle_ts: Option<DateTime<Utc>>,
        /// When received.
        at: DateTime<Utc>,
    },
    /// Done, with the vehicle's result.
    CommandSucceeded {
        /// Result payload.
        result: Option<Value>,
        /// Vehicle time.
        vehicle_ts: Option<DateTime<Utc>>,
        /// When received.
        at: DateTime<Utc>,
    },
    /// Could not be done (vehicle error, or offline without store-and-forward).
    CommandFailed {
        /// Stable code.
        code: String,
        /// Explanation.
        message: Option<String>,
        /// Vehicle time.
        vehicle_ts: Option<DateTime<Utc>>,
        /// When.
        at: DateTime<Utc>,
    },
    /// No final answer before the deadline.
    CommandTimedOut {
        /// When.
        at: DateTime<Utc>,
    },
    /// Queued past its TTL.
    CommandExpired {
        /// When.
        at: DateTime<Utc>,
    },
    /// The vehicle dropped while it was in flight.
    CommandInterrupted {
        /// When.
        at: DateTime<Utc>,
    },
    /// The requester canceled it.
    CommandCanceled {
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A final answer that came after the command ended: kept for the record, not applied.
    LateAnswerRecorded {
        /// What the vehicle said.
        status: super::AnswerStatus,
        /// Its code.
        code: Option<String>,
        /// Its message.
        message: Option<String>,
        /// Its result.
        result: Option<Value>,
        /// Vehicle time.
        vehicle_ts: Option<DateTime<Utc>>,
        /// When received.
        at: DateTime<Utc>,
    },
}

impl CommandEvent {
    /// When tacho recorded the fact.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::CommandRequested { at, .. }
            | Self::CommandRejected { at, .. }
            | Self::CommandQueued { at }
            | Self::CommandReleased { at }
            | Self::CommandDispatched { at }
            | Self::CommandAccepted { at, .. }
            | Self::CommandInProgress { at, .. }
            | Self::CommandSucceeded { at, .. }
            | Self::CommandFailed { at, .. }
            | Self::CommandTimedOut { at }
            | Self::CommandExpired { at }
            | Self::CommandInterrupted { at }
            | Self::CommandCanceled { at, .. }
            | Self::LateAnswerRecorded { at, .. } => *at,
        }
    }

    /// The status this event moves the command to (none for a late answer).
    pub fn status(&self) -> Option<super::CommandStatus> {
        use super::CommandStatus as S;
        Some(match self {
            Self::CommandRequested { .. } => S::Requested,
            Self::CommandRejected { .. } => S::Rejected,
            Self::CommandQueued { .. } => S::Queued,
            Self::CommandDispatched { .. } => S::Dispatched,
            Self::CommandAccepted { .. } => S::Accepted,
            Self::CommandInProgress { .. } => S::InProgress,
            Self::CommandSucceeded { .. } => S::Succeeded,
            Self::CommandFailed { .. } => S::Failed,
            Self::CommandTimedOut { .. } => S::TimedOut,
            Self::CommandExpired { .. } => S::Expired,
            Self::CommandInterrupted { .. } => S::Interrupted,
            Self::CommandCanceled { .. } => S::Canceled,
            Self::LateAnswerRecorded { .. } | Self::CommandReleased { .. } => return None,
        })
    }
}

impl DomainEvent for CommandEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CommandRequested { .. } => "CommandRequested",
            Self::CommandRejected { .. } => "CommandRejected",
            Self::CommandQueued { .. } => "CommandQueued",
            Self::CommandReleased { .. } => "CommandReleased",
            Self::CommandDispatched { .. } => "CommandDispatched",
            Self::CommandAccepted { .. } => "CommandAccepted",
            Self::CommandInProgress { .. } => "CommandInProgress",
            Self::CommandSucceeded { .. } => "CommandSucceeded",
            Self::CommandFailed { .. } => "CommandFailed",
            Self::CommandTimedOut { .. } => "CommandTimedOut",
            Self::CommandExpired { .. } => "CommandExpired",
            Self::CommandInterrupted { .. } => "CommandInterrupted",
            Self::CommandCanceled { .. } => "CommandCanceled",
            Self::LateAnswerRecorded { .. } => "LateAnswerRecorded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
