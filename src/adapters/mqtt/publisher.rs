//! Publishing with confirmation: a publish counts as done when the broker's PUBACK arrives.
//!
//! rumqttc's `publish().await` returns once the packet is queued and hides the packet id it gets.
//! Each lane here is one connection that has at most one QoS 1 publish outstanding: the next
//! `Outgoing::Publish(pkid)` after a send is ours and the `PubAck` with that pkid confirms it. A lane
//! uses a clean session, and after any failure it drops its connection and opens a new one, so
//! nothing from a failed publish can be sent later and be taken for the next publish's
//! confirmation. A publish whose confirmation is lost is reported as failed and re-published by its
//! caller (at-least-once, never "done" without an acknowledgement). Several lanes give throughput.

use super::broker::{drive, BrokerUrl};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use rumqttc::Outgoing;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long a publish may wait for its PUBACK.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a publish is not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker is not reachable or the connection broke before the PUBACK.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// No PUBACK within [`ACK_TIMEOUT`].
    #[error("no PUBACK within {0:?}")]
    Timeout(Duration),
    /// The broker refused the message.
    #[error("broker refused the publish: {0}")]
    Refused(String),
    /// tacho is shutting down.
    #[error("publisher stopped")]
    Stopped,
}

/// One message to publish at QoS 1.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// MQTT v5 properties.
    pub properties: PublishProperties,
}

/// What the broker said of a publish it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// Taken (PUBACK 0).
    Success,
    /// Taken, but no subscription matched its topic (MQTT v5 PUBACK 16): it reached no one.
    NoMatchingSubscribers,
}

struct Job {
    message: Message,
    done: oneshot::Sender<Result<Acked, PublishError>>,
}

enum LaneEvent {
    Sent(u16),
    Acked(u16, PubAckReason),
    Down(String),
}

/// A pool of publishing connections.
#[derive(Clone)]
pub struct Publisher {
    lanes: std::sync::Arc<Vec<mpsc::Sender<Job>>>,
    next: std::sync::Arc<AtomicUsize>,
}

impl Publisher {
    /// Starts `lanes` connections to `broker`, lane `n` named [`BrokerUrl::client_id`] `pub-{n}`.
    pub fn start(broker: &BrokerUrl, client_prefix: &str, lanes: usize, shutdown: CancellationToken) -> Self {
        let senders = (0..lanes.max(1))
            .map(|n| {
                let (jobs, rx) = mpsc::channel(1024);
                let mut options = broker.options(&broker.client_id(client_prefix, &format!("pub-{n}")));
                options.set_clean_start(true);
                tokio::spawn(lane(options, rx, shutdown.clone()));
                jobs
            })
            .collect();
        Self { lanes: std::sync::Arc::new(senders), next: std::sync::Arc::new(AtomicUsize::new(0)) }
    }

    /// Publishes `message` at QoS 1 and returns once the broker acknowledged it.
    pub async fn publish(&self, message: Message) -> Result<Acked, PublishError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let (done, confirmed) = oneshot::channel();
        self.lanes[n].send(Job { message, done }).await.map_err(|_| PublishError::Stopped)?;
        confirmed.await.map_err(|_| PublishError::Stopped)?
    }
}

/// Owns the event loop: polls it at all times and only forwards what the lane needs.
async fn poll(
    eventloop: rumqttc::v5::EventLoop,
    events: mpsc::UnboundedSender<LaneEvent>,
    shutdown: CancellationToken,
) {
    drive(eventloop, shutdown, |polled| {
        let forwarded = match polled {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => events.send(LaneEvent::Sent(pkid)),
            Ok(Event::Incoming(Packet::PubAck(ack))) => events.send(LaneEvent::Acked(ack.pkid, ack.reason)),
            Ok(_) => Ok(()),
            Err(e) => events.send(LaneEvent::Down(e.to_string())),
        };
        forwarded.is_ok()
    })
    .await
}

/// One connection of a lane: its client, what its event loop forwards, and the polling task.
struct Connection {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<LaneEvent>,
    polling: tokio::task::JoinHandle<()>,
}

impl Connection {
    fn open(options: &rumqttc::v5::MqttOptions, shutdown: &CancellationToken) -> Self {
        let (client, eventloop) = AsyncClient::new(options.clone(), 16);
        let (events_tx, events) = mpsc::unbounded_channel();
        let polling = tokio::spawn(poll(eventloop, events_tx, shutdown.clone()));
        Self { client, events, polling }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket and discards whatever was still queued.
        self.polling.abort();
    }
}

/// Sends one job at a time and waits for its confirmation.
async fn lane(options: rumqttc::v5::MqttOptions, mut jobs: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    let mut connection = Connection::open(&options, &shutdown);
    loop {
        let job = tokio::select! {
            _ = shutdown.cancelled() => return,
            job = jobs.recv() => match job { Some(job) => job, None => return },
        };
        // Whatever the connection reported while idle is history.
        while connection.events.try_recv().is_ok() {}
        let Message { topic, payload, properties } = job.message;
        let sent = connection.client.try_publish_with_properties(
            topic,
            QoS::AtLeastOnce,
            false,
            Bytes::from(payload),
            properties,
        );
        let result = match sent {
            Err(e) => Err(PublishError::Unavailable(e.to_string())),
            Ok(()) => match tokio::time::timeout(ACK_TIMEOUT, confirmation(&mut connection.events)).await {
                Ok(result) => result,
                Err(_) => Err(PublishError::Timeout(ACK_TIMEOUT)),
            },
        };
        if result.is_err() {
            // The failed publish may still sit in this connection: never let it confirm the next one.
            connection = Connection::open(&options, &shutdown);
        }
        let _ = job.done.send(result);
    }
}

async fn confirmation(events: &mut mpsc::UnboundedReceiver<LaneEvent>) -> Result<Acked, PublishError> {
    let mut ours = None;
    while let Some(event) = events.recv().await {
        match event {
            LaneEvent::Sent(pkid) if ours.is_none() => ours = Some(pkid),
            LaneEvent::Sent(_) => {}
            LaneEvent::Acked(pkid, reason) if Some(pkid) == ours => {
                return match reason {
                    PubAckReason::Success => Ok(Acked::Success),
                    PubAckReason::NoMatchingSubscribers => Ok(Acked::NoMatchingSubscribers),
                    other => Err(PublishError::Refused(format!("{other:?}"))),
                };
            }
            LaneEvent::Acked(..) => {}
            LaneEvent::Down(reason) => return Err(PublishError::Unavailable(reason)),
        }
    }
    Err(PublishError::Stopped)
}
