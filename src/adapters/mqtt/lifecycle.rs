//! Processes that move commands without a requester: the vehicle's connection (Last Will interrupts
//! what is in flight, coming online sends what is queued), revoked consent (cancels what is queued),
//! and the clock (deadlines and TTLs, also those that passed while tacho was down).

use super::dispatcher::Dispatcher;
use crate::adapters::sql::Db;
use crate::adapters::Frameworks;
use crate::domain::command::CommandCommand;
use crate::domain::consent::{ConsentEvent, Purpose};
use crate::domain::observation::VehicleFact;
use crate::projections::{Process, ProjectionError, StoredEvent};
use crate::{execute_db, on_db};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reacts to connection changes and revoked consents.
pub struct VehicleProcesses {
    /// The database.
    pub db: Db,
    /// Frameworks to move commands.
    pub frameworks: Arc<Frameworks>,
    /// Sends queued commands.
    pub dispatcher: Arc<Dispatcher>,
}

fn effect(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Effect(e.to_string())
}

/// The read model lags the aggregates: a command it still lists may have moved on, and the aggregate
/// refuses. That is not a failure of the process (retrying would stall it); other errors are.
fn ignore_refusal<E: std::error::Error>(result: Result<(), cqrs_es::AggregateError<E>>) -> Result<(), ProjectionError> {
    match result {
        Ok(()) | Err(cqrs_es::AggregateError::UserError(_)) => Ok(()),
        Err(e) => Err(effect(e)),
    }
}

fn metadata(actor: &str) -> HashMap<String, String> {
    HashMap::from([("actor".to_owned(), actor.to_owned())])
}

impl VehicleProcesses {
    /// Subscriber name.
    pub const NAME: &'static str = "vehicle_processes";

    async fn commands(&self, sql: &str, vin: &str, extra: Option<&str>) -> Result<Vec<uuid::Uuid>, ProjectionError> {
        Ok(on_db!(&self.db, |p| sqlx::query_scalar(sql).bind(vin).bind(extra).fetch_all(p).await)?)
    }

    async fn interrupt_in_flight(&self, vin: &str, at: DateTime<Utc>) -> Result<(), ProjectionError> {
        let sql = "SELECT command_id FROM rm_commands WHERE vin = $1 AND ($2 IS NULL OR true) \
                   AND status IN ('dispatched', 'accepted', 'in_progress')";
        for id in self.commands(sql, vin, None).await? {
            let fw = &self.frameworks;
            let interrupt = CommandCommand::Interrupt { at };
            ignore_refusal(fw.execute(&fw.commands, &id.to_string(), interrupt, &metadata("tacho:last_will")).await)?;
        }
        Ok(())
    }

    async fn cancel_queued(&self, vin: &str, requester: &str) -> Result<(), ProjectionError> {
        let sql = "SELECT command_id FROM rm_commands WHERE vin = $1 AND requester = $2 AND status = 'queued'";
        for id in self.commands(sql, vin, Some(requester)).await? {
            let cancel = CommandCommand::Cancel { by: "tacho:consent_revoked".into(), at: Utc::now() };
            let fw = &self.frameworks;
            ignore_refusal(
                fw.execute(&fw.commands, &id.to_string(), cancel, &metadata("tacho:consent_revoked")).await,
            )?;
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
        &["VehicleState", "Consent"]
    }

    async fn handle(&self, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        for event in events {
            match (event.aggregate_type.as_str(), event.event_type.as_str()) {
                ("VehicleState", "ConnectionChanged") => {
                    if let VehicleFact::ConnectionChanged { online, received_at, .. } = event.decode::<VehicleFact>()? {
                        match online {
                            true => self.dispatcher.send_queued(&event.aggregate_id).await?,
                            false => self.interrupt_in_flight(&event.aggregate_id, received_at).await?,
                        }
                    }
                }
                ("Consent", "ConsentRevoked") => {
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

/// Every second: time out commands past their deadline, expire queued commands past their TTL,
/// send queued commands whose vehicle is online (covers races with the connection process), and
/// every minute prune the state history and the inbound dedupe window.
pub async fn sweep(
    db: Db,
    frameworks: Arc<Frameworks>,
    dispatcher: Option<Arc<Dispatcher>>,
    history_retention: chrono::Duration,
    shutdown: CancellationToken,
) {
    let mut ticks: u64 = 0;
    loop {
        if let Err(e) = sweep_once(&db, &frameworks, dispatcher.as_deref()).await {
            tracing::warn!(error = %e, "deadline sweep failed; retrying");
        }
        if ticks.is_multiple_of(60) {
            if let Err(e) = prune(&db, history_retention).await {
                tracing::warn!(error = %e, "pruning failed; retrying");
            }
        }
        ticks += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One sweep (also run by tests).
pub async fn sweep_once(
    db: &Db,
    frameworks: &Frameworks,
    dispatcher: Option<&Dispatcher>,
) -> Result<(), ProjectionError> {
    let now = Utc::now();
    let sql =
        "SELECT command_id FROM rm_commands WHERE status IN ('requested', 'dispatched', 'accepted', 'in_progress') \
         AND deadline_at <= $1 ORDER BY deadline_at LIMIT 500";
    let overdue: Vec<uuid::Uuid> = on_db!(db, |p| sqlx::query_scalar(sql).bind(now).fetch_all(p).await)?;
    for id in overdue {
        // The read model may lag a re-dispatch that moved the deadline: the aggregate decides.
        let _ = frameworks
            .execute(
                &frameworks.commands,
                &id.to_string(),
                CommandCommand::TimeOut { at: now },
                &metadata("tacho:clock"),
            )
            .await;
    }
    let sql =
        "SELECT command_id FROM rm_commands WHERE status = 'queued' AND expires_at <= $1 ORDER BY expires_at LIMIT 500";
    let expired: Vec<uuid::Uuid> = on_db!(db, |p| sqlx::query_scalar(sql).bind(now).fetch_all(p).await)?;
    for id in expired {
        let _ = frameworks
            .execute(
                &frameworks.commands,
                &id.to_string(),
                CommandCommand::Expire { at: now },
                &metadata("tacho:clock"),
            )
            .await;
    }
    if let Some(dispatcher) = dispatcher {
        let sql = "SELECT c.command_id FROM rm_commands c JOIN rm_vehicles v ON v.vin = c.vin \
             WHERE c.status = 'queued' AND v.connected ORDER BY c.requested_at LIMIT 500";
        let ready: Vec<uuid::Uuid> = on_db!(db, |p| sqlx::query_scalar(sql).fetch_all(p).await)?;
        for id in ready {
            if let Err(e) = dispatcher.dispatch(&id.to_string()).await {
                tracing::warn!(command = %id, error = %e, "sending a queued command failed; retrying");
            }
        }
    }
    Ok(())
}

/// Deletes state history older than `history_retention` and message ids older than 7 days.
pub async fn prune(db: &Db, history_retention: chrono::Duration) -> Result<(), sqlx::Error> {
    let cutoff = Utc::now() - history_retention;
    let sql = "DELETE FROM rm_state_history WHERE received_at < $1";
    execute_db!(db, sql, cutoff)?;
    // The dedupe window of vehicle message ids.
    let sql = "DELETE FROM inbound_seen WHERE received_at < $1";
    let window = Utc::now() - chrono::Duration::days(7);
    execute_db!(db, sql, window)?;
    Ok(())
}
