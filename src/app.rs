//! The composition root: pool, migrations, frameworks, subscribers, HTTP server, shutdown.

use crate::adapters::http::{self, capacity::Capacity, server, state::AppState};
use crate::adapters::mqtt::broker::BrokerUrl;
use crate::adapters::mqtt::dynsec::{Control, DYNAMIC_SECURITY, PINS};
use crate::adapters::mqtt::embedded as embedded_broker;
use crate::adapters::mqtt::inbound::{self, InboundOptions};
use crate::adapters::mqtt::link::MqttLink;
use crate::adapters::mqtt::publisher::Publisher;
use crate::adapters::mqtt::rights::DynsecRights;
use crate::config::{BrokerRights, Config, Mqtt};
use crate::domain::observation::VehicleFact;
use crate::metrics::Metrics;
use crate::processes::dispatcher::Dispatcher;
use crate::processes::rights::DeviceRights;
use crate::processes::sweep;
use crate::processes::vehicle::VehicleProcesses;
use crate::projections::commands::CommandsProjection;
use crate::projections::consents::ConsentsProjection;
use crate::projections::devices::DevicesProjection;
use crate::projections::seals::SealProjection;
use crate::projections::state::StateProjection;
use crate::projections::vehicles::VehiclesProjection;
use crate::projections::webhooks::WebhooksProjection;
use crate::projections::{Projection, Subscriptions};
use crate::store::facts::{self, Observed};
use crate::store::leases::Leases;
use crate::store::{postgres, sqlite, Db, Frameworks};
use anyhow::Context;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Every read model tacho keeps.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(VehiclesProjection),
        Arc::new(DevicesProjection),
        Arc::new(ConsentsProjection),
        Arc::new(CommandsProjection),
        Arc::new(WebhooksProjection),
        Arc::new(StateProjection),
        Arc::new(SealProjection::default()),
    ]
}

/// A running tacho: its address, state and the token that stops it.
pub struct Running {
    /// Where HTTP listens.
    pub addr: std::net::SocketAddr,
    /// Shared state (tests use its store and subscriptions).
    pub state: AppState,
    /// The broker tacho uses, `None` without MQTT.
    pub broker: Option<BrokerUrl>,
    /// Cancel to shut down.
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Waits for everything to stop (after `shutdown` was canceled): requests in flight are
    /// answered, each subscriber finishes its batch (a batch is one transaction: applied whole or
    /// not at all), then the store is closed.
    pub async fn join(self) -> anyhow::Result<()> {
        self.server.await.context("HTTP server task panicked")?.context("HTTP server failed")?;
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.state.db.close().await;
        Ok(())
    }
}

/// Connects and migrates the store of `config` for a running tacho: PostgreSQL for a `postgres://`
/// URL, else SQLite (one tacho per file).
pub async fn database(config: &Config) -> anyhow::Result<Db> {
    open(config, sqlite::Access::Exclusive).await
}

/// The same for a maintenance command that may run beside a tacho (`audit verify`, `projections
/// rebuild`).
pub async fn database_for_maintenance(config: &Config) -> anyhow::Result<Db> {
    open(config, sqlite::Access::Shared).await
}

async fn open(config: &Config, access: sqlite::Access) -> anyhow::Result<Db> {
    let url = config.database_url.expose_secret();
    if config.sqlite_path()?.is_some() {
        let embedded = sqlite::connect(url, config.database_max_connections, access).await?;
        sqlite::migrate(&embedded).await?;
        return Ok(Db::Sqlite(embedded));
    }
    let pool = postgres::connect(url, config.database_max_connections).await?;
    postgres::migrate(&pool).await?;
    Ok(Db::Postgres(pool))
}

/// The broker of `config`, starting the embedded one when that is the choice.
pub async fn broker(config: &Config, db: &Db) -> anyhow::Result<Option<BrokerUrl>> {
    Ok(match config.mqtt()? {
        Mqtt::Off => None,
        Mqtt::External(url) => Some(url),
        Mqtt::Embedded(addr) => {
            if !db.is_embedded() {
                tracing::warn!(
                    "PostgreSQL with the embedded MQTT broker: each instance runs a broker of its own; \
                     set TACHO_MQTT_URL to the vehicles' broker in production"
                );
            }
            let addr = tokio::task::spawn_blocking(move || embedded_broker::start(addr))
                .await
                .context("embedded broker start-up panicked")??;
            disconnect_all(db).await.context("cannot record the vehicles' dropped connections")?;
            Some(BrokerUrl::local(addr))
        }
    })
}

