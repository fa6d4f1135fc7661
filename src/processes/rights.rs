//! The registry drives the broker: the process that turns device and vehicle events into the
//! devices' rights at the broker, through a [`RightsKeeper`] (the MQTT adapter's implements it
//! with Mosquitto's Dynamic Security plugin).
//!
//! A provisioned device may use its own vehicle's topics; a replaced, revoked or detached device,
//! and every device of a decommissioned vehicle, may use none (the broker disconnects it). Every
//! change is idempotent: the process is at-least-once, and it replays. It never trusts the broker
//! to have kept what it was told: whenever the broker's rights may be new (first run, the control
//! connection came back, every [`CHECK_EVERY`]) it asks the keeper whether its mark is still there,
//! and when it is not, it replays every device and vehicle event of the log up to its checkpoint,
//! then sets the mark.

use crate::domain::device::{Device, DeviceEvent};
use crate::domain::streams;
use crate::domain::vehicle::{Vehicle, VehicleEvent, VehicleStatus};
use crate::projections::{Process, ProjectionError};
use crate::store::leases::Lease;
use crate::store::log::{self, Checkpoint, StoredEvent};
use crate::store::{Db, Frameworks};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How often the process asks whether the broker still holds the rights it was given.
pub const CHECK_EVERY: Duration = Duration::from_secs(15);
/// Events read at a time while replaying.
const REPLAY_BATCH: i64 = 500;
/// Changes applied between two checks of the lease.
const APPLY_CHUNK: usize = 25;

fn effect(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Effect(format!("broker rights: {e}"))
}

/// A change of rights at the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Right {
    /// Device `device_id` may use vehicle `vin`'s topics (and nothing else).
    Grant {
        /// Device id: its certificate's identity, its user name at the broker.
        device_id: String,
        /// Its vehicle.
        vin: String,
        /// The SHA-256 thumbprint of the certificate it was registered with: no other certificate
        /// may act as it.
        thumbprint: String,
    },
    /// Device `device_id` may use nothing; disconnect it.
    Withdraw {
        /// Device id.
        device_id: String,
    },
    /// Vehicle `vin` is gone: its topics are no one's.
    Retire {
        /// VIN.
        vin: String,
    },
}

/// The broker side: applies rights, and keeps a mark saying it holds all of them.
#[async_trait::async_trait]
pub trait RightsKeeper: Send + Sync {
    /// Applies `rights` in order; applying one again changes nothing.
    async fn apply(&self, rights: &[Right]) -> Result<(), String>;
    /// Whether the broker still carries the mark [`RightsKeeper::mark`] set.
    async fn marked(&self) -> Result<bool, String>;
    /// Sets the mark: the broker holds every right of the log up to the checkpoint.
    async fn mark(&self) -> Result<(), String>;
    /// Changes whenever the connection to the broker was made again (the broker may have restarted).
    fn generation(&self) -> u64;
}

/// Keeps the broker's rights in step with the registry.
pub struct DeviceRights {
    db: Db,
    frameworks: Arc<Frameworks>,
    keeper: Arc<dyn RightsKeeper>,
    /// When the mark was last found, and on which connection.
    checked: Mutex<Option<(Instant, u64)>>,
}

impl DeviceRights {
    /// Subscriber name.
    pub const NAME: &'static str = "device_rights";

    /// The process, applying rights through `keeper`.
    pub fn new(db: Db, frameworks: Arc<Frameworks>, keeper: Arc<dyn RightsKeeper>) -> Self {
        Self { db, frameworks, keeper, checked: Mutex::new(None) }
    }

