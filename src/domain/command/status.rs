//! The states of a remote command.

use serde::{Deserialize, Serialize};

/// Where a command is in its lifecycle (DESIGN.md's table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// No events yet.
    #[default]
    Unknown,
    /// Accepted by tacho, not yet published.
    Requested,
    /// Refused by tacho (consent, vehicle state) or by the vehicle.
    Rejected,
    /// Waiting for an offline vehicle (store-and-forward).
    Queued,
    /// Published; the broker acknowledged it.
    Dispatched,
    /// The vehicle will execute it.
    Accepted,
    /// The vehicle reports progress.
    InProgress,
    /// Done.
    Succeeded,
    /// The vehicle could not do it.
    Failed,
    /// No final answer before the deadline.
    TimedOut,
    /// Still queued when its TTL ran out.
    Expired,
    /// The vehicle dropped while the command was in flight.
    Interrupted,
    /// Canceled by its requester before the vehicle accepted.
    Canceled,
}

impl CommandStatus {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Requested => "requested",
            Self::Rejected => "rejected",
            Self::Queued => "queued",
            Self::Dispatched => "dispatched",
            Self::Accepted => "accepted",
            Self::InProgress => "in_progress",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Expired => "expired",
            Self::Interrupted => "interrupted",
            Self::Canceled => "canceled",
        }
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Rejected
                | Self::Succeeded
                | Self::Failed
                | Self::TimedOut
                | Self::Expired
                | Self::Interrupted
                | Self::Canceled
        )
    }

    /// Published and not finished: what a Last Will interrupts.
    pub fn is_in_flight(self) -> bool {
        matches!(self, Self::Dispatched | Self::Accepted | Self::InProgress)
    }

    /// Parses a stable name.
    pub fn parse(raw: &str) -> Option<Self> {
        ALL.iter().copied().find(|s| s.as_str() == raw)
    }
}

/// Every reachable status, in lifecycle order.
pub const ALL: [CommandStatus; 12] = [
    CommandStatus::Requested,
    CommandStatus::Rejected,
    CommandStatus::Queued,
    CommandStatus::Dispatched,
    CommandStatus::Accepted,
    CommandStatus::InProgress,
    CommandStatus::Succeeded,
    CommandStatus::Failed,
    CommandStatus::TimedOut,
    CommandStatus::Expired,
    CommandStatus::Interrupted,
    CommandStatus::Canceled,
];
