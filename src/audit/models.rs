//! The read models as `audit verify` compares them: loaded once, then each stream's fold is checked
//! against them in memory.

use crate::domain::command::{Command, CommandEvent};
use crate::domain::consent::Consent;
use crate::domain::device::Device;
use crate::domain::streams;
use crate::domain::vehicle::Vehicle;
use crate::domain::webhook::Webhook;
use crate::projections::commands::CommandsProjection;
use crate::projections::consents::ConsentsProjection;
use crate::projections::devices::DevicesProjection;
use crate::projections::vehicles::VehiclesProjection;
use crate::projections::webhooks::{status_name, WebhooksProjection};
use crate::projections::ProjectionError;
use crate::store::log::{Checkpoint, StoredEvent};
use crate::store::{audit, checkpoints, Conn};
use cqrs_es::Aggregate;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// What the read models say, for the streams being verified.
#[derive(Default)]
pub struct Models {
    vehicles: HashMap<String, (String, Value)>,
    devices: HashMap<String, (String, String, String)>,
    consents: HashMap<String, BTreeSet<(String, String, i64)>>,
    commands: HashMap<Uuid, (String, String, Value)>,
    webhooks: HashMap<Uuid, (String, String, String)>,
    checkpoints: HashMap<&'static str, Checkpoint>,
    /// How far the seals subscriber has gone: every event up to here must have a seal.
    pub sealed_up_to: Checkpoint,
}

/// The read model that reflects streams of `aggregate_type`; `None` for fact streams, which have no
/// aggregate to fold (their sequence and seals are what is checked).
pub fn projection_of(aggregate_type: &str) -> Option<&'static str> {
    match aggregate_type {
        streams::VEHICLE => Some(VehiclesProjection::NAME),
        streams::DEVICE => Some(DevicesProjection::NAME),
        streams::CONSENT => Some(ConsentsProjection::NAME),
        streams::COMMAND => Some(CommandsProjection::NAME),
        streams::WEBHOOK => Some(WebhooksProjection::NAME),
        _ => None,
    }
}

impl Models {
    /// Loads the read models of `aggregate_type` (all when `None`) and their checkpoints.
    pub async fn load(
        conn: &mut Conn<'_>,
        aggregate_type: Option<&str>,
        sealed_up_to: Checkpoint,
    ) -> Result<Self, ProjectionError> {
        let wanted = |kind: &str| aggregate_type.is_none_or(|t| t == kind);
        let mut models = Self { sealed_up_to, ..Self::default() };
        if wanted(streams::VEHICLE) {
            models.vehicles = audit::vehicles(conn)
                .await?
                .into_iter()
                .map(|(vin, status, devices)| (vin, (status, devices)))
                .collect();
        }
        if wanted(streams::DEVICE) {
            models.devices = audit::devices(conn)
                .await?
                .into_iter()
                .map(|(id, status, vin, thumb)| (id, (status, vin, thumb)))
                .collect();
        }
        if wanted(streams::CONSENT) {
            for (vin, subject, purpose, version) in audit::granted_consents(conn).await? {
                models.consents.entry(vin).or_default().insert((subject, purpose, version));
            }
        }
        if wanted(streams::COMMAND) {
            models.commands =
                audit::commands(conn).await?.into_iter().map(|(id, status, vin, t)| (id, (status, vin, t))).collect();
        }
        if wanted(streams::WEBHOOK) {
            models.webhooks = audit::webhooks(conn)
                .await?
                .into_iter()
                .map(|(id, status, endpoint, secret)| (id, (status, endpoint, secret)))
                .collect();
        }
        for name in [
            VehiclesProjection::NAME,
            DevicesProjection::NAME,
            ConsentsProjection::NAME,
            CommandsProjection::NAME,
            WebhooksProjection::NAME,
        ] {
            models.checkpoints.insert(name, checkpoints::load(conn, name).await?);
        }
        Ok(models)
    }

    /// Whether the read model of `events`' stream has applied its last event.
    pub fn caught_up(&self, projection: &str, events: &[StoredEvent]) -> bool {
        let head = events.last().map(StoredEvent::checkpoint).unwrap_or_default();
        self.checkpoints.get(projection).is_some_and(|c| *c >= head)
    }

