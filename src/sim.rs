//! Simulated vehicles that follow the MQTT contract: Last Will on their connection topic, answers to
//! command requests with configurable latency, failure, rejection and silence rates, state reports
//! at a rate, and an abrupt drop on demand. Used by `tacho sim`, the tests and the benchmark.

use crate::adapters::mqtt::broker::BrokerUrl;
use crate::adapters::mqtt::codec::{CommandRequest, CommandResponse};
use crate::adapters::mqtt::topics;
use crate::domain::command::AnswerStatus;
use chrono::{DateTime, Utc};
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How a simulated vehicle behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Delay before each answer.
    pub latency: Duration,
    /// Share of commands answered `failed` (after `accepted`).
    pub fail_rate: f64,
    /// Share of commands answered `rejected`.
    pub reject_rate: f64,
    /// Share of commands never answered (1.0: the caller answers with [`SimVehicle::respond`]).
    pub silence_rate: f64,
    /// Publish a state report this often.
    pub state_every: Option<Duration>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self { latency: Duration::ZERO, fail_rate: 0.0, reject_rate: 0.0, silence_rate: 0.0, state_every: None }
    }
}

/// Publishes a simulated vehicle has in flight at most.
const IN_FLIGHT: u16 = 16;

/// Vehicles of a fleet connecting at the same time.
const CONNECTING: usize = 100;

/// Requests a simulated vehicle remembers (to tell a repeat from a new command): the latest ones.
const REMEMBERED: usize = 256;

/// A valid (European, no check digit) VIN for simulated vehicle `n`.
pub fn sim_vin(n: u64) -> String {
    format!("WTCSXM0{:010}", n % 10_000_000_000)
}

/// A command request as a vehicle received it, with its MQTT v5 properties.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The payload.
    pub request: CommandRequest,
    /// v5 correlation data (the command id).
    pub correlation_data: Option<Vec<u8>>,
    /// v5 response topic.
    pub response_topic: Option<String>,
    /// v5 message expiry interval, seconds.
    pub message_expiry: Option<u32>,
    /// When the vehicle received it.
    pub received_at: DateTime<Utc>,
    /// Whether it repeats a command id the vehicle had already received: a vehicle executes a
    /// command once and answers a repeat without executing it again.
    pub repeat: bool,
}

struct Shared {
    vin: String,
    client: AsyncClient,
    behaviour: Behaviour,
    requests: Mutex<Vec<ReceivedRequest>>,
    locked: AtomicBool,
    messages: AtomicU64,
}

/// One connected simulated vehicle.
pub struct SimVehicle {
    shared: Arc<Shared>,
    poll: JoinHandle<()>,
    reporter: Option<JoinHandle<()>>,
}

