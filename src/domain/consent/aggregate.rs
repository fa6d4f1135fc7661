//! Commands, events and decide/apply of the Consent aggregate.

use crate::domain::{DomainError, Refusal};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A consent purpose: `remote_commands`, `location`, `telemetry`, `diagnostics` or
/// `data_sharing:<partner>` (partner: 1 to 64 of a-z, 0-9, `_`, `-`, `.`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Purpose(String);

impl Purpose {
    /// Consent needed to send remote commands.
    pub const REMOTE_COMMANDS: &'static str = "remote_commands";
    /// Consent needed to take a vehicle's state reports and events.
    pub const TELEMETRY: &'static str = "telemetry";
    /// Consent needed to keep its position signals.
    pub const LOCATION: &'static str = "location";

    /// What [`Self::parse`] accepts, as a regular expression (for the API's schema).
    pub const PATTERN: &'static str =
        "^(remote_commands|location|telemetry|diagnostics|data_sharing:[a-z0-9_.-]{1,64})$";

    /// Validates a purpose string.
    pub fn parse(raw: &str) -> Result<Self, ConsentError> {
        let ok = match raw.strip_prefix("data_sharing:") {
            Some(partner) => {
                !partner.is_empty()
                    && partner.len() <= 64
                    && partner.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
            }
            None => matches!(raw, "remote_commands" | "location" | "telemetry" | "diagnostics"),
        };
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ConsentError::UnknownPurpose(raw.to_owned()))
        }
    }

    /// The purpose as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Purpose {
    type Error = ConsentError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Purpose> for String {
    fn from(p: Purpose) -> Self {
        p.0
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Commands of the Consent aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsentCommand {
    /// A subject allows a purpose (again, possibly with new terms).
    Grant {
        /// VIN (stream id).
        vin: String,
        /// User or service id.
        subject: String,
        /// Purpose.
        purpose: Purpose,
        /// Legal basis, e.g. `consent` or `contract` (GDPR art. 6).
        legal_basis: String,
        /// Optional end of validity.
        expires_at: Option<DateTime<Utc>>,
        /// Who gave it: the subject itself, or an owner for a service.
        granted_by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A subject withdraws a purpose.
    Revoke {
        /// User or service id.
        subject: String,
        /// Purpose.
        purpose: Purpose,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of the Consent aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConsentEvent {
    /// Consent given; `version` is what events it allows record. Payload version 2 added
    /// `granted_by` (see [`super::upcast`]).
    ConsentGranted {
        /// VIN.
        vin: String,
        /// Subject.
        subject: String,
        /// Purpose.
        purpose: Purpose,
        /// Version of this grant (counts every change on the VIN's consents).
        version: u32,
        /// Legal basis.
        legal_basis: String,
        /// End of validity.
        expires_at: Option<DateTime<Utc>>,
        /// Who gave it.
        granted_by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Consent withdrawn.
    ConsentRevoked {
        /// Subject.
        subject: String,
        /// Purpose.
        purpose: Purpose,
        /// Version of this change.
        version: u32,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ConsentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ConsentGranted { .. } => "ConsentGranted",
            Self::ConsentRevoked { .. } => "ConsentRevoked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::ConsentGranted { .. } => super::upcast::CONSENT_GRANTED_VERSION,
            Self::ConsentRevoked { .. } => "1",
        }
        .to_owned()
    }
}

/// Refusals of the Consent aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// Purpose outside the catalogue.
    #[error("unknown consent purpose '{0}'")]
    UnknownPurpose(String),
    /// Grant that ends before it starts.
    #[error("expires_at must be in the future")]
    AlreadyExpired,
    /// Bad subject or legal basis.
    #[error("{0}")]
    Invalid(String),
}

impl DomainError for ConsentError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::UnknownPurpose(_) => Refusal::UnknownPurpose,
            Self::AlreadyExpired | Self::Invalid(_) => Refusal::ValidationFailed,
        }
    }
}

/// A grant in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Version that granted it.
    pub version: u32,
    /// Legal basis.
    pub legal_basis: String,
    /// End of validity.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was granted.
    #[serde(default)]
    pub granted_at: Option<DateTime<Utc>>,
}

