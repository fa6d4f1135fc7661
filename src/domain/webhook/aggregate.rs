//! Commands, events and decide/apply of the Webhook aggregate.

use crate::domain::consent::Purpose;
use crate::domain::{DomainError, Refusal, Vin};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use uuid::Uuid;

/// Longest endpoint URL taken.
pub const MAX_ENDPOINT_BYTES: usize = 2048;
/// Most VINs a subscription may name.
pub const MAX_VINS: usize = 1000;

/// What a subscription can ask for: a closed set of stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Topic {
    /// Transitions of the commands the subscription's principal requested (no consent needed).
    #[serde(rename = "command")]
    Command,
    /// Events vehicles report (breakdown, maintenance alert, ...).
    #[serde(rename = "vehicle.event")]
    VehicleEvent,
    /// State reports.
    #[serde(rename = "vehicle.state")]
    VehicleState,
    /// A vehicle went online or offline.
    #[serde(rename = "vehicle.connection")]
    VehicleConnection,
    /// Registry changes: registered, activated, suspended, decommissioned, devices fitted or removed.
    #[serde(rename = "vehicle.registry")]
    VehicleRegistry,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 5] =
        [Self::Command, Self::VehicleEvent, Self::VehicleState, Self::VehicleConnection, Self::VehicleRegistry];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::VehicleEvent => "vehicle.event",
            Self::VehicleState => "vehicle.state",
            Self::VehicleConnection => "vehicle.connection",
            Self::VehicleRegistry => "vehicle.registry",
        }
    }

    /// Parses a stable name.
    pub fn parse(raw: &str) -> Result<Self, WebhookError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| WebhookError::Invalid(format!("unknown event type '{raw}'")))
    }

    /// Whether it carries a vehicle's data, so needs the owner's consent.
    pub fn needs_consent(self) -> bool {
        self != Self::Command
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A receiver's URL: `https`, or `http` to a loopback address (development). No user name or
/// password, no fragment. Where its name resolves to is checked when tacho connects, not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint(String);

impl Endpoint {
    /// Validates an endpoint URL.
    pub fn parse(raw: &str) -> Result<Self, WebhookError> {
        let invalid = |why: &str| WebhookError::InvalidEndpoint(why.to_owned());
        if raw.len() > MAX_ENDPOINT_BYTES {
            return Err(invalid("longer than 2048 bytes"));
        }
        let url = url::Url::parse(raw).map_err(|e| invalid(&format!("not a URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not carry a user name or password"));
        }
        if url.fragment().is_some() {
            return Err(invalid("must not carry a fragment"));
        }
        let host = url.host().ok_or_else(|| invalid("has no host"))?;
        let loopback = match host {
            url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
            url::Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
            url::Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(invalid("must be https (plain http only to a loopback address)")),
            other => return Err(invalid(&format!("scheme '{other}' is not https"))),
        }
        Ok(Self(url.to_string()))
    }

    /// The URL as normalized.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Endpoint {
    type Error = WebhookError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> Self {
        e.0
    }
}

/// Why deliveries stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Pause {
    /// Its principal (or an admin) paused it.
    Requested {
        /// Who.
        by: String,
    },
    /// The endpoint failed every attempt for too long.
    Failing {
        /// Failed attempts in a row.
        failures: u32,
        /// What the last one met.
        last_error: String,
    },
}

/// Where a subscription stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Not created.
    #[default]
    Unknown,
    /// Delivering.
    Active,
    /// Not delivering; resumes from where it stopped.
    Paused(Pause),
    /// Gone for good.
    Deleted,
}

