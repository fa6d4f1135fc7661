//! One batch of inbound messages: decoded, checked against the budgets, the registry and the
//! consents, then recorded (answers on their commands, facts and dead letters in one transaction).

use super::{Handler, Received};
use crate::adapters::mqtt::admission::{valid_msg_id, SignalBudget};
use crate::adapters::mqtt::codec::{
    self, CommandResponse, ConnectionReport, ConnectionState, StateReport, VehicleEventReport,
};
use crate::adapters::mqtt::topics::{self, Inbound};
use crate::domain::command::{Command, CommandCommand, CommandError, VehicleAnswer};
use crate::domain::consent::{Consent, Purpose};
use crate::domain::observation::{holds_location, is_location, redact_location, without_location, VehicleFact};
use crate::domain::vehicle::{Vehicle, VehicleStatus};
use crate::store::aggregates::{Stored, TogetherError};
use crate::store::facts::{self, DeadLetter, Observed};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use std::collections::{BTreeMap, HashMap};

/// Dead-letter reason of a message no consent lets in: counted, its payload not kept.
const CONSENT_MISSING: &str = "consent_missing";

/// Why a batch could not be handled now; it is retried, unacknowledged.
#[derive(Debug, thiserror::Error)]
pub(super) enum BatchError {
    /// The store failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A vehicle's registry or consent could not be read from the log.
    #[error("reading vehicle {vin}'s registry and consents from the log: {error}")]
    Log {
        /// The vehicle.
        vin: String,
        /// What failed.
        error: String,
    },
    /// Recording a vehicle's answer on its command failed for a reason that may pass.
    #[error("recording an answer to {command}: {error}")]
    Answer {
        /// The command answered.
        command: uuid::Uuid,
        /// What failed.
        error: String,
    },
}

/// Whether recording failed for a reason that may pass (the database restarting, busy ...): then the
/// answer is retried, never dead-lettered.
fn transient<E: std::error::Error + 'static>(e: &AggregateError<E>) -> bool {
    if matches!(e, AggregateError::DatabaseConnectionError(_) | AggregateError::AggregateConflict) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.downcast_ref::<sqlx::Error>().is_some_and(crate::store::is_transient) {
            return true;
        }
        source = error.source();
    }
    false
}

/// A decoded message waiting for the registry and consent checks.
enum Pending {
    State(StateReport),
    Event(String, VehicleEventReport),
    Connection(ConnectionReport),
}

