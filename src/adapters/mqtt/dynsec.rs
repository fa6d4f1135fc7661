//! Mosquitto plugins driven through their control topics: tacho's client publishes a list of
//! commands on `$CONTROL/<plugin>/v1` and the plugin answers, to that client only, on
//! `.../response`, one response per command, in order. Two plugins speak it: Mosquitto's Dynamic
//! Security ([`DYNAMIC_SECURITY`], JSON commands) and tacho's own certificate pins ([`PINS`],
//! `broker/tacho_pins.c`, a line per command), both answering in the same JSON.
//!
//! One connection, its event loop polled at all times by its own task; one request at a time. A
//! request that gets no answer (plugin missing, tacho lacking the right, broker down) fails after
//! [`ANSWER_TIMEOUT`], and [`Control::health`] says why.

use super::broker::{drive, BrokerUrl};
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio_util::sync::CancellationToken;

/// A broker plugin tacho drives.
#[derive(Debug, Clone, Copy)]
pub struct Plugin {
    /// Its name, for people.
    pub name: &'static str,
    /// Where commands go.
    pub topic: &'static str,
    /// Where it answers.
    pub response_topic: &'static str,
    /// A request's payload: the commands, each tagged.
    encode: fn(&[Value]) -> Result<Vec<u8>, String>,
}

/// Mosquitto's Dynamic Security plugin: `{"commands":[{"command":..,...},...]}`.
pub const DYNAMIC_SECURITY: Plugin = Plugin {
    name: "Mosquitto's Dynamic Security plugin",
    topic: "$CONTROL/dynamic-security/v1",
    response_topic: "$CONTROL/dynamic-security/v1/response",
    encode: |commands| serde_json::to_vec(&Commands { commands }).map_err(|e| e.to_string()),
};

/// tacho's certificate pins (`broker/tacho_pins.c`): a tag line, then `COMMAND [ARGS...]` lines
/// (`pin USERNAME THUMBPRINT`, `unpin USERNAME`, `mark`, `marked`).
pub const PINS: Plugin = Plugin {
    name: "tacho's certificate pin plugin (tacho_pins.so)",
    topic: "$CONTROL/tacho-pins/v1",
    response_topic: "$CONTROL/tacho-pins/v1/response",
    encode: |commands| {
        let tag = commands.first().and_then(|c| c["correlationData"].as_str()).unwrap_or_default();
        let mut text = format!("{tag}\n");
        for command in commands {
            let words: Vec<&str> =
                ["command", "username", "thumbprint"].iter().filter_map(|k| command[k].as_str()).collect();
            if words.iter().any(|w| w.is_empty() || w.contains(char::is_whitespace)) {
                return Err(format!("a pin command takes plain words: {command}"));
            }
            text.push_str(&words.join(" "));
            text.push('\n');
        }
        Ok(text.into_bytes())
    },
};

/// How long a request waits for the plugin's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// One command's answer: `error` set when the plugin refused it.
#[derive(Debug, Clone, Deserialize)]
pub struct Answer {
    /// The command answered.
    pub command: String,
    /// The plugin's refusal, e.g. `Client already exists`.
    pub error: Option<String>,
    /// What a `get...` command returns.
    pub data: Option<Value>,
    /// The request's tag, echoed.
    #[serde(rename = "correlationData")]
    pub correlation_data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Answers {
    responses: Vec<Answer>,
}

#[derive(Serialize)]
struct Commands<'a> {
    commands: &'a [Value],
}

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// No answer in time.
    #[error(
        "no answer on {answers} within {after:?}: is {name} loaded, and may tacho's client publish on {topic} and \
         subscribe to (and receive) {answers}?", answers = .0.response_topic, after = .1, name = .0.name, topic = .0.topic
    )]
    NoAnswer(Plugin, Duration),
    /// No connection to the broker.
    #[error("not connected to the broker")]
    NotConnected,
    /// The broker refused tacho's subscription to the answers.
    #[error("the broker refused tacho's subscription to {answers} ({why}): tacho lacks the right", answers = .0.response_topic, why = .1)]
    Refused(Plugin, String),
    /// The answer did not match the request.
    #[error("unexpected answer from {name}: {why}", name = .0.name, why = .1)]
    Garbled(Plugin, String),
    /// tacho is stopping.
    #[error("stopped")]
    Stopped,
}

/// What the connection last knew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not connected yet, or no request yet.
    Starting,
    /// The last request was answered.
    Answering,
    /// The last request found no connection to the broker (it is down or restarting).
    Unreachable,
    /// The last request reached the broker and failed: the plugin is missing or tacho lacks the
    /// right (a set-up to fix, not a passing fault): why.
    Failing(String),
}

struct Request {
    commands: Vec<Value>,
    reply: oneshot::Sender<Result<Vec<Answer>, ControlError>>,
}

/// A handle on the control connection.
#[derive(Clone)]
pub struct Control {
    requests: mpsc::Sender<Request>,
    health: watch::Receiver<Health>,
    connections: watch::Receiver<u64>,
}

