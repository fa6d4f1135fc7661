//! The composition root: pool, migrations, frameworks, subscribers, HTTP server, shutdown.

use crate::adapters::http::{self, auth::AuthKeys, state::AppState};
use crate::adapters::postgres::{self, Frameworks};
use crate::config::Config;
use crate::projections::commands::CommandsProjection;
use crate::projections::consents::ConsentsProjection;
use crate::projections::devices::DevicesProjection;
use crate::projections::vehicles::VehiclesProjection;
use crate::projections::{Projection, Subscriptions};
use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::PgListener;
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
    let pool = database(config).await?;
    let shutdown = CancellationToken::new();
    let subscriptions = Arc::new(Subscriptions::new(pool.clone(), projections()));
    let mut tasks = subscriptions.start(shutdown.clone());
    let (command_changes, _) = broadcast::channel(1024);
    tasks.push(tokio::spawn(relay_command_changes(pool.clone(), command_changes.clone(), shutdown.clone())));
    let state = AppState {
        pool: pool.clone(),
        frameworks: Arc::new(Frameworks::new(&pool)),
        subscriptions,
        auth: Arc::new(AuthKeys::new(&secret)),
        command_changes,
        public_mqtt_url: config.public_mqtt_url.as_str().into(),
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
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN tacho_command failed; long polls fall back to their timeout");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(2)) => continue }
            }
        };
        if listener.listen(CommandsProjection::CHANNEL).await.is_err() {
            continue;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(n) => { if let Ok(id) = Uuid::parse_str(n.payload()) { let _ = changes.send(id); } }
                    Err(e) => { tracing::warn!(error = %e, "LISTEN tacho_command lost"); break; }
                }
            }
        }
    }
}