impl Handler {
    /// Handles one batch: answers, facts and dead letters. Idempotent: a retried batch adds nothing twice.
    pub(super) async fn handle_batch(&self, batch: &[Received]) -> Result<(), BatchError> {
        let mut dead = Vec::new();
        let mut answers: BTreeMap<uuid::Uuid, Vec<(usize, String, VehicleAnswer)>> = BTreeMap::new();
        let mut pending: Vec<(usize, String, Pending, DateTime<Utc>)> = Vec::new();
        for (i, message) in batch.iter().enumerate() {
            let topic = String::from_utf8_lossy(&message.publish.topic).into_owned();
            let payload = &message.publish.payload;
            let refuse = |reason: &'static str, detail: String| DeadLetter {
                topic: topic.clone(),
                payload: payload.iter().take(codec::MAX_PAYLOAD).copied().collect(),
                reason,
                detail,
            };
            let parsed = match topics::parse_inbound(&topic) {
                Ok(parsed) => parsed,
                Err(detail) => {
                    dead.push(refuse("unknown_topic", detail));
                    continue;
                }
            };
            if payload.len() > codec::MAX_PAYLOAD {
                dead.push(refuse("oversized", format!("{} bytes, at most {}", payload.len(), codec::MAX_PAYLOAD)));
                continue;
            }
            let kind = match &parsed {
                Inbound::Response { .. } => "response",
                Inbound::State { .. } => "state",
                Inbound::Event { .. } => "event",
                Inbound::Connection { .. } => "connection",
            };
            self.metrics.inc("tacho_mqtt_messages_total", &[("kind", kind)]);
            let decoded = match parsed {
                Inbound::Response { vin, .. } => codec::decode::<CommandResponse>(payload).and_then(|r| {
                    if let Some(result) = &r.result {
                        codec::check_value(result)?;
                    }
                    let answer = VehicleAnswer {
                        topic_vin: vin.to_string(),
                        status: r.status,
                        code: r.code,
                        message: r.message,
                        result: r.result,
                        vehicle_ts: Some(r.ts),
                        at: message.at,
                    };
                    answers.entry(r.command_id).or_default().push((i, topic.clone(), answer));
                    Ok(())
                }),
                Inbound::State { vin } => codec::decode::<StateReport>(payload).and_then(|r| {
                    valid_msg_id(&r.msg_id)?;
                    codec::check_signals(&r.signals, self.limits.signals_per_report)?;
                    self.limits.check_clock(r.ts, message.at)?;
                    pending.push((i, vin.to_string(), Pending::State(r), message.at));
                    Ok(())
                }),
                Inbound::Event { vin, kind } => codec::decode::<VehicleEventReport>(payload).and_then(|r| {
                    valid_msg_id(&r.msg_id)?;
                    codec::check_value(&r.data)?;
                    self.limits.check_clock(r.ts, message.at)?;
                    pending.push((i, vin.to_string(), Pending::Event(kind, r), message.at));
                    Ok(())
                }),
                // Connection messages are ordered by their time: one dated beyond the skew allowed
                // would pin its vehicle's state for good.
                Inbound::Connection { vin } => codec::decode::<ConnectionReport>(payload).and_then(|r| {
                    if let Some(ts) = r.ts {
                        self.limits.check_clock(ts, message.at)?;
                    }
                    pending.push((i, vin.to_string(), Pending::Connection(r), message.at));
                    Ok(())
                }),
            };
            if let Err(refused) = decoded {
                dead.push(refuse(refused.reason, refused.detail));
            }
        }