impl Control {
    /// Connects as `client_id` to drive `plugin`, and serves requests until `shutdown`.
    pub fn start(broker: &BrokerUrl, client_id: &str, plugin: Plugin, shutdown: CancellationToken) -> Self {
        let mut options = broker.options(client_id);
        options.set_clean_start(true);
        // A handful of publishes in flight at most: keep the preallocated window small.
        options.set_outgoing_inflight_upper_limit(8);
        let (client, eventloop) = AsyncClient::new(options, 16);
        let (answers_tx, answers_rx) = mpsc::channel(64);
        let (subscribed_tx, subscribed_rx) = watch::channel(Subscribed::No);
        let (connections_tx, connections) = watch::channel(0);
        let (health_tx, health) = watch::channel(Health::Starting);
        let (requests, requests_rx) = mpsc::channel(16);
        let answering =
            Answering { plugin, answers: answers_tx, subscribed: subscribed_tx, connections: connections_tx };
        tokio::spawn(poll(eventloop, client.clone(), answering, shutdown.clone()));
        let serving =
            Serving { plugin, client, answers: Mutex::new(answers_rx), subscribed: subscribed_rx, health: health_tx };
        tokio::spawn(serve(Arc::new(serving), requests_rx, shutdown));
        Self { requests, health, connections }
    }

    /// Sends `commands` and returns the plugin's answers, one per command, in order.
    pub async fn request(&self, commands: Vec<Value>) -> Result<Vec<Answer>, ControlError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { commands, reply }).await.map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// What the connection last knew.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// How many times the connection has (re)connected: a change means the broker may have restarted.
    pub fn connections(&self) -> u64 {
        *self.connections.borrow()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subscribed {
    No,
    Yes,
    Refused(String),
}

struct Serving {
    plugin: Plugin,
    client: AsyncClient,
    answers: Mutex<mpsc::Receiver<Vec<u8>>>,
    subscribed: watch::Receiver<Subscribed>,
    health: watch::Sender<Health>,
}

async fn serve(serving: Arc<Serving>, mut requests: mpsc::Receiver<Request>, shutdown: CancellationToken) {
    // Tags unique to this run: a late answer meant for an earlier run's request never matches.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut tag = 0u64;
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            request = requests.recv() => match request { Some(request) => request, None => return },
        };
        tag += 1;
        let tagged = format!("{run}-{tag}");
        let result = match tokio::time::timeout(ANSWER_TIMEOUT, serving.exchange(request.commands, &tagged)).await {
            Ok(result) => result,
            Err(_) if *serving.subscribed.borrow() == Subscribed::No => Err(ControlError::NotConnected),
            Err(_) => Err(ControlError::NoAnswer(serving.plugin, ANSWER_TIMEOUT)),
        };
        serving.health.send_replace(match &result {
            Ok(_) => Health::Answering,
            Err(ControlError::NotConnected | ControlError::Stopped) => Health::Unreachable,
            Err(e) => Health::Failing(e.to_string()),
        });
        let _ = request.reply.send(result);
    }
}

impl Serving {
    /// One request: wait for the subscription to the answers, publish, read answers until those
    /// tagged `tag` (earlier requests' late answers are passed over).
    async fn exchange(&self, mut commands: Vec<Value>, tag: &str) -> Result<Vec<Answer>, ControlError> {
        let mut subscribed = self.subscribed.clone();
        let state = subscribed.wait_for(|s| *s != Subscribed::No).await.map_err(|_| ControlError::Stopped)?.clone();
        if let Subscribed::Refused(reason) = state {
            return Err(ControlError::Refused(self.plugin, reason));
        }
        for command in &mut commands {
            command["correlationData"] = Value::String(tag.to_owned());
        }
        let payload = (self.plugin.encode)(&commands).map_err(|e| ControlError::Garbled(self.plugin, e))?;
        let mut answers = self.answers.lock().await;
        while answers.try_recv().is_ok() {}
        self.client
            .publish(self.plugin.topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|_| ControlError::Stopped)?;
        loop {
            let raw = answers.recv().await.ok_or(ControlError::Stopped)?;
            let Ok(Answers { responses }) = serde_json::from_slice::<Answers>(&raw) else { continue };
            if responses.first().and_then(|a| a.correlation_data.as_deref()) != Some(tag) {
                continue;
            }
            if responses.len() != commands.len() {
                return Err(ControlError::Garbled(
                    self.plugin,
                    format!("{} answers to {} commands", responses.len(), commands.len()),
                ));
            }
            return Ok(responses);
        }
    }
}

/// What the polling task tells the serving one.
struct Answering {
    plugin: Plugin,
    answers: mpsc::Sender<Vec<u8>>,
    subscribed: watch::Sender<Subscribed>,
    connections: watch::Sender<u64>,
}

/// Polls the event loop at all times: subscribes to the answers on every connection, forwards them.
async fn poll(eventloop: rumqttc::v5::EventLoop, client: AsyncClient, to: Answering, shutdown: CancellationToken) {
    drive(eventloop, shutdown, |polled| {
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                to.subscribed.send_replace(Subscribed::No);
                to.connections.send_modify(|n| *n += 1);
                let _ = client.try_subscribe(to.plugin.response_topic, QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack.return_codes.iter().find(|c| !matches!(c, SubscribeReasonCode::Success(_)));
                to.subscribed.send_replace(match refused {
                    None => Subscribed::Yes,
                    Some(code) => Subscribed::Refused(format!("{code:?}")),
                });
            }
            Ok(Event::Incoming(Packet::Publish(publish)))
                if publish.topic.as_ref() == to.plugin.response_topic.as_bytes() =>
            {
                // A full queue means no one waits for these: drop them.
                let _ = to.answers.try_send(publish.payload.to_vec());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, plugin = to.plugin.name, "broker control connection down");
                to.subscribed.send_replace(Subscribed::No);
            }
        }
        true
    })
    .await
}
