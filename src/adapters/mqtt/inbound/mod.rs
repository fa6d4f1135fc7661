//! The inbound consumer: one persistent MQTT session (QoS 1, manual acks) whose event loop only
//! decodes and hands off. A handler task takes messages in batches: vehicle answers drive their
//! commands, state reports, events and connection changes become facts in the log, everything else
//! becomes a dead letter. A batch is acknowledged to the broker only once it is durably handled, so a
//! crash loses nothing: the broker redelivers to the persistent session.

use super::admission::Limits;
mod batch;

use super::broker::{backoff, drive, BrokerUrl};
use super::topics;
use crate::metrics::Metrics;
use crate::store::Db;
use crate::store::Frameworks;
use chrono::{DateTime, Utc};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
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
    /// The last sequences of the vehicles' fact streams this instance committed.
    pub sequences: crate::store::facts::Sequences,
}

struct Received {
    publish: Publish,
    at: DateTime<Utc>,
}

/// Connects the consumer and starts its two tasks.
/// How long the consumer waits before asking again for subscriptions the broker refused.
const RESUBSCRIBE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the consumer; what it returns tells which of its subscriptions the broker refused (`None`
/// while it has them all).
pub fn start(
    broker: &BrokerUrl,
    options: &InboundOptions,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
) -> watch::Receiver<Option<String>> {
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
    let (refused_tx, refused) = watch::channel(None);
    tokio::spawn(poll(eventloop, client.clone(), filters, queue, refused_tx, shutdown.clone()));
    tokio::spawn(handle(client, rx, queued_qos0, handler, shutdown));
    refused
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
    eventloop: rumqttc::v5::EventLoop,
    client: AsyncClient,
    filters: Vec<Filter>,
    queue: Queue,
    refusals: watch::Sender<Option<String>>,
    shutdown: CancellationToken,
) {
    drive(eventloop, shutdown, |polled| {
        match polled {
            Ok(Event::Incoming(Packet::Publish(publish))) => return queue.push(publish),
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
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
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused: Vec<_> = filters
                    .iter()
                    .zip(&ack.return_codes)
                    .filter(|(_, code)| !matches!(code, SubscribeReasonCode::Success(_)))
                    .map(|(filter, code)| format!("{} ({code:?})", filter.path))
                    .collect();
                if !refused.is_empty() {
                    queue.metrics.inc("tacho_mqtt_subscriptions_refused_total", &[]);
                    tracing::error!(
                        refused = %refused.join(", "),
                        "the broker refused tacho's subscriptions to vehicle topics: tacho lacks the right, and \
                         hears nothing from those vehicles; asking again in {RESUBSCRIBE_AFTER:?}"
                    );
                    // The right may be granted live (the plugin changes without a restart): ask again.
                    let (client, filters) = (client.clone(), filters.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                        let _ = client.subscribe_many(filters).await;
                    });
                }
                refusals.send_replace((!refused.is_empty()).then(|| refused.join(", ")));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "MQTT consumer disconnected; reconnecting"),
        }
        true
    })
    .await
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
            if shutdown.is_cancelled() {
                // Unacknowledged: the broker redelivers them to the session after a restart.
                return;
            }
            failures += 1;
            tracing::error!(error = %e, messages = batch.len(), failures, "inbound batch not stored; retrying");
            tokio::select! {
                // Unacknowledged: the broker redelivers them to the session after a restart.
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff(failures)) => {}
            }
        }
        // In order of receipt, as MQTT requires for QoS 1. A connection gone (a shutdown, the broker
        // restarting) takes them all: the broker delivers them again; said once per batch.
        for message in &batch {
            if let Err(e) = client.ack(&message.publish).await {
                tracing::warn!(error = %e, messages = batch.len(), "cannot acknowledge a stored batch; the broker delivers it again");
                break;
            }
        }
    }
}