        let observed = self.check(batch, pending, &mut dead).await?;
        let stored = self.record(batch, &answers, &observed, &mut dead).await?;
        for letter in &dead {
            self.metrics.inc("tacho_dead_letters_total", &[("reason", letter.reason)]);
        }
        self.metrics.add("tacho_facts_appended_total", &[], stored.appended as u64);
        for reason in stored.ignored {
            self.metrics.inc("tacho_connection_messages_ignored_total", &[("reason", reason)]);
        }
        Ok(())
    }

    /// Records a batch in one transaction: the vehicle answers on their commands (each command's in
    /// order; an answer a command refuses becomes a dead letter), the facts, and the dead letters.
    /// An answer its command took is a message from its (registered) vehicle too: evidence that it
    /// is connected. Another writer of one of the commands or vehicle streams meanwhile (the
    /// dispatcher recording the broker's answer, another instance) makes it all decide again.
    async fn record(
        &self,
        batch: &[Received],
        answers: &BTreeMap<uuid::Uuid, Vec<(usize, String, VehicleAnswer)>>,
        observed: &[Observed],
        dead: &mut Vec<DeadLetter>,
    ) -> Result<facts::Stored, BatchError> {
        let metadata =
            HashMap::from([("actor".to_owned(), "vehicle".to_owned()), ("source".to_owned(), "mqtt".to_owned())]);
        let services = <Command as Stored>::services(&self.frameworks);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut together = self.frameworks.together();
            together.begin().await?;
            let (mut refused, mut heard) = (Vec::new(), Vec::new());
            for (id, answers) in answers {
                let commands = answers.iter().map(|(_, _, a)| CommandCommand::RecordAnswer(a.clone())).collect();
                let outcomes = match together.decide_each::<Command>(&id.to_string(), commands, &services).await {
                    Ok(outcomes) => outcomes,
                    // Transient: the batch is retried, unacknowledged.
                    Err(e) if transient(&e) => return Err(BatchError::Answer { command: *id, error: e.to_string() }),
                    // Anything else would fail every retry and stall every vehicle's traffic.
                    Err(e) => {
                        let why = e.to_string();
                        refused.extend(
                            answers.iter().map(|(i, topic, _)| (*i, topic.clone(), "unprocessable", why.clone())),
                        );
                        continue;
                    }
                };
                for ((i, topic, answer), outcome) in answers.iter().zip(outcomes) {
                    match outcome {
                        Ok(()) => heard.push((answer.topic_vin.clone(), answer.at)),
                        Err(CommandError::NotFound) => {
                            refused.push((*i, topic.clone(), "unknown_command", format!("no command {id}")));
                        }
                        Err(e @ CommandError::WrongVehicle { .. }) => {
                            refused.push((*i, topic.clone(), "wrong_vehicle", e.to_string()));
                        }
                        Err(e) => refused.push((*i, topic.clone(), "refused", e.to_string())),
                    }
                }
            }
            let refused: Vec<DeadLetter> = refused
                .into_iter()
                .map(|(i, topic, reason, detail)| DeadLetter {
                    topic,
                    payload: batch[i].publish.payload.to_vec(),
                    reason,
                    detail,
                })
                .collect();
            let letters = facts::storable(&[dead.as_slice(), refused.as_slice()].concat());
            let streams = observed.iter().map(|o| o.vin.as_str()).chain(heard.iter().map(|(vin, _)| vin.as_str()));
            let known = self.sequences.known(streams.clone());
            let written = match together.writing().await {
                Ok(mut conn) => facts::write(&mut conn, observed, &heard, &letters, &known).await,
                Err(e) => Err(e),
            };
            let mut stored = match written {
                Ok(stored) => stored,
                Err(e) if attempts < 20 && crate::store::is_unique_violation(&e) => {
                    // Another writer appended to one of these streams: read their heads again.
                    self.sequences.forget(streams);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match together.commit(&metadata).await {
                Ok(()) => {
                    self.sequences.remember(std::mem::take(&mut stored.heads));
                    if stored.appended > 0 {
                        self.db.signal(crate::store::log::EVENTS_CHANNEL, String::new());
                    }
                    let wrong = refused.iter().filter(|r| r.reason == "wrong_vehicle").count();
                    self.metrics.add("tacho_answers_wrong_vehicle_total", &[], wrong as u64);
                    dead.extend(refused);
                    return Ok(stored);
                }
                Err(TogetherError::Conflict) if attempts < 20 => {}
                Err(TogetherError::Conflict) => {
                    let command = answers.keys().next().copied().unwrap_or_default();
                    let error = "other writers kept changing the commands answered".to_owned();
                    return Err(BatchError::Answer { command, error });
                }
                Err(TogetherError::Database(e)) => return Err(e.into()),
            }
        }
    }

    /// The read models may lag the log: a vehicle they would refuse something (unregistered,
    /// decommissioned, a consent missing) and whose registry or consent streams hold events they
    /// have not applied is decided from its aggregates instead, so no message is refused (and
    /// acknowledged, so lost) because a read model was late.
    /// `locating`: the vehicles whose messages of the batch tell where they are (only they need a
    /// location consent).
    async fn recheck_from_log(
        &self,
        vins: &[String],
        locating: &std::collections::HashSet<&str>,
        access: &mut HashMap<String, facts::Access>,
        at: DateTime<Utc>,
    ) -> Result<(), BatchError> {
        let doubtful: Vec<String> = vins
            .iter()
            .filter(|vin| {
                access.get(*vin).is_none_or(|a| {
                    a.status == "decommissioned"
                        || a.telemetry.is_none()
                        || (a.location.is_none() && locating.contains(vin.as_str()))
                })
            })
            .cloned()
            .collect();
        if doubtful.is_empty() {
            return Ok(());
        }
        let behind = facts::read_models_behind(&self.db, &doubtful).await?;
        for vin in behind {
            let unavailable = |e: String| BatchError::Log { vin: vin.clone(), error: e };
            let vehicle = self.frameworks.stores.load::<Vehicle>(&vin).await.map_err(|e| unavailable(e.to_string()))?;
            if vehicle.status == VehicleStatus::Unknown {
                access.remove(&vin);
                continue;
            }
            let consent = self.frameworks.stores.load::<Consent>(&vin).await.map_err(|e| unavailable(e.to_string()))?;
            let from_log = facts::Access {
                status: vehicle.status.as_str().to_owned(),
                telemetry: consent.allows_anyone(Purpose::TELEMETRY, at),
                location: consent.allows_anyone(Purpose::LOCATION, at),
            };
            access.insert(vin, from_log);
        }
        Ok(())
    }

    /// Registry and consent checks: what passes becomes a fact, the rest a dead letter.
    async fn check(
        &self,
        batch: &[Received],
        pending: Vec<(usize, String, Pending, DateTime<Utc>)>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Vec<Observed>, BatchError> {
        if pending.is_empty() {
            return Ok(vec![]);
        }
        let mut vins: Vec<String> = pending.iter().map(|p| p.1.clone()).collect();
        vins.sort_unstable();
        vins.dedup();
        let now = Utc::now();
        let mut access = facts::access(&self.db, &vins, now).await?;
        // Consents are taken as they were when the batch's first message came in.
        let received = pending.iter().map(|p| p.3).min().unwrap_or(now);
        let locating = pending
            .iter()
            .filter(|(_, _, message, _)| match message {
                Pending::State(report) => report.signals.iter().any(|(name, value)| is_location(name, value)),
                Pending::Event(_, report) => holds_location(&report.data),
                Pending::Connection(_) => false,
            })
            .map(|(_, vin, _, _)| vin.as_str())
            .collect();
        self.recheck_from_log(&vins, &locating, &mut access, received).await?;
        // Signals are counted only for vehicles that report state in this batch: one query, or none.
        let reporting: Vec<String> = pending
            .iter()
            .filter(|p| matches!(p.2, Pending::State(_)))
            .map(|p| p.1.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let counts = match reporting.is_empty() {
            true => HashMap::new(),
            false => facts::signal_counts(&self.db, &reporting).await?,
        };
        let mut budget = SignalBudget::new(counts, self.limits.signals_per_vehicle);
        let mut observed = Vec::with_capacity(pending.len());
        for (i, vin, message, received_at) in pending {
            let publish = &batch[i].publish;
            let refuse = |reason: &'static str, detail: String| DeadLetter {
                topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                // What no consent lets in is not kept, not even as a dead letter.
                payload: if reason == CONSENT_MISSING { Vec::new() } else { publish.payload.to_vec() },
                reason,
                detail,
            };
            let Some(allowed) = access.get(&vin) else {
                dead.push(refuse("unregistered_vehicle", format!("vehicle {vin} is not registered")));
                continue;
            };
            if allowed.status == "decommissioned" {
                dead.push(refuse("decommissioned_vehicle", format!("vehicle {vin} is decommissioned")));
                continue;
            }
            let fact = match message {
                Pending::Connection(report) => VehicleFact::ConnectionChanged {
                    online: report.state == ConnectionState::Online,
                    vehicle_ts: report.ts,
                    received_at,
                },
                Pending::State(_) | Pending::Event(..) if allowed.telemetry.is_none() => {
                    dead.push(refuse(CONSENT_MISSING, format!("no telemetry consent is in force for {vin}")));
                    continue;
                }
                Pending::State(report) => {
                    let (signals, dropped) = without_location(report.signals, allowed.location.is_some());
                    if !dropped.is_empty() {
                        self.metrics.add("tacho_signals_dropped_total", &[], dropped.len() as u64);
                    }
                    if signals.is_empty() {
                        let detail = format!("only position signals and no location consent for {vin}");
                        dead.push(refuse(CONSENT_MISSING, detail));
                        continue;
                    }
                    if let Err(refused) = budget.admit(&self.db, &vin, &signals).await? {
                        dead.push(refuse(refused.reason, refused.detail));
                        continue;
                    }
                    VehicleFact::StateReported {
                        msg_id: report.msg_id,
                        signals,
                        vehicle_ts: report.ts,
                        received_at,
                        consent_version: allowed.telemetry.unwrap_or_default(),
                    }
                }
                Pending::Event(kind, report) => VehicleFact::VehicleEventReported {
                    msg_id: report.msg_id,
                    kind,
                    // Where the vehicle was is kept only with a location consent, as for state.
                    data: if allowed.location.is_some() { report.data } else { redact_location(report.data) },
                    vehicle_ts: report.ts,
                    received_at,
                    consent_version: allowed.telemetry.unwrap_or_default(),
                },
            };
            observed.push(Observed { vin, fact });
        }
        Ok(observed)
    }
}
