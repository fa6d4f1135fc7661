//! Decide and apply of the Command aggregate, and the port it checks preconditions through.

use super::catalogue::{self, CatalogueError};
use super::{
    AnswerStatus, CommandCommand, CommandEvent, CommandStatus, RejectedBy, Rejection, RequestCommand, Undelivered,
    VehicleAnswer,
};
use crate::domain::vehicle::VehicleStatus;
use crate::domain::{DomainError, Refusal};
use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The precondition lookup failed (store unreachable): the request is neither accepted nor rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("precondition lookup failed: {0}")]
pub struct PreconditionError(pub String);

/// Port through which a command request checks the vehicle and the consent, strongly consistent.
/// Implementations MUST return `Ok(None)` for an unknown vehicle or a missing/expired consent and
/// `Err` only when they could not find out.
#[async_trait::async_trait]
pub trait CommandPreconditions: Send + Sync {
    /// The vehicle's lifecycle status, `None` when the VIN is not registered.
    async fn vehicle_status(&self, vin: &str) -> Result<Option<VehicleStatus>, PreconditionError>;
    /// The consent version that allows `subject` to use `purpose` on `vin` at `at`.
    async fn consent_version(
        &self,
        vin: &str,
        subject: &str,
        purpose: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<u32>, PreconditionError>;
}

/// The services the Command aggregate is given.
pub type CommandServices = Arc<dyn CommandPreconditions>;

/// Refusals of the Command aggregate (nothing is recorded for these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The name is not in the catalogue.
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// Parameters, timeout or TTL out of range.
    #[error("{0}")]
    InvalidParameters(String),
    /// The VIN is not registered.
    #[error("vehicle is not registered")]
    VehicleNotFound,
    /// A second request on an existing command id.
    #[error("command already exists")]
    AlreadyRequested,
    /// Anything but a request on an unknown command id.
    #[error("command not found")]
    NotFound,
    /// Cancel once the request may have reached the vehicle (released, dispatched or later), or
    /// after the end.
    #[error("a {0} command can no longer be canceled")]
    NotCancelable(&'static str),
    /// A lifecycle move the state machine does not allow.
    #[error("a {from} command cannot be {action}")]
    InvalidTransition {
        /// Current status.
        from: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// A time-out before the deadline.
    #[error("the deadline has not passed yet")]
    DeadlineNotReached,
    /// An answer on another vehicle's topic.
    #[error("answer came from vehicle {topic_vin}, the command is for {vin}")]
    WrongVehicle {
        /// VIN of the command.
        vin: String,
        /// VIN of the answering topic.
        topic_vin: String,
    },
    /// The precondition port failed.
    #[error(transparent)]
    Unavailable(#[from] PreconditionError),
}

impl DomainError for CommandError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::UnknownCommand(_) => Refusal::UnknownCommand,
            Self::InvalidParameters(_) => Refusal::InvalidParameters,
            Self::VehicleNotFound => Refusal::VehicleNotFound,
            Self::AlreadyRequested => Refusal::CommandExists,
            Self::NotFound => Refusal::CommandNotFound,
            Self::NotCancelable(_) => Refusal::CommandNotCancelable,
            Self::InvalidTransition { .. } => Refusal::InvalidTransition,
            Self::DeadlineNotReached => Refusal::DeadlineNotReached,
            Self::WrongVehicle { .. } => Refusal::WrongVehicle,
            Self::Unavailable(_) => Refusal::Unavailable,
        }
    }
}

impl From<CatalogueError> for CommandError {
    fn from(e: CatalogueError) -> Self {
        match e {
            CatalogueError::UnknownCommand(name) => Self::UnknownCommand(name),
            CatalogueError::InvalidParameters(m) => Self::InvalidParameters(m),
        }
    }
}

/// How a command being published is named when it can no longer be canceled.
pub const RELEASED: &str = "released (on its way to the vehicle)";

