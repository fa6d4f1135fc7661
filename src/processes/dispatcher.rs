//! The dispatcher: a checkpointed subscriber of the log that publishes requested commands to their
//! vehicles. A command becomes `dispatched` only after the broker's PUBACK; a crash between the
//! publish and the record re-publishes it on restart with the same command id (at-least-once).

use super::{acting, effect, ignore_refusal, CommandLink, Outgoing, SendError, Sent};
use crate::domain::command::CommandServices;
use crate::domain::command::{Command, CommandCommand, CommandEvent, CommandStatus, Undelivered};
use crate::domain::consent::Consent;
use crate::domain::streams;
use crate::domain::vehicle::Vehicle;
use crate::projections::{Process, ProjectionError};
use crate::store::aggregates::{send_rules, Known, Stored, TogetherError};
use crate::store::leases::Lease;
use crate::store::log::StoredEvent;
use crate::store::{pending, Db, Frameworks};
use chrono::Utc;
use cqrs_es::AggregateError;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Sends command requests.
pub struct Dispatcher {
    db: Db,
    frameworks: Arc<Frameworks>,
    link: Arc<dyn CommandLink>,
    /// Requests the broker confirmed, in all.
    delivered: AtomicU64,
    /// Commands whose request went unconfirmed: how often, and how many requests the broker had
    /// confirmed when it first did.
    strikes: Mutex<HashMap<String, (u32, u64)>>,
}

const ACTOR: &str = "tacho:dispatcher";

/// How often a request may go unconfirmed while the broker confirms others before its command
/// fails (`publish_refused`): a request the broker drops, or drops the connection over, must not
/// hold up every command behind it.
pub const MAX_UNCONFIRMED: u32 = 5;

impl Dispatcher {
    /// Subscriber name.
    pub const NAME: &'static str = "dispatcher";

    /// A dispatcher on `db` recording with `frameworks`, sending through `link`.
    pub fn new(db: Db, frameworks: Arc<Frameworks>, link: Arc<dyn CommandLink>) -> Self {
        Self { db, frameworks, link, delivered: AtomicU64::new(0), strikes: Mutex::default() }
    }

    /// A request of command `id` went unconfirmed: whether that happened [`MAX_UNCONFIRMED`] times
    /// while the broker confirmed other requests (then it is this request, not the broker).
    fn struck_out(&self, id: &str) -> bool {
        let delivered = self.delivered.load(Ordering::Acquire);
        let Ok(mut strikes) = self.strikes.lock() else { return false };
        // Commands that ended otherwise (a deadline during a long outage) leave their count behind:
        // past this many, start counting afresh rather than grow without bound.
        if strikes.len() >= 10_000 && !strikes.contains_key(id) {
            strikes.clear();
        }
        let (count, since) = strikes.entry(id.to_owned()).or_insert((0, delivered));
        *count += 1;
        let out = *count >= MAX_UNCONFIRMED && delivered > *since;
        if out {
            strikes.remove(id);
        }
        out
    }

