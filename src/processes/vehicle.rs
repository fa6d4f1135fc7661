//! The process that moves commands on what happens to their vehicle: its connection (a Last Will
//! interrupts what was dispatched before it, coming online sends what is queued) and revoked consent
//! (cancels what was requested before it and is not yet on its way).

use super::dispatcher::Dispatcher;
use super::{acting, ignore_refusal};
use crate::domain::command::CommandCommand;
use crate::domain::consent::{ConsentEvent, Purpose};
use crate::domain::observation::{VehicleFact, CONNECTION_CHANGED};
use crate::domain::streams;
use crate::projections::{Process, ProjectionError};
use crate::store::leases::Lease;
use crate::store::log::StoredEvent;
use crate::store::{pending, Db, Frameworks};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Reacts to connection changes and revoked consents.
pub struct VehicleProcesses {
    /// The database.
    pub db: Db,
    /// Frameworks to move commands.
    pub frameworks: Arc<Frameworks>,
    /// Sends queued commands.
    pub dispatcher: Arc<Dispatcher>,
}

impl VehicleProcesses {
    /// Subscriber name.
    pub const NAME: &'static str = "vehicle_processes";

    async fn interrupt_in_flight(&self, vin: &str, at: DateTime<Utc>) -> Result<(), ProjectionError> {
        for id in pending::in_flight(&self.db, vin).await? {
            let fw = &self.frameworks;
            let interrupt = CommandCommand::Interrupt { at };
            ignore_refusal(fw.execute(&fw.commands, &id.to_string(), interrupt, &acting("tacho:last_will")).await)?;
        }
        Ok(())
    }

    /// Cancels `requester`'s commands to `vin` requested before `revoked_at` and not yet on their way
    /// (a released one may be at the vehicle: the aggregate refuses). Those the read model does not
    /// show yet are rejected when the dispatcher checks the consent before publishing.
    async fn cancel_pending(
        &self,
        vin: &str,
        requester: &str,
        revoked_at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        for id in pending::not_sent_by(&self.db, vin, requester, revoked_at).await? {
            let cancel = CommandCommand::Cancel { by: "tacho:consent_revoked".into(), at: Utc::now() };
            let fw = &self.frameworks;
            ignore_refusal(fw.execute(&fw.commands, &id.to_string(), cancel, &acting("tacho:consent_revoked")).await)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Process for VehicleProcesses {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[streams::VEHICLE_STATE, streams::CONSENT]
    }

    async fn handle(&self, events: &[StoredEvent], lease: &Lease) -> Result<(), ProjectionError> {
        for event in events {
            match (event.aggregate_type.as_str(), event.event_type.as_str()) {
                (streams::VEHICLE_STATE, CONNECTION_CHANGED) => {
                    if let VehicleFact::ConnectionChanged { online, received_at, .. } = event.decode::<VehicleFact>()? {
                        match online {
                            true => self.dispatcher.send_queued(&event.aggregate_id, lease).await?,
                            false => self.interrupt_in_flight(&event.aggregate_id, received_at).await?,
                        }
                    }
                }
                (streams::CONSENT, "ConsentRevoked") => {
                    if let ConsentEvent::ConsentRevoked { subject, purpose, at, .. } = event.decode::<ConsentEvent>()? {
                        if purpose.as_str() == Purpose::REMOTE_COMMANDS {
                            self.cancel_pending(&event.aggregate_id, &subject, at).await?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