impl SimVehicle {
    /// Connects `vin` (Last Will set), subscribes to its requests and broadcasts, says it is online.
    pub async fn connect(broker: &BrokerUrl, vin: &str, behaviour: Behaviour) -> anyhow::Result<Self> {
        let mut options = broker.options(&format!("sim-{vin}-{}", uuid::Uuid::new_v4().simple()));
        options.set_clean_start(true);
        // A dropped connection ends at once; the keep-alive only finds half-open ones (10,000 vehicles
        // pinging every 5 s would keep the broker busy).
        options.set_keep_alive(Duration::from_secs(30));
        // The session's time: its `online` message and its Last Will carry the same `ts`, so tacho can
        // tell a Last Will of this session from one of an earlier session read late.
        let session = Utc::now();
        options.set_last_will(last_will(vin, session));
        // rumqttc preallocates a slot per publish allowed in flight, 65,535 by default (~13 MB per
        // client): a vehicle has a few in flight at most.
        options.set_outgoing_inflight_upper_limit(IN_FLIGHT);
        let (client, mut eventloop) = AsyncClient::new(options, usize::from(IN_FLIGHT) * 2);
        let shared = Arc::new(Shared {
            vin: vin.to_owned(),
            client: client.clone(),
            behaviour,
            requests: Mutex::new(Vec::new()),
            locked: AtomicBool::new(false),
            messages: AtomicU64::new(0),
        });
        let (ready_tx, ready) = oneshot::channel::<Result<(), String>>();
        let poll_shared = Arc::clone(&shared);
        let poll = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            // Set when the connection broke: the next CONNACK starts a new session.
            let mut reconnecting: Option<DateTime<Utc>> = None;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // Back after a broken connection, as a vehicle would be: subscribe again (the
                        // session is clean) and say online with the new session's time. Never awaited
                        // here: this task must keep polling.
                        if let Some(session) = reconnecting.take() {
                            poll_shared.resume(session);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let shared = Arc::clone(&poll_shared);
                        tokio::spawn(async move { shared.on_message(&publish).await });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                        let session = Utc::now();
                        eventloop.options.set_last_will(last_will(&poll_shared.vin, session));
                        reconnecting = Some(session);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        client.subscribe(format!("vehicles/{vin}/commands/+/request"), QoS::AtLeastOnce).await?;
        client.subscribe("broadcast/#", QoS::AtLeastOnce).await?;
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .map_err(|_| anyhow::anyhow!("simulated vehicle {vin}: no SUBACK within 10 s"))?
            .map_err(|_| anyhow::anyhow!("simulated vehicle {vin}: event loop stopped"))?
            .map_err(|e| anyhow::anyhow!("simulated vehicle {vin} cannot connect: {e}"))?;
        shared.publish(topics::connection(vin), json!({"state": "online", "ts": session})).await?;
        let reporter = shared.behaviour.state_every.map(|every| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if shared.report_state().await.is_err() {
                        return;
                    }
                }
            })
        });
        Ok(Self { shared, poll, reporter })
    }

    /// Connects every vehicle of `fleet` (its broker, its VIN), many at a time, in `fleet`'s order.
    pub async fn connect_fleet(fleet: Vec<(BrokerUrl, String)>, behaviour: &Behaviour) -> anyhow::Result<Vec<Self>> {
        use futures::StreamExt;
        futures::stream::iter(fleet)
            .map(|(broker, vin)| async move { Self::connect(&broker, &vin, behaviour.clone()).await })
            .buffered(CONNECTING)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// The VIN.
    pub fn vin(&self) -> &str {
        &self.shared.vin
    }

    /// Requests received so far (the latest 256).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// State reports and answers published so far.
    pub fn published(&self) -> u64 {
        self.shared.messages.load(Ordering::Relaxed)
    }

    /// Answers command `command_id` of `name` with `status` (and `code`).
    pub async fn respond(
        &self,
        name: &str,
        command_id: uuid::Uuid,
        status: AnswerStatus,
        code: Option<&str>,
    ) -> anyhow::Result<()> {
        self.shared.answer(name, command_id, status, code.map(str::to_owned), None).await
    }

    /// Publishes a state report with `signals`.
    pub async fn report(&self, msg_id: &str, signals: Map<String, Value>) -> anyhow::Result<()> {
        let report = json!({"msg_id": msg_id, "ts": Utc::now(), "signals": signals});
        self.shared.publish(topics::state(&self.shared.vin), report).await
    }

    /// Publishes `payload` on any topic (for malformed-input tests).
    pub async fn publish_raw(&self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        self.shared.client.publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).await?;
        Ok(())
    }

    /// Publishes a reported event.
    pub async fn report_event(&self, kind: &str, msg_id: &str, data: Value) -> anyhow::Result<()> {
        let event = json!({"msg_id": msg_id, "ts": Utc::now(), "data": data});
        self.shared.publish(topics::event(&self.shared.vin, kind), event).await
    }

    /// Drops the connection without DISCONNECT: the broker publishes the Last Will.
    pub fn drop_abruptly(self) {
        if let Some(reporter) = &self.reporter {
            reporter.abort();
        }
        // Aborting the task drops the event loop and with it the socket.
        self.poll.abort();
    }

    /// Says it goes offline, then disconnects cleanly (no Last Will).
    pub async fn disconnect(self) -> anyhow::Result<()> {
        self.shared
            .publish(topics::connection(&self.shared.vin), json!({"state": "offline", "ts": Utc::now()}))
            .await?;
        self.shared.client.disconnect().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.drop_abruptly();
        Ok(())
    }
}

/// A vehicle's Last Will: offline, with the time of the session it ends.
fn last_will(vin: &str, session: DateTime<Utc>) -> LastWill {
    let payload = json!({"state": "offline", "ts": session}).to_string();
    LastWill::new(topics::connection(vin), payload, QoS::AtLeastOnce, false, None)
}