/// Commands of the Webhook aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookCommand {
    /// A principal subscribes.
    Create {
        /// Id (stream id).
        id: Uuid,
        /// Who subscribes: the consent's subject it is delivered under.
        principal: String,
        /// Where to.
        endpoint: Endpoint,
        /// What.
        topics: BTreeSet<Topic>,
        /// Only these vehicles (none: every vehicle whose owner consented).
        vins: BTreeSet<Vin>,
        /// The consent purpose vehicle data is delivered under.
        purpose: Option<Purpose>,
        /// Fingerprint of the signing secret (the secret is never in the log).
        secret: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deliveries stop.
    Pause {
        /// Why.
        pause: Pause,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deliveries go on from where they stopped.
    Resume {
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A new signing secret; the previous one still signs until `previous_until`.
    RotateSecret {
        /// Fingerprint of the new secret.
        secret: String,
        /// End of the previous secret's grace period.
        previous_until: DateTime<Utc>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deliver again from a log position (the deliverer moves back; the event records who asked).
    Replay {
        /// The log position.
        from_position: i64,
        /// The time asked for, when the position was found from one.
        from_time: Option<DateTime<Utc>>,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The subscription ends.
    Delete {
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of the Webhook aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookEvent {
    /// Subscribed.
    WebhookCreated {
        /// Id.
        id: Uuid,
        /// Principal.
        principal: String,
        /// Endpoint.
        endpoint: Endpoint,
        /// Topics.
        topics: BTreeSet<Topic>,
        /// VIN filter.
        vins: BTreeSet<Vin>,
        /// Purpose.
        purpose: Option<Purpose>,
        /// Secret fingerprint.
        secret: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deliveries stopped.
    WebhookPaused {
        /// Why.
        pause: Pause,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deliveries resumed.
    WebhookResumed {
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Secret rotated.
    WebhookSecretRotated {
        /// New secret's fingerprint.
        secret: String,
        /// End of the previous one's grace period.
        previous_until: DateTime<Utc>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Asked to deliver again from a log position.
    WebhookReplayRequested {
        /// The log position.
        from_position: i64,
        /// The time asked for, when the position was found from one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_time: Option<DateTime<Utc>>,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deleted.
    WebhookDeleted {
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for WebhookEvent {
    fn event_type(&self) -> String {
        match self {
            Self::WebhookCreated { .. } => "WebhookCreated",
            Self::WebhookPaused { .. } => "WebhookPaused",
            Self::WebhookResumed { .. } => "WebhookResumed",
            Self::WebhookSecretRotated { .. } => "WebhookSecretRotated",
            Self::WebhookReplayRequested { .. } => "WebhookReplayRequested",
            Self::WebhookDeleted { .. } => "WebhookDeleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Refusals of the Webhook aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A second create on one id.
    #[error("the subscription exists")]
    Exists,
    /// No such subscription (or deleted).
    #[error("no such subscription")]
    NotFound,
    /// The endpoint is not one tacho delivers to.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),
    /// A field out of its range.
    #[error("{0}")]
    Invalid(String),
}

impl DomainError for WebhookError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::Exists => Refusal::WebhookExists,
            Self::NotFound => Refusal::WebhookNotFound,
            Self::InvalidEndpoint(_) | Self::Invalid(_) => Refusal::ValidationFailed,
        }
    }
}

/// The Webhook aggregate state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    /// Id.
    pub id: Option<Uuid>,
    /// Principal.
    pub principal: String,
    /// Endpoint.
    pub endpoint: Option<Endpoint>,
    /// Topics.
    pub topics: BTreeSet<Topic>,
    /// VIN filter (empty: all).
    pub vins: BTreeSet<Vin>,
    /// Purpose vehicle data is delivered under.
    pub purpose: Option<Purpose>,
    /// Status.
    pub status: WebhookStatus,
    /// Fingerprint of the current secret.
    pub secret: String,
    /// Fingerprint of the previous secret and the end of its grace period.
    pub previous_secret: Option<(String, DateTime<Utc>)>,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Webhook {
    fn live(&self) -> Result<(), WebhookError> {
        match self.status {
            WebhookStatus::Unknown | WebhookStatus::Deleted => Err(WebhookError::NotFound),
            _ => Ok(()),
        }
    }

    fn decide(&self, command: WebhookCommand) -> Result<Vec<WebhookEvent>, WebhookError> {
        Ok(match command {
            WebhookCommand::Create { id, principal, endpoint, topics, vins, purpose, secret, at } => {
                if self.status != WebhookStatus::Unknown {
                    return Err(WebhookError::Exists);
                }
                if principal.trim().is_empty() || principal.len() > 200 {
                    return Err(WebhookError::Invalid("principal must be 1 to 200 characters".into()));
                }
                if topics.is_empty() {
                    return Err(WebhookError::Invalid("event_types must name at least one type".into()));
                }
                if vins.len() > MAX_VINS {
                    return Err(WebhookError::Invalid(format!("vins may name at most {MAX_VINS} vehicles")));
                }
                let needs = topics.iter().any(|t| t.needs_consent());
                match &purpose {
                    None if needs => {
                        return Err(WebhookError::Invalid(
                            "vehicle data needs a purpose the owners grant the subscriber".into(),
                        ))
                    }
                    Some(p) if p.as_str() == Purpose::REMOTE_COMMANDS => {
                        return Err(WebhookError::Invalid("remote_commands is not a purpose for vehicle data".into()))
                    }
                    _ => {}
                }
                if secret.is_empty() {
                    return Err(WebhookError::Invalid("a signing secret is needed".into()));
                }
                vec![WebhookEvent::WebhookCreated { id, principal, endpoint, topics, vins, purpose, secret, at }]
            }
            WebhookCommand::Pause { pause, at } => {
                self.live()?;
                match self.status {
                    WebhookStatus::Paused(_) => vec![],
                    _ => vec![WebhookEvent::WebhookPaused { pause, at }],
                }
            }
            WebhookCommand::Resume { by, at } => {
                self.live()?;
                match self.status {
                    WebhookStatus::Paused(_) => vec![WebhookEvent::WebhookResumed { by, at }],
                    _ => vec![],
                }
            }
            WebhookCommand::RotateSecret { secret, previous_until, at } => {
                self.live()?;
                if secret.is_empty() || secret == self.secret {
                    return Err(WebhookError::Invalid("the new secret must differ from the current one".into()));
                }
                if previous_until < at {
                    return Err(WebhookError::Invalid("the grace period cannot end before the rotation".into()));
                }
                vec![WebhookEvent::WebhookSecretRotated { secret, previous_until, at }]
            }
            WebhookCommand::Replay { from_position, from_time, by, at } => {
                self.live()?;
                if from_position < 0 {
                    return Err(WebhookError::Invalid("from_position must be 0 or more".into()));
                }
                vec![WebhookEvent::WebhookReplayRequested { from_position, from_time, by, at }]
            }
            WebhookCommand::Delete { by, at } => match self.status {
                WebhookStatus::Unknown => return Err(WebhookError::NotFound),
                WebhookStatus::Deleted => vec![],
                _ => vec![WebhookEvent::WebhookDeleted { by, at }],
            },
        })
    }
}

impl Aggregate for Webhook {
    const TYPE: &'static str = crate::domain::streams::WEBHOOK;
    type Command = WebhookCommand;
    type Event = WebhookEvent;
    type Error = WebhookError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let at = match &event {
            WebhookEvent::WebhookCreated { at, .. }
            | WebhookEvent::WebhookPaused { at, .. }
            | WebhookEvent::WebhookResumed { at, .. }
            | WebhookEvent::WebhookSecretRotated { at, .. }
            | WebhookEvent::WebhookReplayRequested { at, .. }
            | WebhookEvent::WebhookDeleted { at, .. } => *at,
        };
        self.updated_at = Some(at);
        match event {
            WebhookEvent::WebhookCreated { id, principal, endpoint, topics, vins, purpose, secret, .. } => {
                *self = Self {
                    id: Some(id),
                    principal,
                    endpoint: Some(endpoint),
                    topics,
                    vins,
                    purpose,
                    status: WebhookStatus::Active,
                    secret,
                    previous_secret: None,
                    created_at: Some(at),
                    updated_at: Some(at),
                };
            }
            WebhookEvent::WebhookPaused { pause, .. } => self.status = WebhookStatus::Paused(pause),
            WebhookEvent::WebhookResumed { .. } => self.status = WebhookStatus::Active,
            WebhookEvent::WebhookSecretRotated { secret, previous_until, .. } => {
                let previous = std::mem::replace(&mut self.secret, secret);
                self.previous_secret = Some((previous, previous_until));
            }
            WebhookEvent::WebhookReplayRequested { .. } => {}
            WebhookEvent::WebhookDeleted { .. } => self.status = WebhookStatus::Deleted,
        }
    }
}