    fn confirmed(&self, id: &str) {
        self.delivered.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut strikes) = self.strikes.lock() {
            strikes.remove(id);
        }
    }

    /// Sends command `id` if it still waits to be sent: published when its vehicle is online, else
    /// queued (store-and-forward) or failed fast. Just before publishing, the command is checked
    /// once more and released (no longer cancelable); what the broker answers is recorded on the
    /// command alone. An error (the broker or the store unavailable) means: retry later. Safe to
    /// call again for the same command. `vin` is the command's vehicle. Costs two transactions: the
    /// release, and the broker's answer.
    pub async fn dispatch(&self, id: &str, vin: &str, lease: &Lease) -> Result<(), ProjectionError> {
        let Some(command) = self.release(id, vin, lease).await? else { return Ok(()) };
        let outgoing = Outgoing {
            command_id: uuid::Uuid::parse_str(id).map_err(effect)?,
            vin: command.vin.clone(),
            name: command.name.clone(),
            params: command.params.clone(),
            timeout_s: command.timeout_s,
        };
        lease.check()?;
        let now = Utc::now();
        let outcome = match self.link.send(&outgoing).await {
            Ok(Sent::Delivered) => {
                self.confirmed(id);
                CommandCommand::MarkDispatched { at: now }
            }
            Ok(Sent::NoSubscriber) => CommandCommand::FailUndelivered {
                undelivered: Undelivered::VehicleUnreachable,
                reason: "the broker has no subscriber for the vehicle's request topic".into(),
                at: now,
            },
            Err(SendError::Refused(reason)) => {
                tracing::warn!(command = id, vin = %command.vin, %reason, "the broker refused the command's request");
                CommandCommand::FailUndelivered { undelivered: Undelivered::PublishRefused, reason, at: now }
            }
            Err(SendError::Unavailable(reason)) if self.struck_out(id) => {
                tracing::warn!(command = id, vin = %command.vin, %reason, "the broker never confirmed this request, but others");
                let reason = format!(
                    "the broker did not confirm this request {MAX_UNCONFIRMED} times while it confirmed others (last: {reason})"
                );
                CommandCommand::FailUndelivered { undelivered: Undelivered::PublishRefused, reason, at: now }
            }
            Err(e @ SendError::Unavailable(_)) => return Err(effect(format!("sending command {id}: {e}"))),
        };
        let fw = &self.frameworks;
        ignore_refusal(fw.execute(&fw.commands, id, outcome, &acting(ACTOR)).await)
    }

    /// In one transaction, holding vehicle `vin`'s send rules (taken first: no transaction waits for
    /// a turn): command `id` as it is, and, if it still waits to be sent, either queued or failed
    /// fast (its vehicle offline), or released (or expired, timed out or rejected instead): a
    /// revocation or a suspension commits either before, and the release sees it, or after the
    /// release committed, never in between. The command to send, if it is released.
    async fn release(&self, id: &str, vin: &str, lease: &Lease) -> Result<Option<Command>, ProjectionError> {
        let fw = &self.frameworks;
        for _ in 0..20 {
            let mut together = fw.together();
            together.lock(&send_rules(vin)).await?;
            // The three streams in one statement (the command's is read again when deciding: another
            // writer may have answered it meanwhile).
            let streams = [(streams::COMMAND, id), (streams::VEHICLE, vin), (streams::CONSENT, vin)];
            together.prefetch(&streams).await?;
            let command = match together.load::<Command>(id).await {
                Ok((command, _)) => command,
                Err(AggregateError::DeserializationError(e)) => {
                    tracing::error!(command = id, error = %e, "the command's stream does not load; it is not sent");
                    return Ok(None);
                }
                Err(e) => return Err(effect(e)),
            };
            if !matches!(command.status, CommandStatus::Requested | CommandStatus::Queued) {
                return Ok(None);
            }
            if command.vin != vin {
                tracing::error!(
                    command = id,
                    vin,
                    "the command is for another vehicle than its request said; not sent"
                );
                return Ok(None);
            }
            // A released command may already be at the broker: it is sent again whatever the registry
            // shows, and the broker's answer decides.
            let connected = match together.conn() {
                Some(mut conn) => pending::is_connected(&mut conn, vin).await?,
                None => pending::is_connected(&self.db, vin).await?,
            };
            let next = if command.is_released() || connected {
                // The vehicle and its consents as they are while the lock is held.
                let vehicle = together.load::<Vehicle>(vin).await.map_err(effect)?.0;
                let consent = together.load::<Consent>(vin).await.map_err(effect)?.0;
                let known: CommandServices = Arc::new(Known { vehicle, consent });
                (vec![CommandCommand::Release { at: Utc::now() }], known)
            } else {
                let now = Utc::now();
                let next = match (command.status, command.store_and_forward) {
                    (CommandStatus::Requested, true) => CommandCommand::Queue { at: now },
                    (CommandStatus::Requested, false) => CommandCommand::FailOffline { at: now },
                    // Queued: it waits for the vehicle to come online, or for its TTL.
                    _ => return Ok(None),
                };
                (vec![next], <Command as Stored>::services(fw))
            };
            lease.check()?;
            let decided = match together.decide::<Command>(id, next.0, &next.1).await {
                Ok(decided) => decided,
                // Already released (sent before a crash): it goes again with the same id.
                Err(AggregateError::UserError(_)) if command.is_released() => return Ok(Some(command)),
                Err(e) => return ignore_refusal(Err(e)).map(|()| None),
            };
            match together.commit(&acting(ACTOR)).await {
                Ok(()) => return Ok(Some(decided).filter(Command::is_released)),
                Err(TogetherError::Conflict) => continue,
                Err(TogetherError::Database(e)) => return Err(e.into()),
            }
        }
        Err(effect(format!("command {id}: too many concurrent changes to release it")))
    }

    /// Sends the queued commands of `vin` (it came online).
    pub async fn send_queued(&self, vin: &str, lease: &Lease) -> Result<(), ProjectionError> {
        for id in pending::queued(&self.db, vin).await? {
            self.dispatch(&id.to_string(), vin, lease).await?;
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
        let requested: Vec<(String, String)> = events
            .iter()
            .filter(|e| e.event_type == "CommandRequested")
            .filter_map(|e| match e.decode::<CommandEvent>() {
                Ok(CommandEvent::CommandRequested { vin, .. }) => Some((e.aggregate_id.clone(), vin)),
                // Its stream does not load either: it can never be sent, the others can.
                _ => {
                    tracing::error!(command = %e.aggregate_id, "a command request does not decode; it is not sent");
                    None
                }
            })
            .collect();
        // Every dispatch runs to its end before the first error is returned: dropping one between
        // its PUBACK and its record would publish it twice on the retry.
        let outcomes: Vec<Result<(), ProjectionError>> = futures::stream::iter(requested)
            .map(|(id, vin)| async move { self.dispatch(&id, &vin, lease).await })
            .buffer_unordered(64)
            .collect()
            .await;
        outcomes.into_iter().collect()
    }
}