/// The Consent aggregate state: grants in force per (subject, purpose).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    /// VIN.
    pub vin: String,
    /// Last version written.
    pub version: u32,
    /// Grants in force, keyed by `subject` then purpose.
    pub grants: BTreeMap<String, BTreeMap<Purpose, Grant>>,
}

impl Consent {
    /// The grant version that allows `subject` to use `purpose` at `at`, if any.
    pub fn allows(&self, subject: &str, purpose: &str, at: DateTime<Utc>) -> Option<u32> {
        let grant = self.grants.get(subject)?.iter().find(|(p, _)| p.as_str() == purpose)?.1;
        match grant.expires_at {
            Some(end) if end <= at => None,
            _ => Some(grant.version),
        }
    }

    /// The highest version of a grant of any subject that was in force for `purpose` at `at` (given
    /// before it, not expired), if any.
    pub fn allows_anyone(&self, purpose: &str, at: DateTime<Utc>) -> Option<u32> {
        self.grants
            .values()
            .filter_map(|grants| grants.iter().find(|(p, _)| p.as_str() == purpose).map(|(_, grant)| grant))
            .filter(|grant| grant.granted_at.is_none_or(|g| g <= at) && grant.expires_at.is_none_or(|end| at < end))
            .map(|grant| grant.version)
            .max()
    }

    fn decide(&self, command: ConsentCommand) -> Result<Vec<ConsentEvent>, ConsentError> {
        let version = self.version + 1;
        Ok(match command {
            ConsentCommand::Grant { vin, subject, purpose, legal_basis, expires_at, granted_by, at } => {
                if subject.trim().is_empty() || subject.len() > 200 {
                    return Err(ConsentError::Invalid("subject must be 1 to 200 characters".into()));
                }
                if legal_basis.trim().is_empty() || legal_basis.len() > 64 {
                    return Err(ConsentError::Invalid("legal_basis must be 1 to 64 characters".into()));
                }
                if expires_at.is_some_and(|end| end <= at) {
                    return Err(ConsentError::AlreadyExpired);
                }
                let current = self.grants.get(&subject).and_then(|g| g.get(&purpose));
                if current.is_some_and(|g| g.legal_basis == legal_basis && g.expires_at == expires_at) {
                    return Ok(vec![]);
                }
                vec![ConsentEvent::ConsentGranted {
                    vin,
                    subject,
                    purpose,
                    version,
                    legal_basis,
                    expires_at,
                    granted_by,
                    at,
                }]
            }
            ConsentCommand::Revoke { subject, purpose, at } => {
                if self.grants.get(&subject).is_some_and(|g| g.contains_key(&purpose)) {
                    vec![ConsentEvent::ConsentRevoked { subject, purpose, version, at }]
                } else {
                    vec![]
                }
            }
        })
    }
}

impl Aggregate for Consent {
    const TYPE: &'static str = crate::domain::streams::CONSENT;
    type Command = ConsentCommand;
    type Event = ConsentEvent;
    type Error = ConsentError;
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
        match event {
            ConsentEvent::ConsentGranted { vin, subject, purpose, version, legal_basis, expires_at, at, .. } => {
                self.vin = vin;
                self.version = version;
                let grant = Grant { version, legal_basis, expires_at, granted_at: Some(at) };
                self.grants.entry(subject).or_default().insert(purpose, grant);
            }
            ConsentEvent::ConsentRevoked { subject, purpose, version, .. } => {
                self.version = version;
                if let Some(grants) = self.grants.get_mut(&subject) {
                    grants.remove(&purpose);
                    if grants.is_empty() {
                        self.grants.remove(&subject);
                    }
                }
            }
        }
    }
}
