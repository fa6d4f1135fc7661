//! The inbound consumer: one persistent MQTT session (QoS 1, manual acks) whose event loop only
//! decodes and hands off. A handler task takes messages in batches: vehicle answers drive their
//! commands, state reports, events and connection changes become facts in the log, everything else
//! becomes a dead letter. A batch is acknowledged to the broker only once it is durably handled, so a
//! crash loses nothing: the broker redelivers to the persistent session.

use super::admission::{valid_msg_id, Limits, SignalBudget};
use super::broker::{backoff, BrokerUrl};
use super::codec::{self, CommandResponse, ConnectionReport, ConnectionState, StateReport, VehicleEventReport};
use super::topics::{self, Inbound};
use crate::domain::command::{CommandCommand, CommandError, VehicleAnswer};
use crate::domain::observation::{without_location, VehicleFact};
use crate::metrics::Metrics;
use crate::store::facts::{self, DeadLetter, Observed};
use crate::store::Db;
use crate::store::Frameworks;
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use futures::StreamExt;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest batch handled in one transaction.
const BATCH: usize = 1000;

/// QoS 1 messages the broker may send before tacho acknowledges them (MQTT v5 receive maximum):
/// the bound on what waits in the handler's queue, so memory stays bounded (at most this many
/// packets of [`super::broker::MAX_PACKET_BYTES`], 72 KiB: about 144 MiB) and a slow database pushes
/// back on the broker, which keeps the rest.
const IN_FLIGHT: u16 = 2 * BATCH as u16;

/// QoS 0 messages (at most once, not counted by the broker against the receive maximum) queued at
/// most; beyond, they are dropped and counted.
const QOS0_QUEUED: usize = BATCH;

/// How the consumer connects.
#[derive(Debug, Clone)]
pub struct InboundOptions {
    /// Client id of the persistent session (stable across restarts, distinct per instance).
    pub client_id: String,
    /// Shared-subscription group (`$share/{group}/...`) when several instances consume.
    pub shared_group: Option<String>,
    /// How long the broker keeps the session while tacho is away, in seconds.
    pub session_expiry_s: u32,
}

/// What the handler needs.
pub struct Handler {
    /// The database.
    pub db: Db,
    /// Frameworks for the vehicles' answers.
    pub frameworks: Arc<Frameworks>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// What one vehicle may send.
    pub limits: Limits,
}

struct Received {
    publish: Publish,
    at: DateTime<Utc>,
}

/// Connects the consumer and starts its two tasks.
pub fn start(broker: &BrokerUrl, options: &InboundOptions, handler: Arc<Handler>, shutdown: CancellationToken) {
    let mut mqtt = broker.options(&options.client_id);
    mqtt.set_clean_start(false);
    mqtt.set_session_expiry_interval(Some(options.session_expiry_s));
    mqtt.set_manual_acks(true);
    // Enough unacknowledged messages in flight to keep a batch filling while the last one commits,
    // and no more.
    mqtt.set_receive_maximum(Some(IN_FLIGHT));
    let (client, eventloop) = AsyncClient::new(mqtt, 64);
    let filters: Vec<Filter> = topics::INBOUND
        .iter()
        .map(|t| match &options.shared_group {
            Some(group) => format!("$share/{group}/{t}"),
            None => (*t).to_owned(),
        })
        .map(|path| Filter::new(path, QoS::AtLeastOnce))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_qos0 = Arc::new(AtomicUsize::new(0));
    let queue = Queue { received: tx, queued_qos0: Arc::clone(&queued_qos0), metrics: Arc::clone(&handler.metrics) };
    tokio::spawn(poll(eventloop, client.clone(), filters, queue, shutdown.clone()));
    tokio::spawn(handle(client, rx, queued_qos0, handler, shutdown));
}

/// The handler's queue, as the polling task fills it: never awaited on (the event loop must keep
/// turning), bounded by the receive maximum for QoS 1 and by [`QOS0_QUEUED`] for QoS 0.
struct Queue {
    received: mpsc::UnboundedSender<Received>,
    queued_qos0: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Queues `publish`; false when the handler is gone.
    fn push(&self, publish: Publish) -> bool {
        if publish.qos == QoS::AtMostOnce {
            if self.queued_qos0.load(Ordering::Relaxed) >= QOS0_QUEUED {
                self.metrics.inc("tacho_mqtt_dropped_total", &[("qos", "0")]);
                return true;
            }
            self.queued_qos0.fetch_add(1, Ordering::Relaxed);
        }
        self.received.send(Received { publish, at: Utc::now() }).is_ok()
    }
}

async fn poll(
    mut eventloop: rumqttc::v5::EventLoop,
    client: AsyncClient,
    filters: Vec<Filter>,
    queue: Queue,
    shutdown: CancellationToken,
) {
    let mut failures = 0;
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => return,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if !queue.push(publish) {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                tracing::info!(session_present = ack.session_present, "MQTT consumer connected");
                // Never await on the polling task: subscribe from a task of its own, which waits for
                // room in the client's channel (the handler's acks share it).
                let (client, filters) = (client.clone(), filters.clone());
                tokio::spawn(async move {
                    if let Err(e) = client.subscribe_many(filters).await {
                        tracing::error!(error = %e, "cannot subscribe to vehicle topics");
                    }
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, attempt = failures, "MQTT consumer disconnected; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
                failures += 1;
            }
        }
    }
}