/// The Command aggregate state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// VIN.
    pub vin: String,
    /// Catalogue name.
    pub name: String,
    /// Current status.
    pub status: CommandStatus,
    /// Who asked.
    pub requester: String,
    /// Timeout seconds.
    pub timeout_s: u32,
    /// TTL seconds.
    pub ttl_s: u32,
    /// Store-and-forward asked.
    pub store_and_forward: bool,
    /// When requested.
    pub requested_at: Option<DateTime<Utc>>,
    /// When released for publishing (cleared when it is queued again).
    pub released_at: Option<DateTime<Utc>>,
    /// When dispatched.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// Final statuses already recorded as late answers.
    pub late_answers: Vec<AnswerStatus>,
    /// Normalized parameters.
    pub params: serde_json::Value,
    /// Consent version that allowed it.
    pub consent_version: Option<u32>,
    /// Why it was rejected (by tacho or the vehicle).
    pub rejection: Option<Rejection>,
}

impl Command {
    /// When a command that has not ended times out.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        let start = self.dispatched_at.or(self.requested_at)?;
        Some(start + Duration::seconds(i64::from(self.timeout_s)))
    }

    /// When a queued command expires.
    pub fn expiry(&self) -> Option<DateTime<Utc>> {
        Some(self.requested_at? + Duration::seconds(i64::from(self.ttl_s)))
    }

    fn invalid(&self, action: &'static str) -> CommandError {
        CommandError::InvalidTransition { from: self.status.as_str(), action }
    }

    async fn decide(
        &self,
        command: CommandCommand,
        services: &CommandServices,
    ) -> Result<Vec<CommandEvent>, CommandError> {
        use CommandStatus as S;
        if self.status == S::Unknown && !matches!(command, CommandCommand::Request(_)) {
            return Err(CommandError::NotFound);
        }
        Ok(match command {
            CommandCommand::Request(request) => self.decide_request(request, services).await?,
            CommandCommand::Queue { at } => match self.status {
                S::Requested if self.store_and_forward => vec![CommandEvent::CommandQueued { at }],
                S::Queued => vec![],
                _ => return Err(self.invalid("queued")),
            },
            CommandCommand::Release { at } => self.decide_release(at, services).await?,
            CommandCommand::FailUndelivered { undelivered, reason, at } => match self.status {
                S::Queued if undelivered == Undelivered::VehicleUnreachable => vec![],
                S::Requested if undelivered == Undelivered::VehicleUnreachable && self.store_and_forward => {
                    vec![CommandEvent::CommandQueued { at }]
                }
                S::Requested | S::Queued => vec![CommandEvent::CommandFailed {
                    code: undelivered.code().into(),
                    message: Some(reason),
                    vehicle_ts: None,
                    at,
                }],
                _ => vec![],
            },
            CommandCommand::MarkDispatched { at } => match self.status {
                S::Requested | S::Queued => vec![CommandEvent::CommandDispatched { at }],
                // A re-publish after a crash, or a publish that raced a cancel: nothing to record.
                _ => vec![],
            },
            CommandCommand::FailOffline { at } => match self.status {
                S::Requested => vec![CommandEvent::CommandFailed {
                    code: Undelivered::VehicleOffline.code().into(),
                    message: Some("the vehicle is offline and store-and-forward was not asked".into()),
                    vehicle_ts: None,
                    at,
                }],
                _ => return Err(self.invalid("failed as offline")),
            },
            CommandCommand::RecordAnswer(answer) => self.decide_answer(answer)?,
            CommandCommand::TimeOut { at } => match self.status {
                S::Requested | S::Dispatched | S::Accepted | S::InProgress => {
                    if self.deadline().is_some_and(|deadline| at < deadline) {
                        return Err(CommandError::DeadlineNotReached);
                    }
                    vec![CommandEvent::CommandTimedOut { at }]
                }
                _ => vec![],
            },
            CommandCommand::Expire { at } => match self.status {
                S::Queued => {
                    if self.expiry().is_some_and(|expiry| at < expiry) {
                        return Err(CommandError::DeadlineNotReached);
                    }
                    vec![CommandEvent::CommandExpired { at }]
                }
                _ => vec![],
            },
            // A Last Will ends the session the command was dispatched in, not a later one (it may be
            // handled late, after a restart).
            CommandCommand::Interrupt { at } => match self.status {
                s if s.is_in_flight() && self.dispatched_at.is_none_or(|d| d <= at) => {
                    vec![CommandEvent::CommandInterrupted { at }]
                }
                _ => vec![],
            },
            CommandCommand::Cancel { by, at } => match self.status {
                S::Requested | S::Queued if self.released_at.is_none() => {
                    vec![CommandEvent::CommandCanceled { by, at }]
                }
                S::Canceled => vec![],
                S::Requested | S::Queued => return Err(CommandError::NotCancelable(RELEASED)),
                other => return Err(CommandError::NotCancelable(other.as_str())),
            },
        })
    }

    async fn decide_request(
        &self,
        r: RequestCommand,
        services: &CommandServices,
    ) -> Result<Vec<CommandEvent>, CommandError> {
        if self.status != CommandStatus::Unknown {
            return Err(CommandError::AlreadyRequested);
        }
        let params = catalogue::validate(&r.name, &r.params)?;
        if !(1..=catalogue::MAX_TIMEOUT_S).contains(&r.timeout_s) {
            return Err(CommandError::InvalidParameters(format!(
                "timeout_s must be from 1 to {}",
                catalogue::MAX_TIMEOUT_S
            )));
        }
        if !(1..=catalogue::MAX_TTL_S).contains(&r.ttl_s) {
            return Err(CommandError::InvalidParameters(format!("ttl_s must be from 1 to {}", catalogue::MAX_TTL_S)));
        }
        let vehicle = services.vehicle_status(&r.vin).await?.ok_or(CommandError::VehicleNotFound)?;
        let consent_version = services
            .consent_version(&r.vin, &r.requester, crate::domain::consent::Purpose::REMOTE_COMMANDS, r.at)
            .await?;
        let mut events = vec![CommandEvent::CommandRequested {
            command_id: r.command_id,
            vin: r.vin,
            name: r.name,
            params,
            timeout_s: r.timeout_s,
            store_and_forward: r.store_and_forward,
            ttl_s: r.ttl_s,
            requester: r.requester,
            idempotency_key: r.idempotency_key,
            consent_version,
            at: r.at,
        }];
        let refusal = if consent_version.is_none() {
            Some((Rejection::CONSENT_MISSING, "no remote_commands consent of the requester is in force".to_owned()))
        } else if vehicle != VehicleStatus::Active {
            Some((Rejection::VEHICLE_NOT_ACTIVE, format!("the vehicle is {}", vehicle.as_str())))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            events.push(CommandEvent::CommandRejected {
                by: RejectedBy::Tacho,
                code: code.into(),
                message: Some(message),
                vehicle_ts: None,
                at: r.at,
            });
        }
        Ok(events)
    }

    /// The last check before publishing: what has changed since the request may forbid it now.
    async fn decide_release(
        &self,
        at: DateTime<Utc>,
        services: &CommandServices,
    ) -> Result<Vec<CommandEvent>, CommandError> {
        use CommandStatus as S;
        match self.status {
            S::Requested | S::Queued if self.released_at.is_some() => return Ok(vec![]),
            S::Requested | S::Queued => {}
            _ => return Err(self.invalid("released")),
        }
        if self.status == S::Queued && self.expiry().is_some_and(|expiry| expiry <= at) {
            return Ok(vec![CommandEvent::CommandExpired { at }]);
        }
        if self.status == S::Requested && self.deadline().is_some_and(|deadline| deadline <= at) {
            return Ok(vec![CommandEvent::CommandTimedOut { at }]);
        }
        let vehicle = services.vehicle_status(&self.vin).await?;
        let consent = services
            .consent_version(&self.vin, &self.requester, crate::domain::consent::Purpose::REMOTE_COMMANDS, at)
            .await?;
        let refusal = match (vehicle, consent) {
            (_, None) => {
                Some((Rejection::CONSENT_MISSING, "the requester's remote_commands consent is no longer in force"))
            }
            (Some(VehicleStatus::Active), Some(_)) => None,
            _ => Some((Rejection::VEHICLE_NOT_ACTIVE, "the vehicle is no longer active")),
        };
        Ok(match refusal {
            Some((code, message)) => vec![CommandEvent::CommandRejected {
                by: RejectedBy::Tacho,
                code: code.into(),
                message: Some(message.into()),
                vehicle_ts: None,
                at,
            }],
            None => vec![CommandEvent::CommandReleased { at }],
        })
    }

    /// Whether the dispatcher may publish it now: released and not yet dispatched.
    pub fn is_released(&self) -> bool {
        self.released_at.is_some() && matches!(self.status, CommandStatus::Requested | CommandStatus::Queued)
    }

    fn decide_answer(&self, a: VehicleAnswer) -> Result<Vec<CommandEvent>, CommandError> {
        use CommandStatus as S;
        if a.topic_vin != self.vin {
            return Err(CommandError::WrongVehicle { vin: self.vin.clone(), topic_vin: a.topic_vin });
        }
        if self.status.is_terminal() {
            let duplicate_final = matches!(
                (self.status, a.status),
                (S::Succeeded, AnswerStatus::Succeeded)
                    | (S::Failed, AnswerStatus::Failed)
                    | (S::Rejected, AnswerStatus::Rejected)
            );
            let late = matches!(self.status, S::TimedOut | S::Interrupted | S::Canceled | S::Expired);
            if late && a.status.is_final() && !duplicate_final && !self.late_answers.contains(&a.status) {
                return Ok(vec![CommandEvent::LateAnswerRecorded {
                    status: a.status,
                    code: a.code,
                    message: a.message,
                    result: a.result,
                    vehicle_ts: a.vehicle_ts,
                    at: a.at,
                }]);
            }
            return Ok(vec![]);
        }
        // Progress rank: an answer that does not move the command forward is a duplicate or stale.
        let rank = |s: S| match s {
            S::Accepted => 2,
            S::InProgress => 3,
            _ => 1,
        };
        let (ts, at) = (a.vehicle_ts, a.at);
        let answered = match a.status {
            AnswerStatus::Accepted if rank(self.status) < 2 => {
                vec![CommandEvent::CommandAccepted { vehicle_ts: ts, at }]
            }
            AnswerStatus::InProgress if rank(self.status) < 3 => {
                vec![CommandEvent::CommandInProgress { message: a.message, vehicle_ts: ts, at }]
            }
            AnswerStatus::Accepted | AnswerStatus::InProgress => vec![],
            AnswerStatus::Succeeded => vec![CommandEvent::CommandSucceeded { result: a.result, vehicle_ts: ts, at }],
            AnswerStatus::Failed => vec![CommandEvent::CommandFailed {
                code: a.code.unwrap_or_else(|| "vehicle_error".into()),
                message: a.message,
                vehicle_ts: ts,
                at,
            }],
            AnswerStatus::Rejected => vec![CommandEvent::CommandRejected {
                by: RejectedBy::Vehicle,
                code: a.code.unwrap_or_else(|| "rejected_by_vehicle".into()),
                message: a.message,
                vehicle_ts: ts,
                at,
            }],
        };
        // The vehicle answered before the broker's PUBACK was recorded: it got the request, so the
        // command was dispatched; say so first, with the answer's time.
        if matches!(self.status, S::Requested | S::Queued) && !answered.is_empty() {
            return Ok([vec![CommandEvent::CommandDispatched { at }], answered].concat());
        }
        Ok(answered)
    }
}