/// A new embedded broker has no connections: every vehicle the log last saw connected lost
/// its connection when the last one stopped, and no Last Will could tell. Recorded as such, it
/// interrupts their commands in flight, as a Last Will would.
async fn disconnect_all(db: &Db) -> anyhow::Result<()> {
    // From the log, not the registry, which may not have applied the last connection changes yet.
    let vins = facts::online_in_log(db).await?;
    let now = chrono::Utc::now();
    let dropped: Vec<Observed> = vins
        .into_iter()
        .map(|vin| Observed {
            vin,
            fact: VehicleFact::ConnectionChanged { online: false, vehicle_ts: None, received_at: now },
        })
        .collect();
    if !dropped.is_empty() {
        tracing::info!(vehicles = dropped.len(), "recorded as disconnected: the embedded broker restarted");
        facts::store(db, &dropped, &[], &[]).await?;
    }
    Ok(())
}

/// Starts tacho on `listener` (bind port 0 in tests).
pub async fn start(config: &Config, listener: TcpListener) -> anyhow::Result<Running> {
    let keys = config.auth_keys()?;
    let db = database(config).await?;
    let broker = broker(config, &db).await?;
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let frameworks = Arc::new(Frameworks::new(&db));
    let instance = config.instance_name();
    // Leases name this run of the instance: a restarted instance waits for its old leases to expire.
    let leases = Leases::new(db.clone(), &format!("{instance}/{}", Uuid::new_v4().simple()));
    let mut subscriptions =
        Subscriptions::new(db.clone(), projections()).with_metrics(Arc::clone(&metrics)).with_leases(leases.clone());
    let mut tasks = Vec::new();
    let mut publisher = None;
    let mut dispatcher = None;
    let mut broker_rights = None;
    let mut inbound_refused = None;
    if let Some(broker) = &broker {
        let lanes = Publisher::start(broker, &instance, config.mqtt_publish_lanes, shutdown.clone());
        let link = MqttLink { publisher: lanes.clone(), metrics: Arc::clone(&metrics) };
        let sender = Arc::new(Dispatcher::new(db.clone(), Arc::clone(&frameworks), Arc::new(link)));
        let processes =
            VehicleProcesses { db: db.clone(), frameworks: Arc::clone(&frameworks), dispatcher: Arc::clone(&sender) };
        let mut processes: Vec<Arc<dyn crate::projections::Process>> =
            vec![Arc::clone(&sender) as _, Arc::new(processes)];
        broker_rights = keep_broker_rights(config, broker, &instance, &shutdown);
        if let Some((control, pins)) = &broker_rights {
            let keeper = Arc::new(DynsecRights { control: control.clone(), pins: pins.clone() });
            processes.push(Arc::new(DeviceRights::new(db.clone(), Arc::clone(&frameworks), keeper)));
        }
        subscriptions = subscriptions.with_processes(processes);
        let handler = inbound::Handler {
            db: db.clone(),
            frameworks: Arc::clone(&frameworks),
            metrics: Arc::clone(&metrics),
            limits: config.vehicle_limits(),
            sequences: crate::store::facts::Sequences::new(config.mqtt_shared_group.is_none()),
        };
        let options = InboundOptions {
            client_id: broker.client_id(&instance, "in"),
            shared_group: config.mqtt_shared_group.clone(),
            session_expiry_s: config.mqtt_session_expiry_s,
        };
        inbound_refused = Some(inbound::start(broker, &options, Arc::new(handler), shutdown.clone()));
        publisher = Some(lanes);
        dispatcher = Some(sender);
    }
    subscriptions.find_new_read_models().await.context("cannot list the read models to fill")?;
    let subscriptions = Arc::new(subscriptions);
    tasks.extend(subscriptions.start(shutdown.clone()));
    let retention = config.retention();
    tasks.push(tokio::spawn(sweep::sweep(
        db.clone(),
        Arc::clone(&frameworks),
        dispatcher,
        retention,
        leases.clone(),
        subscriptions.progress(CommandsProjection::NAME).context("the commands read model is one of tacho's")?,
        shutdown.clone(),
    )));
    let deliverer = crate::webhooks::deliver::Deliverer::new(
        db.clone(),
        Arc::clone(&frameworks),
        Arc::clone(&subscriptions),
        leases.clone(),
        config.webhook_settings(),
        Arc::clone(&metrics),
    );
    tasks.push(tokio::spawn(deliverer.run(shutdown.clone())));
    tasks.push(tokio::spawn(leases.keep(shutdown.clone())));
    let (command_changes, _) = broadcast::channel(1024);
    tasks.push(tokio::spawn(relay_command_changes(db.clone(), command_changes.clone(), shutdown.clone())));
    let public_mqtt_url = match (&config.public_mqtt_url, &broker) {
        (Some(url), _) => url.clone(),
        (None, Some(broker)) => broker.to_string(),
        (None, None) => String::new(),
    };
    let (total, per_caller) = (config.http_max_streams, config.http_max_streams_per_caller);
    let streams = Capacity::new("event streams", total, per_caller, Arc::clone(&metrics));
    let long_polls = Capacity::new("long polls", total, per_caller, Arc::clone(&metrics));
    let state = AppState {
        db: db.clone(),
        frameworks,
        subscriptions,
        auth: Arc::new(keys),
        command_changes,
        public_mqtt_url: public_mqtt_url.into(),
        metrics,
        publisher,
        idempotency_key_ttl: retention.idempotency_keys,
        streams,
        long_polls,
        request_timeout: config.server_limits().request_timeout,
        ready_max_lag: Duration::from_secs(config.ready_max_lag_s),
        broker_rights: broker_rights.map(|(control, pins)| vec![control, pins]).unwrap_or_default(),
        inbound_refused,
        webhook_allowed: config.webhook_allowed().into(),
    };
    let addr = listener.local_addr().context("listener has no address")?;
    let router = http::router(state.clone());
    let stop = shutdown.clone();
    let limits = config.server_limits();
    let server = tokio::spawn(server::serve(listener, router, limits, stop, Duration::from_secs(10)));
    Ok(Running { addr, state, broker, shutdown, tasks, server })
}

