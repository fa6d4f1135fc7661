//! The dispatcher: a checkpointed subscriber of the log that publishes requested commands to their
//! vehicles. A command becomes `dispatched` only after the broker's PUBACK; a crash between the
//! publish and the record re-publishes it on restart with the same command id (at-least-once).

use super::{acting, effect, CommandLink, Outgoing};
use crate::domain::command::{Command, CommandCommand, CommandStatus};
use crate::domain::streams;
use crate::projections::{Process, ProjectionError};
use crate::store::leases::Lease;
use crate::store::log::StoredEvent;
use crate::store::{pending, Db, Frameworks};
use chrono::Utc;
use cqrs_es::AggregateError;
use futures::StreamExt;
use std::sync::Arc;

/// Sends command requests.
pub struct Dispatcher {
    /// The database (connection state of vehicles).
    pub db: Db,
    /// Frameworks to record dispatch, queueing and fast failures.
    pub frameworks: Arc<Frameworks>,
    /// Confirmed sending.
    pub link: Arc<dyn CommandLink>,
}

const ACTOR: &str = "tacho:dispatcher";

impl Dispatcher {
    /// Subscriber name.
    pub const NAME: &'static str = "dispatcher";

    /// Sends command `id` if it still waits to be sent: published when its vehicle is online, else
    /// queued (store-and-forward) or failed fast. Safe to call again for the same command.
    pub async fn dispatch(&self, id: &str, lease: &Lease) -> Result<(), ProjectionError> {
        let command = match self.frameworks.stores.load::<Command>(id).await {
            Ok(command) => command,
            // Its stream holds a row that does not parse: it can never be sent; the others can.
            Err(AggregateError::DeserializationError(e)) => {
                tracing::error!(command = id, error = %e, "the command's stream does not load; it is not sent");
                return Ok(());
            }
            Err(e) => return Err(effect(e)),
        };
        if !matches!(command.status, CommandStatus::Requested | CommandStatus::Queued) {
            return Ok(());
        }
        let online = pending::is_connected(&self.db, &command.vin).await?;
        let now = Utc::now();
        let fw = &self.frameworks;
        if !online {
            let next = match (command.status, command.store_and_forward) {
                (CommandStatus::Requested, true) => CommandCommand::Queue { at: now },
                (CommandStatus::Requested, false) => CommandCommand::FailOffline { at: now },
                // Queued: it waits for the vehicle to come online, or for its TTL.
                _ => return Ok(()),
            };
            return fw.execute(&fw.commands, id, next, &acting(ACTOR)).await.map_err(effect);
        }
        let outgoing = Outgoing {
            command_id: uuid::Uuid::parse_str(id).map_err(effect)?,
            vin: command.vin.clone(),
            name: command.name.clone(),
            params: command.params.clone(),
            timeout_s: command.timeout_s,
        };
        lease.check()?;
        self.link.send(&outgoing).await.map_err(|e| effect(format!("sending command {id}: {e}")))?;
        fw.execute(&fw.commands, id, CommandCommand::MarkDispatched { at: Utc::now() }, &acting(ACTOR))
            .await
            .map_err(effect)
    }

    /// Sends the queued commands of `vin` (it came online).
    pub async fn send_queued(&self, vin: &str, lease: &Lease) -> Result<(), ProjectionError> {
        for id in pending::queued(&self.db, vin).await? {
            self.dispatch(&id.to_string(), lease).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Process for Dispatcher {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[streams::COMMAND]
    }

    async fn handle(&self, events: &[StoredEvent], lease: &Lease) -> Result<(), ProjectionError> {
        // Owned ids: borrowing closures here trip the `Send` check of async-trait futures.
        let requested: Vec<String> =
            events.iter().filter(|e| e.event_type == "CommandRequested").map(|e| e.aggregate_id.clone()).collect();
        // Every dispatch runs to its end before the first error is returned: dropping one between
        // its PUBACK and its record would publish it twice on the retry.
        let outcomes: Vec<Result<(), ProjectionError>> = futures::stream::iter(requested)
            .map(|id| async move { self.dispatch(&id, lease).await })
            .buffer_unordered(64)
            .collect()
            .await;
        outcomes.into_iter().collect()
    }
}