impl Aggregate for Command {
    const TYPE: &'static str = crate::domain::streams::COMMAND;
    type Command = CommandCommand;
    type Event = CommandEvent;
    type Error = CommandError;
    type Services = CommandServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, services).await? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        if let Some(status) = event.status() {
            self.status = status;
        }
        match event {
            CommandEvent::CommandRequested {
                vin,
                name,
                params,
                timeout_s,
                store_and_forward,
                ttl_s,
                requester,
                consent_version,
                at,
                ..
            } => {
                self.params = params;
                self.consent_version = consent_version;
                self.vin = vin;
                self.name = name;
                self.timeout_s = timeout_s;
                self.store_and_forward = store_and_forward;
                self.ttl_s = ttl_s;
                self.requester = requester;
                self.requested_at = Some(at);
            }
            CommandEvent::CommandReleased { at } => self.released_at = Some(at),
            // Queued again (no subscriber): nothing reached the vehicle, so it is cancelable again.
            CommandEvent::CommandQueued { .. } => self.released_at = None,
            CommandEvent::CommandDispatched { at } => self.dispatched_at = Some(at),
            CommandEvent::CommandRejected { by, code, .. } => self.rejection = Some(Rejection::of(by, &code)),
            CommandEvent::LateAnswerRecorded { status, .. } => self.late_answers.push(status),
            _ => {}
        }
    }
}
