//! The subscription runner: one task per subscriber, each reading the log in commit order from its
//! checkpoint and writing its read model and the new checkpoint in one transaction.
//! Woken by LISTEN/NOTIFY on `tacho_events`, with polling as a fallback.

use super::StoredEvent;
use crate::adapters::postgres::log;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A place in the log's commit order. Ordered by transaction id, then position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    /// Transaction id of the event (`xid8` as bigint).
    pub tx_id: i64,
    /// Global position of the event.
    pub position: i64,
}

/// Why a subscriber could not apply an event; it retries from its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// An event in the log does not decode.
    #[error("undecodable event {0}")]
    Decode(String),
}

/// A read model fed by the log. Implementations MUST write only through `conn` (the transaction
/// that also moves the checkpoint) and MUST be deterministic: a rebuild gives the same rows.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable subscriber name (the checkpoint key).
    fn name(&self) -> &'static str;
    /// Aggregate types it reads.
    fn aggregate_types(&self) -> &'static [&'static str];
    /// Applies one event.
    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError>;
    /// Empties its tables (for a rebuild from position 0).
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), ProjectionError>;
}

struct Subscriber {
    projection: Arc<dyn Projection>,
    progress: watch::Sender<Checkpoint>,
}

/// All subscribers of one tacho instance.
pub struct Subscriptions {
    pool: PgPool,
    subscribers: HashMap<&'static str, Subscriber>,
    wake: watch::Sender<u64>,
    batch_size: i64,
    poll_interval: Duration,
}

impl Subscriptions {
    /// Subscribers for `projections`, not started.
    pub fn new(pool: PgPool, projections: Vec<Arc<dyn Projection>>) -> Self {
        let subscribers = projections
            .into_iter()
            .map(|projection| {
                let (progress, _) = watch::channel(Checkpoint::default());
                (projection.name(), Subscriber { projection, progress })
            })
            .collect();
        let (wake, _) = watch::channel(0);
        Self { pool, subscribers, wake, batch_size: 500, poll_interval: Duration::from_millis(500) }
    }

    /// Sets how many events one transaction applies at most.
    pub fn with_batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Names of the subscribers.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.subscribers.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Starts the NOTIFY listener and one task per subscriber; they stop when `shutdown` is canceled.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(Arc::clone(self).listen(shutdown.clone()))];
        for name in self.subscribers.keys().copied() {
            tasks.push(tokio::spawn(Arc::clone(self).run(name, shutdown.clone())));
        }
        tasks
    }

    async fn listen(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; subscribers poll meanwhile");
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(2)) => continue }
                }
            };
            if let Err(e) = listener.listen("tacho_events").await {
                tracing::warn!(error = %e, "LISTEN failed");
                continue;
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(_) => { self.wake.send_modify(|n| *n = n.wrapping_add(1)); }
                        Err(e) => { tracing::warn!(error = %e, "LISTEN connection lost"); break; }
                    }
                }
            }
        }
    }

    async fn run(self: Arc<Self>, name: &'static str, shutdown: CancellationToken) {
        let mut wake = self.wake.subscribe();
        let mut failures = 0u32;
        loop {
            match self.step(name).await {
                Ok(applied) if applied as i64 >= self.batch_size => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(subscriber = name, error = %e, failures, "subscriber failed; retrying from its checkpoint");
                }
            }
            let backoff = self.poll_interval * failures.clamp(1, 20);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Applies at most one batch for subscriber `name`; returns how many events it applied.
    pub async fn step(&self, name: &str) -> Result<usize, ProjectionError> {
        let subscriber =
            self.subscribers.get(name).ok_or_else(|| ProjectionError::Decode(format!("no subscriber {name}")))?;
        let projection = &subscriber.projection;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO subscription_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        // FOR UPDATE: one instance at a time moves a subscriber.
        let row = sqlx::query("SELECT tx_id, position FROM subscription_checkpoints WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let from = Checkpoint { tx_id: row.try_get("tx_id")?, position: row.try_get("position")? };
        let events = log::read_after(&mut tx, from, Some(projection.aggregate_types()), self.batch_size).await?;
        let Some(last) = events.last().map(StoredEvent::checkpoint) else {
            tx.commit().await?;
            subscriber.progress.send_if_modified(|p| std::mem::replace(p, from) != from);
            return Ok(0);
        };
        for event in &events {
            projection.apply(&mut tx, event).await?;
        }
        sqlx::query(
            "UPDATE subscription_checkpoints SET tx_id = $2, position = $3, updated_at = now() WHERE name = $1",
        )
        .bind(name)
        .bind(last.tx_id)
        .bind(last.position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        subscriber.progress.send_replace(last);
        Ok(events.len())
    }

    /// Runs subscriber `name` until it has nothing more to read.
    pub async fn catch_up(&self, name: &str) -> Result<(), ProjectionError> {
        while self.step(name).await? > 0 {}
        Ok(())
    }

    /// Empties a subscriber's read model and checkpoint, then replays the whole log into it.
    pub async fn rebuild(&self, name: &str) -> Result<(), ProjectionError> {
        let subscriber =
            self.subscribers.get(name).ok_or_else(|| ProjectionError::Decode(format!("no subscriber {name}")))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM subscription_checkpoints WHERE name = $1").bind(name).execute(&mut *tx).await?;
        subscriber.projection.reset(&mut tx).await?;
        tx.commit().await?;
        self.catch_up(name).await
    }

    /// Waits until subscriber `name` has applied the event at `target`; false on timeout.
    pub async fn wait_for(&self, name: &str, target: Checkpoint, timeout: Duration) -> bool {
        let Some(subscriber) = self.subscribers.get(name) else { return false };
        let mut progress = subscriber.progress.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if *progress.borrow_and_update() >= target {
                    return;
                }
                // Another instance may be the one moving this subscriber: look at the table too.
                tokio::select! {
                    _ = progress.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {
                        if self.stored_checkpoint(name).await.is_some_and(|c| c >= target) { return; }
                    }
                }
            }
        })
        .await;
        waited.is_ok()
    }

    async fn stored_checkpoint(&self, name: &str) -> Option<Checkpoint> {
        let row = sqlx::query("SELECT tx_id, position FROM subscription_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .ok()??;
        Some(Checkpoint { tx_id: row.try_get("tx_id").ok()?, position: row.try_get("position").ok()? })
    }
}
