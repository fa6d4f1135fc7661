//! The subscription runner: one task per subscriber, each reading the log in commit order from its
//! checkpoint. A projection writes its read model and the new checkpoint in one transaction; a
//! process acts outside any transaction, then moves its checkpoint (at-least-once).
//! Woken by `tacho_events` (PostgreSQL: LISTEN/NOTIFY; SQLite: in-process signals), with polling
//! as a fallback.

mod fill;
mod subscriber;

use subscriber::{Kind, Subscriber};

use crate::metrics::Metrics;
use crate::store::leases::{self, Lease, LeaseLost, Leases};
use crate::store::log::{self, Checkpoint, StoredEvent, Undecodable, EVENTS_CHANNEL};
use crate::store::{checkpoints, Conn, Db};
use futures::FutureExt;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a subscriber could not handle a batch (it retries from its checkpoint), or why a request to
/// the runner was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// An event in the log does not decode.
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
    /// A side effect failed (broker unavailable ...).
    #[error("{0}")]
    Effect(String),
    /// No subscriber has this name.
    #[error("no subscriber {0}")]
    UnknownSubscriber(String),
    /// The subscriber is a process, which has no tables to rebuild.
    #[error("{0} is a process, not a read model")]
    NotReadModel(String),
    /// The read model is a reference that is never rebuilt (the seals).
    #[error("{0} is never rebuilt: audit verify checks the log against it")]
    NotRebuildable(String),
    /// A process's lease is no longer this instance's: it stops acting and stands by.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
}

/// A read model fed by the log. Implementations MUST write only through `conn` (the transaction
/// that also moves the checkpoint) and MUST be deterministic: a rebuild gives the same rows.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable subscriber name (the checkpoint key).
    fn name(&self) -> &'static str;
    /// Aggregate types it reads (empty: all).
    fn aggregate_types(&self) -> &'static [&'static str];
    /// The tables it keeps (what a rebuild replaces).
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event.
    async fn apply(&self, conn: &mut Conn<'_>, event: &StoredEvent) -> Result<(), ProjectionError>;
    /// Applies a batch in log order; override for set-based writes.
    async fn apply_batch(&self, conn: &mut Conn<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(conn, event).await?;
        }
        Ok(())
    }
    /// Whether `projections rebuild` may rebuild it (the seals may not).
    fn rebuildable(&self) -> bool {
        true
    }
    /// Whether it takes rows whose payload does not parse ([`StoredEvent::unreadable`]): the seals
    /// do (every row is sealed as stored); others never see them.
    fn takes_unreadable(&self) -> bool {
        false
    }
    /// A channel that hears, once committed, the stream id of every event applied (long polls
    /// listen to it); `None` for none.
    fn channel(&self) -> Option<&'static str> {
        None
    }
}

/// A subscriber with side effects outside the database (publishing, commands on aggregates). It
/// runs on one instance at a time, the holder of its lease ([`Lease`]), and is at-least-once: after
/// a crash or a change of holder it sees again the events after its checkpoint, so its effects MUST
/// be idempotent, and it MUST check the lease before each side effect.
#[async_trait::async_trait]
pub trait Process: Send + Sync + 'static {
    /// Stable subscriber name (the checkpoint key).
    fn name(&self) -> &'static str;
    /// Aggregate types it reads.
    fn aggregate_types(&self) -> &'static [&'static str];
    /// Handles a batch while `lease` holds; an error makes the runner retry the same batch later.
    async fn handle(&self, events: &[StoredEvent], lease: &Lease) -> Result<(), ProjectionError>;
    /// Runs before every batch (also when there is nothing new), with the checkpoint the batch
    /// starts from: a process whose effects live elsewhere re-checks them here. An error makes the
    /// runner retry later.
    async fn prepare(&self, _from: Checkpoint, _lease: &Lease) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// All subscribers of one tacho instance.
pub struct Subscriptions {
    db: Db,
    /// Read models new in this version, still to fill.
    unfilled: std::sync::Mutex<std::collections::HashSet<&'static str>>,
    subscribers: HashMap<&'static str, Subscriber>,
    wake: watch::Sender<u64>,
    batch_size: i64,
    poll_interval: Duration,
    metrics: Arc<Metrics>,
    leases: Leases,
}

fn unknown(name: &str) -> ProjectionError {
    ProjectionError::UnknownSubscriber(name.to_owned())
}