/// The control connection through which tacho keeps the devices' rights at `broker`, when it is
/// configured to; says at once, and in the log, when the broker does not answer for them. Without it,
/// says plainly that the broker is not kept secure by tacho.
fn keep_broker_rights(
    config: &Config,
    broker: &BrokerUrl,
    instance: &str,
    shutdown: &CancellationToken,
) -> Option<(Control, Control)> {
    if config.broker_rights == BrokerRights::None {
        if matches!(config.mqtt(), Ok(Mqtt::Embedded(_))) {
            tracing::warn!(
                "the embedded broker authenticates no one: any client that reaches {broker} can act as any vehicle \
                 (it listens on loopback by default; production uses an external broker with device certificates)"
            );
        } else {
            tracing::warn!(
                "TACHO_BROKER_RIGHTS=none: tacho does not manage the devices' rights at {broker}; unless the broker \
                 authenticates devices and limits them to their own topics, any client can act as any vehicle"
            );
        }
        return None;
    }
    if !broker.is_secure() {
        tracing::warn!("device rights are kept at {broker}, but tacho's own connection to it is not TLS");
    }
    let control = Control::start(broker, &broker.client_id(instance, "rights"), DYNAMIC_SECURITY, shutdown.clone());
    let pins = Control::start(broker, &broker.client_id(instance, "pins"), PINS, shutdown.clone());
    tokio::spawn(probe_broker_rights(control.clone(), pins.clone(), shutdown.clone()));
    Some((control, pins))
}

/// Asks the broker's plugin for an answer at start-up and every 30 s (on every instance, also those
/// that do not hold the rights process's lease), so the log and `/readyz` say when it stops answering.
async fn probe_broker_rights(control: Control, pins: Control, shutdown: CancellationToken) {
    let mut answered = None;
    loop {
        let mut probe = control.request(vec![serde_json::json!({"command": "getDefaultACLAccess"})]).await;
        if probe.is_ok() {
            probe = pins.request(vec![serde_json::json!({"command": "marked"})]).await;
        }
        match (&probe, answered) {
            (Ok(_), None | Some(false)) => {
                tracing::info!("the broker's Dynamic Security and pin plugins answer: tacho keeps the devices' rights")
            }
            (Err(e), None | Some(true)) => tracing::error!(error = %e, "cannot keep the devices' rights at the broker"),
            _ => {}
        }
        answered = Some(probe.is_ok());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// Relays the commands projection's notifications (sent on commit) to long polls and SSE.
async fn relay_command_changes(db: Db, changes: broadcast::Sender<Uuid>, shutdown: CancellationToken) {
    let relay = |payload: &str| {
        if let Ok(id) = Uuid::parse_str(payload) {
            let _ = changes.send(id);
        }
    };
    db.listen(CommandsProjection::CHANNEL, relay, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_names_the_read_models_it_reads() {
        let names: Vec<&str> = projections().iter().map(|p| p.name()).collect();
        let (registry, consents) = facts::ACCESS_READ_MODELS;
        assert_eq!((registry, consents), (VehiclesProjection::NAME, ConsentsProjection::NAME));
        assert!(names.contains(&registry) && names.contains(&consents));
    }
}