    /// Folds `events` (one stream of `aggregate_type`, contiguous) and says what its read model
    /// gets wrong.
    pub fn compare(
        &self,
        aggregate_type: &str,
        id: &str,
        events: &[StoredEvent],
    ) -> Result<Vec<String>, ProjectionError> {
        Ok(match aggregate_type {
            streams::VEHICLE => self.vehicle(id, fold(events)?),
            streams::DEVICE => self.device(id, fold(events)?),
            streams::CONSENT => self.consent(id, fold(events)?),
            streams::WEBHOOK => self.webhook(id, fold(events)?),
            _ => self.command(id, fold(events)?, events),
        })
    }

    fn vehicle(&self, vin: &str, vehicle: Vehicle) -> Vec<String> {
        let Some((status, devices)) = self.vehicles.get(vin) else { return vec!["rm_vehicles has no row".into()] };
        let mut problems = Vec::new();
        if status != vehicle.status.as_str() {
            problems.push(format!("rm_vehicles.status is {status}, the log says {}", vehicle.status.as_str()));
        }
        let listed: BTreeSet<String> = devices
            .as_array()
            .map(|a| a.iter().filter_map(|d| d["device_id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let fitted: BTreeSet<String> = vehicle.devices.keys().cloned().collect();
        if listed != fitted {
            problems.push(format!("rm_vehicles.devices is {listed:?}, the log says {fitted:?}"));
        }
        problems
    }

    fn device(&self, id: &str, device: Device) -> Vec<String> {
        let Some((status, vin, thumbprint)) = self.devices.get(id) else { return vec!["rm_devices has no row".into()] };
        [
            ("status", status, device.status.as_str().to_owned()),
            ("vin", vin, device.vin),
            ("certificate_thumbprint", thumbprint, device.certificate_thumbprint),
        ]
        .into_iter()
        .filter(|(_, model, log)| *model != log)
        .map(|(column, model, log)| format!("rm_devices.{column} is {model}, the log says {log}"))
        .collect()
    }

    fn consent(&self, vin: &str, consent: Consent) -> Vec<String> {
        let empty = BTreeSet::new();
        let model = self.consents.get(vin).unwrap_or(&empty);
        let log: BTreeSet<(String, String, i64)> = consent
            .grants
            .iter()
            .flat_map(|(subject, grants)| {
                grants.iter().map(move |(p, g)| (subject.clone(), p.to_string(), i64::from(g.version)))
            })
            .collect();
        if *model == log {
            vec![]
        } else {
            vec![format!("rm_consents grants {model:?}, the log grants {log:?}")]
        }
    }

    fn command(&self, id: &str, command: Command, events: &[StoredEvent]) -> Vec<String> {
        let Ok(uuid) = Uuid::parse_str(id) else { return vec![format!("stream id {id} is not a UUID")] };
        let Some((status, vin, transitions)) = self.commands.get(&uuid) else {
            return vec!["rm_commands has no row".into()];
        };
        let mut problems = Vec::new();
        if status != command.status.as_str() {
            problems.push(format!("rm_commands.status is {status}, the log says {}", command.status.as_str()));
        }
        if *vin != command.vin {
            problems.push(format!("rm_commands.vin is {vin}, the log says {}", command.vin));
        }
        let transitions = transitions.as_array().map_or(0, Vec::len);
        let expected =
            events.iter().filter_map(|e| e.decode::<CommandEvent>().ok()).filter(|e| e.status().is_some()).count();
        if transitions != expected {
            problems.push(format!("rm_commands has {transitions} transitions, the log has {expected}"));
        }
        problems
    }
}

impl Models {
    fn webhook(&self, id: &str, webhook: Webhook) -> Vec<String> {
        let Ok(uuid) = Uuid::parse_str(id) else { return vec![format!("stream id {id} is not a UUID")] };
        let Some((status, endpoint, secret)) = self.webhooks.get(&uuid) else {
            return vec!["rm_webhooks has no row".into()];
        };
        let log_endpoint = webhook.endpoint.as_ref().map(|e| e.as_str().to_owned()).unwrap_or_default();
        [
            ("status", status, status_name(&webhook.status).to_owned()),
            ("endpoint", endpoint, log_endpoint),
            ("secret", secret, webhook.secret),
        ]
        .into_iter()
        .filter(|(_, model, log)| *model != log)
        .map(|(column, model, log)| format!("rm_webhooks.{column} is {model}, the log says {log}"))
        .collect()
    }
}

fn fold<A: Aggregate>(events: &[StoredEvent]) -> Result<A, ProjectionError> {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.decode::<A::Event>()?);
    }
    Ok(aggregate)
}