impl Subscriptions {
    /// Subscribers for `projections`, not started.
    pub fn new(db: Db, projections: Vec<Arc<dyn Projection>>) -> Self {
        let (wake, _) = watch::channel(0);
        let mut subscriptions = Self {
            db: db.clone(),
            unfilled: Default::default(),
            subscribers: HashMap::new(),
            wake,
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            metrics: Arc::default(),
            leases: Leases::new(db.clone(), &format!("tacho-{}", uuid::Uuid::new_v4())),
        };
        for projection in projections {
            subscriptions.add(projection.name(), Kind::Projection(projection));
        }
        subscriptions
    }

    /// Adds side-effect subscribers.
    pub fn with_processes(mut self, processes: Vec<Arc<dyn Process>>) -> Self {
        for process in processes {
            self.add(process.name(), Kind::Process(process));
        }
        self
    }

    fn add(&mut self, name: &'static str, kind: Kind) {
        let (progress, _) = watch::channel(Checkpoint::default());
        let (turn, passed_over) = (tokio::sync::Mutex::new(()), Default::default());
        self.subscribers.insert(name, Subscriber { kind, progress, turn, passed_over });
    }

    /// Runs processes under `leases` (this instance's).
    pub fn with_leases(mut self, leases: Leases) -> Self {
        self.leases = leases;
        self
    }

    /// Counts on `metrics` (events passed over).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sets how many events one batch holds at most.
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

