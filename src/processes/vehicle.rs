//! The process that moves commands on what happens to their vehicle: its connection (Last Will
//! interrupts what is in flight, coming online sends what is queued) and revoked consent (cancels
//! what is queued).

use super::dispatcher::Dispatcher;
use super::{acting, effect};
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

/// The read model lags the aggregates: a command it still lists may have moved on, and the aggregate
/// refuses. That is not a failure of the process (retrying would stall it); other errors are.
fn ignore_refusal<E: std::error::Error>(result: Result<(), cqrs_es::AggregateError<E>>) -> Result<(), ProjectionError> {
    match result {
        Ok(()) | Err(cqrs_es::AggregateError::UserError(_)) => Ok(()),
        // A stream that does not load can never be moved: retrying would stall every vehicle.
        Err(cqrs_es::AggregateError::DeserializationError(e)) => {
            tracing::error!(error = %e, "a command's stream does not load; passed over");
            Ok(())
        }
        Err(e) => Err(effect(e)),
    }
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

    async fn cancel_queued(&self, vin: &str, requester: &str) -> Result<(), ProjectionError> {
        for id in pending::queued_by(&self.db, vin, requester).await? {
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
                    if let ConsentEvent::ConsentRevoked { subject, purpose, .. } = event.decode::<ConsentEvent>()? {
                        if purpose.as_str() == Purpose::REMOTE_COMMANDS {
                            self.cancel_queued(&event.aggregate_id, &subject).await?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