    /// What `events` change at the broker, in log order. A grant is given only to a device that
    /// is in service today, on a vehicle in service: replaying an old `DeviceProvisioned` never
    /// gives rights back, not even for the moment until its withdrawal is replayed. In a replay
    /// (`passing_over`) an event that does not decode is logged and passed over, as the runner does.
    async fn rights(&self, events: &[StoredEvent], passing_over: bool) -> Result<Vec<Right>, ProjectionError> {
        let mut rights = Vec::new();
        for event in events {
            match self.rights_of(event).await {
                Ok(of) => rights.extend(of),
                Err(ProjectionError::Undecodable(e)) if passing_over => {
                    tracing::error!(error = %e, "broker rights replay: passed over an event that does not decode");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(rights)
    }

    async fn rights_of(&self, event: &StoredEvent) -> Result<Vec<Right>, ProjectionError> {
        let id = || event.aggregate_id.clone();
        Ok(match event.aggregate_type.as_str() {
            streams::DEVICE => match event.decode::<DeviceEvent>()? {
                DeviceEvent::DeviceProvisioned { .. } => {
                    // The VIN never changes: today's aggregates tell it, and whether it still serves.
                    let device = self.frameworks.stores.load::<Device>(&event.aggregate_id).await.map_err(effect)?;
                    let vehicle = self.frameworks.stores.load::<Vehicle>(&device.vin).await.map_err(effect)?;
                    let serves = !device.status.is_retired()
                        && vehicle.status != VehicleStatus::Decommissioned
                        && vehicle.devices.contains_key(&event.aggregate_id);
                    match serves {
                        true => vec![Right::Grant {
                            device_id: id(),
                            vin: device.vin,
                            thumbprint: device.certificate_thumbprint,
                        }],
                        false => vec![],
                    }
                }
                DeviceEvent::DeviceReplaced { .. } | DeviceEvent::DeviceRevoked { .. } => {
                    vec![Right::Withdraw { device_id: id() }]
                }
                DeviceEvent::DeviceRegistered { .. } | DeviceEvent::DeviceActivated { .. } => vec![],
            },
            streams::VEHICLE => match event.decode::<VehicleEvent>()? {
                VehicleEvent::DeviceDetached { device_id, .. } => vec![Right::Withdraw { device_id }],
                VehicleEvent::VehicleDecommissioned { .. } => {
                    // A decommissioned vehicle changes no more: its devices now are its devices then.
                    let vehicle = self.frameworks.stores.load::<Vehicle>(&event.aggregate_id).await.map_err(effect)?;
                    let mut rights: Vec<Right> =
                        vehicle.devices.into_keys().map(|device_id| Right::Withdraw { device_id }).collect();
                    rights.push(Right::Retire { vin: id() });
                    rights
                }
                _ => vec![],
            },
            _ => vec![],
        })
    }

    /// Applies what `events` change, checking `lease` before every few changes: an instance that
    /// lost its lease stops at once, and never re-grants what its successor withdrew.
    async fn apply(&self, events: &[StoredEvent], lease: &Lease, passing_over: bool) -> Result<(), ProjectionError> {
        let rights = self.rights(events, passing_over).await?;
        for chunk in rights.chunks(APPLY_CHUNK) {
            lease.check()?;
            self.keeper.apply(chunk).await.map_err(effect)?;
        }
        Ok(())
    }

    /// Replays the log's device and vehicle events up to `to` into the broker.
    async fn replay(&self, to: Checkpoint, lease: &Lease) -> Result<(), ProjectionError> {
        let mut from = Checkpoint::default();
        let mut replayed = 0usize;
        while from < to {
            let batch = {
                let mut pooled = self.db.acquire().await?;
                log::read_after(&mut pooled.conn(), from, Some(self.aggregate_types()), REPLAY_BATCH).await?
            };
            let next = batch.next_checkpoint(from, REPLAY_BATCH);
            let events: Vec<StoredEvent> = batch
                .events
                .into_iter()
                .filter(|e| Checkpoint { tx_id: e.tx_id, position: e.position } <= to)
                .collect();
            replayed += events.len();
            self.apply(&events, lease, true).await?;
            if next == from {
                break;
            }
            from = next;
        }
        tracing::info!(events = replayed, "broker rights restored from the log");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Process for DeviceRights {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[streams::DEVICE, streams::VEHICLE]
    }

    async fn prepare(&self, from: Checkpoint, lease: &Lease) -> Result<(), ProjectionError> {
        let mut checked = self.checked.lock().await;
        let generation = self.keeper.generation();
        if checked.is_some_and(|(at, seen)| seen == generation && at.elapsed() < CHECK_EVERY) {
            return Ok(());
        }
        let marked = self.keeper.marked().await.map_err(effect)?;
        // Read once the broker answered: the connections it was asked through are up.
        let generation = self.keeper.generation();
        if !marked {
            tracing::warn!("the broker holds no rights from tacho (new, or it lost them): restoring them from the log");
            self.replay(from, lease).await?;
            lease.check()?;
            // A broker that restarted during the replay may have lost its first part: again, then.
            if self.keeper.generation() != generation {
                return Err(effect("the broker connection was made again during the replay; replaying again"));
            }
            self.keeper.mark().await.map_err(effect)?;
        }
        *checked = Some((Instant::now(), generation));
        Ok(())
    }

    async fn handle(&self, events: &[StoredEvent], lease: &Lease) -> Result<(), ProjectionError> {
        self.apply(events, lease, false).await
    }
}