impl Shared {
    /// After a reconnection: subscribes again and says online for `session` (queued, not awaited).
    fn resume(&self, session: DateTime<Utc>) {
        let vin = &self.vin;
        let _ = self.client.try_subscribe(format!("vehicles/{vin}/commands/+/request"), QoS::AtLeastOnce);
        let _ = self.client.try_subscribe("broadcast/#", QoS::AtLeastOnce);
        let online = json!({"state": "online", "ts": session}).to_string();
        let _ = self.client.try_publish(topics::connection(vin), QoS::AtLeastOnce, false, online);
    }

    async fn publish(&self, topic: String, payload: Value) -> anyhow::Result<()> {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.to_string()).await?;
        self.messages.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn on_message(&self, publish: &rumqttc::v5::mqttbytes::v5::Publish) {
        let topic = String::from_utf8_lossy(&publish.topic);
        if !topic.ends_with("/request") {
            return;
        }
        let Ok(request) = serde_json::from_slice::<CommandRequest>(&publish.payload) else {
            tracing::warn!(%topic, "simulated vehicle got a malformed request");
            return;
        };
        let properties = publish.properties.as_ref();
        let received = ReceivedRequest {
            request: request.clone(),
            correlation_data: properties.and_then(|p| p.correlation_data.as_ref()).map(|c| c.to_vec()),
            response_topic: properties.and_then(|p| p.response_topic.clone()),
            message_expiry: properties.and_then(|p| p.message_expiry_interval),
            received_at: Utc::now(),
            repeat: false,
        };
        let repeat = match self.requests.lock() {
            Ok(mut requests) => {
                let repeat = requests.iter().any(|r| r.request.command_id == request.command_id);
                if requests.len() >= REMEMBERED {
                    requests.remove(0);
                }
                requests.push(ReceivedRequest { repeat, ..received });
                repeat
            }
            Err(_) => return,
        };
        if repeat {
            // Delivered again (at-least-once): not executed twice; the answer is said again.
            let (name, id) = (request.name.as_str(), request.command_id);
            if let Err(e) = self.answer(name, id, AnswerStatus::Succeeded, None, Some(json!({"simulated": true}))).await
            {
                tracing::warn!(error = %e, "simulated vehicle could not answer");
            }
            return;
        }
        let b = &self.behaviour;
        let roll: f64 = rand::random();
        if roll < b.silence_rate {
            return;
        }
        tokio::time::sleep(b.latency).await;
        let (name, id) = (request.name.as_str(), request.command_id);
        let outcome = if roll < b.silence_rate + b.reject_rate {
            self.answer(name, id, AnswerStatus::Rejected, Some("not_allowed_now".into()), None).await
        } else {
            let accepted = self.answer(name, id, AnswerStatus::Accepted, None, None).await;
            let done = if roll < b.silence_rate + b.reject_rate + b.fail_rate {
                self.answer(name, id, AnswerStatus::Failed, Some("simulated_failure".into()), None).await
            } else {
                match name {
                    "lock_doors" => self.locked.store(true, Ordering::Relaxed),
                    "unlock_doors" => self.locked.store(false, Ordering::Relaxed),
                    _ => {}
                }
                self.answer(name, id, AnswerStatus::Succeeded, None, Some(json!({"simulated": true}))).await
            };
            accepted.and(done)
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "simulated vehicle could not answer");
        }
    }

    async fn answer(
        &self,
        name: &str,
        command_id: uuid::Uuid,
        status: AnswerStatus,
        code: Option<String>,
        result: Option<Value>,
    ) -> anyhow::Result<()> {
        let response = CommandResponse { command_id, status, code, message: None, result, ts: Utc::now() };
        self.publish(topics::command_response(&self.vin, name), serde_json::to_value(response)?).await
    }

    async fn report_state(&self) -> anyhow::Result<()> {
        let n = self.messages.load(Ordering::Relaxed);
        let signals = json!({
            "Vehicle.Speed": 0,
            "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": self.locked.load(Ordering::Relaxed),
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 80.0 - (n % 50) as f64 * 0.1,
            "Vehicle.CurrentLocation.Latitude": 48.137,
            "Vehicle.CurrentLocation.Longitude": 11.575,
        });
        let report = json!({"msg_id": uuid::Uuid::new_v4().to_string(), "ts": Utc::now(), "signals": signals});
        self.publish(topics::state(&self.vin), report).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn simulated_vins_are_valid() {
        for n in [0, 1, 999, 9_999_999_999] {
            assert!(crate::domain::Vin::parse(&super::sim_vin(n)).is_ok(), "{}", super::sim_vin(n));
        }
    }
}