    /// Starts the wake-up listener and one task per subscriber; they stop when `shutdown` is canceled.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(Arc::clone(self).listen(shutdown.clone()))];
        for name in self.subscribers.keys().copied() {
            tasks.push(tokio::spawn(Arc::clone(self).run(name, shutdown.clone())));
        }
        tasks
    }

    async fn listen(self: Arc<Self>, shutdown: CancellationToken) {
        let wake = |_: &str| self.wake.send_modify(|n| *n = n.wrapping_add(1));
        self.db.listen(EVENTS_CHANNEL, wake, shutdown).await;
    }

    async fn run(self: Arc<Self>, name: &'static str, shutdown: CancellationToken) {
        let is_process = self.subscribers.get(name).is_some_and(|s| matches!(s.kind, Kind::Process(_)));
        while let Err(e) = self.fill_if_new(name).await {
            tracing::error!(subscriber = name, error = %e, "filling a new read model failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.poll_interval * 4) => {}
            }
        }
        loop {
            // A process acts only while this instance holds its lease.
            let lease = match is_process {
                true => match self.take_lease(name, &shutdown).await {
                    Some(lease) => Some(lease),
                    None => return,
                },
                false => None,
            };
            let stopped = self.follow(name, lease.as_ref(), &shutdown).await;
            if let Some(lease) = &lease {
                self.leases.release(lease).await;
            }
            if stopped {
                return;
            }
        }
    }

    /// Handles batch after batch for subscriber `name` (under `lease`, for a process) until
    /// `shutdown` (true) or the lease is lost (false).
    async fn follow(&self, name: &'static str, lease: Option<&Lease>, shutdown: &CancellationToken) -> bool {
        let mut wake = self.wake.subscribe();
        let mut failures = 0u32;
        loop {
            // A panic in a subscriber is a bug; it must not end the subscriber for good.
            let stepped =
                AssertUnwindSafe(self.step_batch(name, false, lease)).catch_unwind().await.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned());
                    Err(ProjectionError::Effect(format!("panicked: {}", what.unwrap_or_default())))
                });
            match stepped {
                Ok(applied) if applied as i64 >= self.batch_size => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                // Passed over from now on: go again at once.
                Err(ProjectionError::Undecodable(_)) => continue,
                Err(ProjectionError::LeaseLost(e)) => {
                    tracing::warn!(subscriber = name, error = %e, "stopped acting; standing by to take the lease again");
                    return false;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(subscriber = name, error = %e, failures, "subscriber failed; retrying from its checkpoint");
                }
            }
            let backoff = self.poll_interval * failures.clamp(1, 20);
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Waits until this instance holds process `name`'s lease; `None` on shutdown.
    async fn take_lease(&self, name: &str, shutdown: &CancellationToken) -> Option<Lease> {
        loop {
            match self.leases.try_take(name).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => tracing::debug!(subscriber = name, "another instance runs this process; standing by"),
                Err(e) => tracing::warn!(subscriber = name, error = %e, "cannot take the process's lease"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(leases::RENEW_EVERY) => {}
            }
        }
    }

    /// Handles at most one batch for subscriber `name` (waiting for another instance's batch to
    /// finish first); returns how many events it handled.
    pub async fn step(&self, name: &str) -> Result<usize, ProjectionError> {
        self.step_batch(name, true, None).await
    }

    /// One batch; returns how many events were handled. Without `wait`, a batch another instance
    /// is applying means nothing to do here.
    async fn step_batch(&self, name: &str, wait: bool, lease: Option<&Lease>) -> Result<usize, ProjectionError> {
        let subscriber = self.subscribers.get(name).ok_or_else(|| unknown(name))?;
        let projection = match &subscriber.kind {
            Kind::Projection(projection) => projection,
            Kind::Process(process) => {
                return match lease {
                    Some(lease) => self.step_process(name, process.as_ref(), subscriber, lease).await,
                    // Stepped by hand (tests, catch-up): only with the lease, given back after.
                    None => match self.leases.try_take(name).await? {
                        Some(lease) => {
                            let stepped = self.step_process(name, process.as_ref(), subscriber, &lease).await;
                            self.leases.release(&lease).await;
                            stepped
                        }
                        None => Ok(0),
                    },
                };
            }
        };
        let _turn = match wait {
            true => subscriber.turn.lock().await,
            false => match subscriber.turn.try_lock() {
                Ok(turn) => turn,
                Err(_) => return Ok(0),
            },
        };
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        if !checkpoints::take_turn(&mut conn, name, wait).await? {
            return Ok(0);
        }
        let from = checkpoints::load(&mut conn, name).await?;
        let batch = log::read_after(&mut conn, from, subscriber.kind.types(), self.batch_size).await?;
        let to = batch.next_checkpoint(from, self.batch_size);
        let read = batch.events.len();
        let events = subscriber.takes(name, batch.events, &self.metrics);
        if !events.is_empty() {
            if let Err(e) = projection.apply_batch(&mut conn, &events).await {
                // The transaction rolls back; the retry passes over what does not decode.
                if let ProjectionError::Undecodable(undecodable) = &e {
                    subscriber.pass_over(name, undecodable, &self.metrics);
                }
                return Err(e);
            }
        }
        if to != from {
            checkpoints::advance(&mut conn, name, to, None).await?;
        }
        let changed = Self::changed_streams(projection.as_ref(), &events);
        if let Some(channel) = projection.channel() {
            conn.announce(channel, &changed).await?;
        }
        tx.commit().await?;
        if let Some(channel) = projection.channel() {
            for id in changed {
                self.db.signal(channel, id);
            }
        }
        subscriber.progress.send_if_modified(|p| std::mem::replace(p, to) != to);
        Ok(read)
    }

    /// The distinct stream ids of `events`, when `projection` announces them.
    fn changed_streams(projection: &dyn Projection, events: &[StoredEvent]) -> Vec<String> {
        if projection.channel().is_none() {
            return Vec::new();
        }
        let mut ids: Vec<String> = events.iter().map(|e| e.aggregate_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// One batch of a process under `lease`: read after the checkpoint, act outside any transaction
    /// (so no lock is held while it publishes), then move the checkpoint while the lease holds.
    async fn step_process(
        &self,
        name: &str,
        process: &dyn Process,
        subscriber: &Subscriber,
        lease: &Lease,
    ) -> Result<usize, ProjectionError> {
        lease.check()?;
        let from = checkpoints::load(&mut self.db.acquire().await?.conn(), name).await?;
        process.prepare(from, lease).await?;
        let types = Some(process.aggregate_types()).filter(|t| !t.is_empty());
        let batch = log::read_after(&mut self.db.acquire().await?.conn(), from, types, self.batch_size).await?;
        let to = batch.next_checkpoint(from, self.batch_size);
        let read = batch.events.len();
        let events = subscriber.takes(name, batch.events, &self.metrics);
        if !events.is_empty() {
            if let Err(e) = process.handle(&events, lease).await {
                if let ProjectionError::Undecodable(undecodable) = &e {
                    subscriber.pass_over(name, undecodable, &self.metrics);
                }
                return Err(e);
            }
        }
        lease.check()?;
        if to != from && !checkpoints::advance(&mut self.db.acquire().await?.conn(), name, to, Some(lease)).await? {
            return Err(LeaseLost(name.to_owned()).into());
        }
        subscriber.progress.send_if_modified(|p| std::mem::replace(p, to) != to);
        Ok(read)
    }

    /// Runs subscriber `name` until it has nothing more to read.
    pub async fn catch_up(&self, name: &str) -> Result<(), ProjectionError> {
        loop {
            match self.step_batch(name, true, None).await {
                Ok(0) => return Ok(()),
                // Passed over from now on.
                Ok(_) | Err(ProjectionError::Undecodable(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until subscriber `name` has handled the event at `target`; false on timeout.
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
        let mut conn = self.db.acquire().await.ok()?;
        checkpoints::load(&mut conn.conn(), name).await.ok()
    }
}
