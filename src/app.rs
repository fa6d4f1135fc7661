//! The composition root: pool, migrations, frameworks, subscribers, HTTP server, shutdown.

use crate::adapters::http::{self, auth::AuthKeys, state::AppState};
use crate::adapters::mqtt::dispatcher::Dispatcher;
use crate::adapters::mqtt::inbound::{self, InboundOptions};
use crate::adapters::mqtt::lifecycle::{self, VehicleProcesses};
use crate::adapters::mqtt::publisher::Publisher;
use crate::adapters::postgres::{self, notify, Frameworks};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::projections::commands::CommandsProjection;
use crate::projections::consents::ConsentsProjection;
use crate::projections::devices::DevicesProjection;
use crate::projections::state::StateProjection;
use crate::projections::vehicles::VehiclesProjection;
use crate::projections::{Projection, Subscriptions};
use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;
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
        Arc::new(StateProjection),
    ]
}

/// A running tacho: its address, state and the token that stops it.
pub struct Running {
    /// Where HTTP listens.
    pub addr: std::net::SocketAddr,
    /// Shared state (tests use its pool and subscriptions).
    pub state: AppState,
    /// Cancel to shut down.
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Waits for everything to stop (after `shutdown` was canceled).
    pub async fn join(self) -> anyhow::Result<()> {
        self.server.await.context("HTTP server task panicked")?.context("HTTP server failed")?;
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        Ok(())
    }
}

/// Connects and migrates the database of `config`.
pub async fn database(config: &Config) -> anyhow::Result<PgPool> {
    let pool = postgres::connect(config.database_url.expose_secret(), config.database_max_connections).await?;
    postgres::migrate(&pool).await?;
    Ok(pool)
}

/// Starts tacho on `listener` (bind port 0 in tests).
pub async fn start(config: &Config, listener: TcpListener) -> anyhow::Result<Running> {
    let secret = config.resolve_auth_secret()?;
    let broker = config.broker()?;
    let pool = database(config).await?;
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let frameworks = Arc::new(Frameworks::new(&pool));
    let mut subscriptions = Subscriptions::new(pool.clone(), projections());
    let mut tasks = Vec::new();
    let mut publisher = None;
    let mut dispatcher = None;
    if let Some(broker) = &broker {
        let lanes = Publisher::start(broker, &config.mqtt_client_id, config.mqtt_publish_lanes, shutdown.clone());
        let sender = Arc::new(Dispatcher {
            pool: pool.clone(),
            frameworks: Arc::clone(&frameworks),
            publisher: lanes.clone(),
            metrics: Arc::clone(&metrics),
        });
        let processes = VehicleProcesses {
            pool: pool.clone(),
            frameworks: Arc::clone(&frameworks),
            dispatcher: Arc::clone(&sender),
        };
        subscriptions = subscriptions
            .with_processes(vec![Arc::clone(&sender) as Arc<dyn crate::projections::Process>, Arc::new(processes)]);
        let handler =
            inbound::Handler { pool: pool.clone(), frameworks: Arc::clone(&frameworks), metrics: Arc::clone(&metrics) };
        let options = InboundOptions {
            client_id: format!("{}-in", config.mqtt_client_id),
            shared_group: config.mqtt_shared_group.clone(),
            session_expiry_s: config.mqtt_session_expiry_s,
        };
        inbound::start(broker, &options, Arc::new(handler), shutdown.clone());
        publisher = Some(lanes);
        dispatcher = Some(sender);
    }
    let subscriptions = Arc::new(subscriptions);
    tasks.extend(subscriptions.start(shutdown.clone()));
    let retention = chrono::Duration::hours(i64::from(config.history_retention_hours));
    tasks.push(tokio::spawn(lifecycle::sweep(
        pool.clone(),
        Arc::clone(&frameworks),
        dispatcher,
        retention,
        shutdown.clone(),
    )));
    let (command_changes, _) = broadcast::channel(1024);
    tasks.push(tokio::spawn(relay_command_changes(pool.clone(), command_changes.clone(), shutdown.clone())));
    let state = AppState {
        pool: pool.clone(),
        frameworks,
        subscriptions,
        auth: Arc::new(AuthKeys::new(&secret)),
        command_changes,
        public_mqtt_url: config.public_mqtt_url.as_str().into(),
        metrics,
        publisher,
    };
    let addr = listener.local_addr().context("listener has no address")?;
    let router = http::router(state.clone());
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
    });
    Ok(Running { addr, state, shutdown, tasks, server })
}

/// Relays `NOTIFY tacho_command` (sent by the commands projection on commit) to long polls and SSE.
async fn relay_command_changes(pool: PgPool, changes: broadcast::Sender<Uuid>, shutdown: CancellationToken) {
    let relay = |payload: &str| {
        if let Ok(id) = Uuid::parse_str(payload) {
            let _ = changes.send(id);
        }
    };
    notify::listen(pool, CommandsProjection::CHANNEL, relay, shutdown).await;
}