async fn handle(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<Received>,
    queued_qos0: Arc<AtomicUsize>,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            first = rx.recv() => match first { Some(m) => m, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let qos0 = batch.iter().filter(|m| m.publish.qos == QoS::AtMostOnce).count();
        queued_qos0.fetch_sub(qos0, Ordering::Relaxed);
        let mut failures = 0;
        while let Err(e) = handler.handle_batch(&batch).await {
            failures += 1;
            tracing::error!(error = %e, messages = batch.len(), failures, "inbound batch not stored; retrying");
            tokio::select! {
                // Unacknowledged: the broker redelivers them to the session after a restart.
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff(failures)) => {}
            }
        }
        // In order of receipt, as MQTT requires for QoS 1.
        for message in &batch {
            if let Err(e) = client.ack(&message.publish).await {
                tracing::warn!(error = %e, "cannot acknowledge an inbound message");
            }
        }
    }
}

/// Why a batch could not be handled now; it is retried, unacknowledged.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    /// The store failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
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
    async fn handle_batch(&self, batch: &[Received]) -> Result<(), BatchError> {
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
                Inbound::Connection { vin } => codec::decode::<ConnectionReport>(payload).map(|r| {
                    pending.push((i, vin.to_string(), Pending::Connection(r), message.at));
                }),
            };
            if let Err(refused) = decoded {
                dead.push(refuse(refused.reason, refused.detail));
            }
        }

        self.record_answers(batch, answers, &mut dead).await?;
        let observed = self.check(batch, pending, &mut dead).await?;
        for letter in &dead {
            self.metrics.inc("tacho_dead_letters_total", &[("reason", letter.reason)]);
        }
        let appended = facts::store(&self.db, &observed, &dead).await?;
        self.metrics.add("tacho_facts_appended_total", &[], appended as u64);
        Ok(())
    }

    /// Vehicle answers, each command's in order, commands concurrently.
    async fn record_answers(
        &self,
        batch: &[Received],
        answers: BTreeMap<uuid::Uuid, Vec<(usize, String, VehicleAnswer)>>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(), BatchError> {
        let outcomes = futures::stream::iter(answers)
            .map(|(id, answers)| async move {
                let mut refused = Vec::new();
                for (i, topic, answer) in answers {
                    let command = CommandCommand::RecordAnswer(answer);
                    let metadata = HashMap::from([
                        ("actor".to_owned(), "vehicle".to_owned()),
                        ("source".to_owned(), "mqtt".to_owned()),
                    ]);
                    match self.frameworks.execute(&self.frameworks.commands, &id.to_string(), command, &metadata).await
                    {
                        Ok(()) => {}
                        Err(AggregateError::UserError(CommandError::NotFound)) => {
                            refused.push((i, topic, "unknown_command", format!("no command {id}")));
                        }
                        Err(AggregateError::UserError(e @ CommandError::WrongVehicle { .. })) => {
                            self.metrics.inc("tacho_answers_wrong_vehicle_total", &[]);
                            refused.push((i, topic, "wrong_vehicle", e.to_string()));
                        }
                        Err(AggregateError::UserError(e)) => refused.push((i, topic, "refused", e.to_string())),
                        // Transient: the batch is retried, unacknowledged.
                        Err(e) if transient(&e) => {
                            return Err(BatchError::Answer { command: id, error: e.to_string() });
                        }
                        // Anything else would fail every retry and stall every vehicle's traffic.
                        Err(e) => refused.push((i, topic, "unprocessable", e.to_string())),
                    }
                }
                Ok(refused)
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        for outcome in outcomes {
            for (i, topic, reason, detail) in outcome? {
                dead.push(DeadLetter { topic, payload: batch[i].publish.payload.to_vec(), reason, detail });
            }
        }
        Ok(())
    }

    /// Registry and consent checks: what passes becomes a fact, the rest a dead letter.
    async fn check(
        &self,
        batch: &[Received],
        pending: Vec<(usize, String, Pending, DateTime<Utc>)>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Vec<Observed>, sqlx::Error> {
        if pending.is_empty() {
            return Ok(vec![]);
        }
        let mut vins: Vec<String> = pending.iter().map(|p| p.1.clone()).collect();
        vins.sort_unstable();
        vins.dedup();
        let access = facts::access(&self.db, &vins, Utc::now()).await?;
        let mut budget =
            SignalBudget::new(facts::signal_counts(&self.db, &vins).await?, self.limits.signals_per_vehicle);
        let mut observed = Vec::with_capacity(pending.len());
        for (i, vin, message, received_at) in pending {
            let publish = &batch[i].publish;
            let refuse = |reason: &'static str, detail: String| DeadLetter {
                topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                payload: publish.payload.to_vec(),
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
                    dead.push(refuse("consent_missing", format!("no telemetry consent is in force for {vin}")));
                    continue;
                }
                Pending::State(report) => {
                    let (signals, dropped) = without_location(report.signals, allowed.location.is_some());
                    if !dropped.is_empty() {
                        self.metrics.add("tacho_signals_dropped_total", &[], dropped.len() as u64);
                    }
                    if signals.is_empty() {
                        let detail = format!("only position signals and no location consent for {vin}");
                        dead.push(refuse("consent_missing", detail));
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
                    data: report.data,
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
