//! Commands, events and decide/apply of the Device aggregate (small enough for one file).

use crate::domain::{DomainError, Refusal};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Lifecycle: Registered → Provisioned → Active; Replaced and Revoked are terminal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// No events yet.
    #[default]
    Unknown,
    /// Known, with its certificate thumbprint.
    Registered,
    /// Given a broker client id and allowed topics.
    Provisioned,
    /// Seen connected.
    Active,
    /// Retired by a part replacement.
    Replaced,
    /// Its certificate is no longer trusted.
    Revoked,
}

impl DeviceStatus {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Registered => "registered",
            Self::Provisioned => "provisioned",
            Self::Active => "active",
            Self::Replaced => "replaced",
            Self::Revoked => "revoked",
        }
    }

    /// Replaced or revoked: it serves no more.
    pub fn is_retired(self) -> bool {
        matches!(self, Self::Replaced | Self::Revoked)
    }
}

/// Commands of the Device aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceCommand {
    /// A factory (or a dealer, for a replacement part) registers the device.
    Register {
        /// Device id (stream id).
        device_id: String,
        /// VIN of the vehicle it is fitted to.
        vin: String,
        /// Kind: tcu, infotainment ...
        kind: String,
        /// SHA-256 thumbprint of its X.509 certificate, any case, colons allowed.
        certificate_thumbprint: String,
        /// The device this one replaces, if any.
        replaces: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Give the device its broker identity.
    Provision {
        /// MQTT client id.
        client_id: String,
        /// Topic filters it may use.
        allowed_topics: Vec<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The device came into use.
    Activate {
        /// When.
        at: DateTime<Utc>,
    },
    /// Retire the device because another replaces it.
    Replace {
        /// The replacement's id.
        replacement_device_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Stop trusting the device.
    Revoke {
        /// Why.
        reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Events of the Device aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceEvent {
    /// The device is known.
    DeviceRegistered {
        /// Device id.
        device_id: String,
        /// VIN.
        vin: String,
        /// Kind.
        kind: String,
        /// Lowercase hex SHA-256 thumbprint.
        certificate_thumbprint: String,
        /// Device replaced by this one.
        replaces: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The device has a broker identity.
    DeviceProvisioned {
        /// MQTT client id.
        client_id: String,
        /// Topic filters.
        allowed_topics: Vec<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The device is in use.
    DeviceActivated {
        /// When.
        at: DateTime<Utc>,
    },
    /// The device was retired for a replacement.
    DeviceReplaced {
        /// The replacement.
        replacement_device_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The device is no longer trusted.
    DeviceRevoked {
        /// Why.
        reason: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for DeviceEvent {
    fn event_type(&self) -> String {
        match self {
            Self::DeviceRegistered { .. } => "DeviceRegistered",
            Self::DeviceProvisioned { .. } => "DeviceProvisioned",
            Self::DeviceActivated { .. } => "DeviceActivated",
            Self::DeviceReplaced { .. } => "DeviceReplaced",
            Self::DeviceRevoked { .. } => "DeviceRevoked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Refusals of the Device aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Register on an id that is taken.
    #[error("device {0} is already registered")]
    AlreadyRegistered(String),
    /// Any other command on an unknown id.
    #[error("device is not registered")]
    NotFound,
    /// Bad id, kind or thumbprint.
    #[error("{0}")]
    Invalid(String),
    /// The device was replaced or revoked.
    #[error("device is {0}")]
    Retired(&'static str),
}

impl DomainError for DeviceError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::AlreadyRegistered(_) => Refusal::DeviceExists,
            Self::NotFound => Refusal::DeviceNotFound,
            Self::Invalid(_) => Refusal::ValidationFailed,
            Self::Retired(_) => Refusal::DeviceRetired,
        }
    }
}

/// Checks a device id: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_device_id(id: &str) -> Result<(), DeviceError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(DeviceError::Invalid(format!("device id '{id}' must be 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'")))
    }
}

/// Normalizes a SHA-256 certificate thumbprint to 64 lowercase hex digits.
pub fn normalize_thumbprint(raw: &str) -> Result<String, DeviceError> {
    let hex: String = raw.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(DeviceError::Invalid("certificate_thumbprint must be a SHA-256 digest: 64 hex digits".into()))
    }
}

fn validate_kind(kind: &str) -> Result<(), DeviceError> {
    let ok = !kind.is_empty()
        && kind.len() <= 32
        && kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DeviceError::Invalid("kind must be 1 to 32 of a-z, 0-9, '_' (tcu, infotainment ...)".into()))
    }
}

/// The Device aggregate state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Device id.
    pub device_id: String,
    /// VIN of its vehicle.
    pub vin: String,
    /// Kind.
    pub kind: String,
    /// Status.
    pub status: DeviceStatus,
    /// Thumbprint.
    pub certificate_thumbprint: String,
    /// Broker client id once provisioned.
    pub client_id: Option<String>,
    /// Allowed topic filters once provisioned.
    pub allowed_topics: Vec<String>,
    /// The device it replaced.
    #[serde(default)]
    pub replaces: Option<String>,
    /// The device that replaced it.
    #[serde(default)]
    pub replaced_by: Option<String>,
}

impl Device {
    fn decide(&self, command: DeviceCommand) -> Result<Vec<DeviceEvent>, DeviceError> {
        use DeviceStatus as S;
        if let DeviceCommand::Register { device_id, vin, kind, certificate_thumbprint, replaces, at } = command {
            if self.status != S::Unknown {
                return Err(DeviceError::AlreadyRegistered(self.device_id.clone()));
            }
            validate_device_id(&device_id)?;
            validate_kind(&kind)?;
            let certificate_thumbprint = normalize_thumbprint(&certificate_thumbprint)?;
            return Ok(vec![DeviceEvent::DeviceRegistered {
                device_id,
                vin,
                kind,
                certificate_thumbprint,
                replaces,
                at,
            }]);
        }
        if self.status == S::Unknown {
            return Err(DeviceError::NotFound);
        }
        if self.status.is_retired() {
            return Err(DeviceError::Retired(self.status.as_str()));
        }
        Ok(match command {
            DeviceCommand::Register { .. } => unreachable!("handled above"),
            DeviceCommand::Provision { client_id, allowed_topics, at } => {
                if self.client_id.as_ref() == Some(&client_id) && self.allowed_topics == allowed_topics {
                    vec![]
                } else {
                    vec![DeviceEvent::DeviceProvisioned { client_id, allowed_topics, at }]
                }
            }
            DeviceCommand::Activate { at } => match self.status {
                S::Active => vec![],
                _ => vec![DeviceEvent::DeviceActivated { at }],
            },
            DeviceCommand::Replace { replacement_device_id, at } => {
                validate_device_id(&replacement_device_id)?;
                if replacement_device_id == self.device_id {
                    return Err(DeviceError::Invalid("a device cannot replace itself".into()));
                }
                vec![DeviceEvent::DeviceReplaced { replacement_device_id, at }]
            }
            DeviceCommand::Revoke { reason, at } => vec![DeviceEvent::DeviceRevoked { reason, at }],
        })
    }
}

impl Aggregate for Device {
    const TYPE: &'static str = crate::domain::streams::DEVICE;
    type Command = DeviceCommand;
    type Event = DeviceEvent;
    type Error = DeviceError;
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
            DeviceEvent::DeviceRegistered { device_id, vin, kind, certificate_thumbprint, replaces, .. } => {
                self.replaces = replaces;
                self.device_id = device_id;
                self.vin = vin;
                self.kind = kind;
                self.certificate_thumbprint = certificate_thumbprint;
                self.status = DeviceStatus::Registered;
            }
            DeviceEvent::DeviceProvisioned { client_id, allowed_topics, .. } => {
                self.client_id = Some(client_id);
                self.allowed_topics = allowed_topics;
                if self.status == DeviceStatus::Registered {
                    self.status = DeviceStatus::Provisioned;
                }
            }
            DeviceEvent::DeviceActivated { .. } => self.status = DeviceStatus::Active,
            DeviceEvent::DeviceReplaced { replacement_device_id, .. } => {
                self.status = DeviceStatus::Replaced;
                self.replaced_by = Some(replacement_device_id);
            }
            DeviceEvent::DeviceRevoked { .. } => self.status = DeviceStatus::Revoked,
        }
    }
}
