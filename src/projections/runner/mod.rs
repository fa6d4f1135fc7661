//! The subscription runner. One reader of the log per instance, the [`tail`], reads each new event
//! once and keeps the latest in memory; the subscribers take their batches from it.
//!
//! - **Read models** move together: one task applies a batch to every read model in step and moves
//!   their checkpoints in **one transaction** (what each has not applied yet: they may stand at
//!   different places). A read model that fails (a bug, a panic) leaves the group and runs alone,
//!   batch by batch in transactions of its own, until it has caught up again, so it never stops
//!   the others.
//! - **Processes** act outside any transaction under their lease, then move their checkpoint
//!   (at-least-once). While it holds the lease a process keeps its place in memory; it writes it
//!   at most every [`ACTED_CHECKPOINT`] after acting, every [`LAZY_CHECKPOINT`] past events of no
//!   interest to it, and when it stops cleanly (handling a few again after a crash costs little:
//!   its effects are idempotent).
//!
//! The tail is woken by `tacho_events` (PostgreSQL: LISTEN/NOTIFY, which also reaches the other
//! instances; SQLite: in-process signals). It polls only while writers of the log are running
//! (their events may become readable without a notification of their own) and otherwise every
//! [`idle_poll`] as a fallback.

mod fill;
mod subscriber;
mod tail;

use subscriber::{Kind, Subscriber};
use tail::Tail;

use crate::metrics::Metrics;
use crate::store::leases::{self, Lease, LeaseLost, Leases};
use crate::store::log::{self, Checkpoint, StoredEvent, Undecodable, EVENTS_CHANNEL};
use crate::store::{checkpoints, Conn, Db};
use futures::FutureExt;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// Another instance holds some of the read models' turns: try again shortly.
    #[error("another instance is applying the read models")]
    Busy,
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

/// How often the tail reads the log without being woken, when no writer of the log is running:
/// on PostgreSQL a trigger notifies every append, whoever wrote it; on SQLite only tacho's own
/// writers signal, and a read costs no round trip.
pub fn idle_poll(db: &Db) -> Duration {
    match db {
        Db::Postgres(_) => Duration::from_secs(30),
        Db::Sqlite(_) => Duration::from_secs(1),
    }
}

/// How often the tail reads the log again while writers of the log run.
const BUSY_POLL: Duration = Duration::from_millis(20);

/// The read models' group takes this many times a subscriber's batch at once.
const GROUP_BATCHES: i64 = 4;

/// How often a process writes its place in the log when it only passed events of no interest.
pub const LAZY_CHECKPOINT: Duration = Duration::from_secs(5);

/// How often a process writes its place in the log after acting: a crash hands at most this much
/// of the log to be handled again (its effects are idempotent); a clean stop writes it.
pub const ACTED_CHECKPOINT: Duration = Duration::from_secs(1);

/// All subscribers of one tacho instance.
pub struct Subscriptions {
    db: Db,
    /// Read models new in this version, still to fill.
    unfilled: Mutex<HashSet<&'static str>>,
    subscribers: HashMap<&'static str, Subscriber>,
    /// The one reader of the log.
    tail: Tail,
    /// Read models out of the group: they failed in it, and run alone until they caught up.
    solo: Mutex<HashSet<&'static str>>,
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
            tail: Tail::new(500 * GROUP_BATCHES),
            solo: Mutex::default(),
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
        self.tail = Tail::new(self.group_batch());
        self
    }

    /// Hears each move of subscriber `name` (on this instance); `None` for an unknown name.
    pub fn progress(&self, name: &str) -> Option<watch::Receiver<Checkpoint>> {
        self.subscribers.get(name).map(|s| s.progress.subscribe())
    }

    /// How many events the read models' group (and the tail) take at most at once: the read models
    /// write set-based, so a larger batch costs little more than a small one.
    fn group_batch(&self) -> i64 {
        self.batch_size * GROUP_BATCHES
    }

    /// Names of the subscribers.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.subscribers.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Starts the wake-up listener, the tail, the read models' task and one task per process; they
    /// stop when `shutdown` is canceled.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(Arc::clone(self).listen(shutdown.clone())),
            tokio::spawn(Arc::clone(self).follow_tail(shutdown.clone())),
            tokio::spawn(Arc::clone(self).run_projections(shutdown.clone())),
        ];
        for (name, subscriber) in &self.subscribers {
            if matches!(subscriber.kind, Kind::Process(_)) {
                tasks.push(tokio::spawn(Arc::clone(self).run(name, shutdown.clone())));
            }
        }
        tasks
    }

    async fn listen(self: Arc<Self>, shutdown: CancellationToken) {
        let wake = |_: &str| self.wake.send_modify(|n| *n = n.wrapping_add(1));
        self.db.listen(EVENTS_CHANNEL, wake, shutdown).await;
    }

    /// Reads the log into the tail whenever woken, until `shutdown`.
    async fn follow_tail(self: Arc<Self>, shutdown: CancellationToken) {
        let mut wake = self.wake.subscribe();
        let mut failures = 0u32;
        loop {
            let read = async {
                if !self.tail.started() {
                    // Where the subscribers stand furthest: those behind read the log themselves
                    // until they reach the window.
                    let names = self.names();
                    let stored = checkpoints::load_many(&mut self.db.acquire().await?.conn(), &names).await?;
                    self.tail.start_at(stored.values().copied().max().unwrap_or_default());
                }
                self.tail.read(&self.db).await
            };
            let next = match read.await {
                Ok(held_back) => {
                    failures = 0;
                    if held_back {
                        BUSY_POLL
                    } else {
                        idle_poll(&self.db)
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    // The database may have come back as another (a failover, a restore) that lost
                    // what the window holds: read it again from where the subscribers stand.
                    self.tail.reset();
                    tracing::warn!(error = %e, failures, "reading the log failed; retrying");
                    self.poll_interval * failures.clamp(1, 20)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// Fills the read models new in this version, then keeps every read model following the log,
    /// until `shutdown`.
    async fn run_projections(self: Arc<Self>, shutdown: CancellationToken) {
        let names = self.projection_names();
        for name in &names {
            while let Err(e) = self.fill_if_new(name).await {
                tracing::error!(subscriber = name, error = %e, "filling a new read model failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.poll_interval * 4) => {}
                }
            }
        }
        let mut head = self.tail.subscribe();
        let (mut failures, mut solo_failures) = (0u32, 0u32);
        loop {
            let mut again = false;
            match caught(self.step_projections()).await {
                Ok(read) => {
                    failures = 0;
                    again = read as i64 >= self.group_batch();
                }
                // Passed over from now on: go again at once.
                Err(Failed { error: ProjectionError::Undecodable(_), .. }) => again = true,
                // Another instance holds some of their turns: try again after a short random pause
                // (two instances that each took some give up together, and would wait for the next
                // append otherwise).
                Err(Failed { error: ProjectionError::Busy, .. }) => {
                    let pause = Duration::from_millis(20 + u64::from(rand::random::<u8>() % 80));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    again = true;
                }
                Err(Failed { member, error }) => {
                    match member {
                        // One read model failing (a bug, a constraint it breaks: anything but the
                        // database being unavailable): it runs alone, the others go on.
                        Some(name) if !matches!(&error, ProjectionError::Database(e) if crate::store::is_transient(e)) =>
                        {
                            tracing::error!(subscriber = name, error = %error, "read model failed; running it alone until it caught up");
                            self.set_solo(&[name]);
                            again = true;
                        }
                        // Which one is not known (a panic): each runs alone until it caught up.
                        None if matches!(error, ProjectionError::Effect(_)) => {
                            tracing::error!(error = %error, "a read model failed; running each alone until it caught up");
                            self.set_solo(&names);
                            again = true;
                        }
                        _ => {
                            failures = failures.saturating_add(1);
                            tracing::error!(error = %error, failures, "read models failed; retrying from their checkpoints");
                        }
                    }
                }
            }
            let (more, solo_failed) = self.step_solo().await;
            again |= more;
            solo_failures = if solo_failed { solo_failures.saturating_add(1) } else { 0 };
            if again && failures == 0 && solo_failures == 0 {
                continue;
            }
            // Woken when the tail moves; the read models have nothing else to apply, but one failing
            // alone is tried again after a while.
            let failing = failures.max(solo_failures);
            let backoff = if failing > 0 { self.poll_interval * failing.clamp(1, 20) } else { idle_poll(&self.db) * 2 };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = head.changed() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// The names of the read models, sorted.
    fn projection_names(&self) -> Vec<&'static str> {
        self.names().into_iter().filter(|n| self.subscribers.get(n).is_some_and(|s| !s.kind.is_process())).collect()
    }

    fn set_solo(&self, names: &[&'static str]) {
        if let Ok(mut solo) = self.solo.lock() {
            solo.extend(names.iter().copied());
        }
    }

    /// One batch for each read model out of the group; a read model that has caught up rejoins it.
    /// Whether any has more to do, and whether any failed.
    async fn step_solo(&self) -> (bool, bool) {
        let solo: Vec<&'static str> = self.solo.lock().map(|s| s.iter().copied().collect()).unwrap_or_default();
        let (mut again, mut failed) = (false, false);
        for name in solo {
            match caught(self.step_batch(name, false, None)).await {
                // Applied a batch: back in the group once it stands in the window (or at the head).
                Ok(read)
                    if read == 0
                        || self.subscribers.get(name).is_some_and(|s| self.tail.covers(*s.progress.borrow())) =>
                {
                    if let Ok(mut solo) = self.solo.lock() {
                        solo.remove(name);
                    }
                    again |= read > 0;
                    tracing::info!(subscriber = name, "read model caught up; back in the group");
                }
                Ok(_) | Err(ProjectionError::Undecodable(_)) => again = true,
                Err(e) => {
                    failed = true;
                    tracing::error!(subscriber = name, error = %e, "read model failed; retrying from its checkpoint")
                }
            }
        }
        (again, failed)
    }

    /// One batch for every read model in the group, in one transaction; how many events were read.
    async fn step_projections(&self) -> Result<usize, Failed> {
        let solo = self.solo.lock().map(|s| s.clone()).unwrap_or_default();
        // Each read model's turn within this instance (a rebuild or a step by hand may hold one).
        let mut members = Vec::new();
        let mut _turns = Vec::new();
        for name in self.projection_names() {
            let Some(subscriber) = self.subscribers.get(name).filter(|_| !solo.contains(name)) else { continue };
            let Kind::Projection(projection) = &subscriber.kind else { continue };
            if let Ok(turn) = subscriber.turn.try_lock() {
                members.push((name, subscriber, projection));
                _turns.push(turn);
            }
        }
        if members.is_empty() {
            return Ok(0);
        }
        let names: Vec<&'static str> = members.iter().map(|m| m.0).collect();
        let mut tx = self.db.begin().await.map_err(Failed::all)?;
        let mut conn = tx.conn();
        // Another instance applying them now, or trying to: nothing to do here unless it gave up
        // too (both took some turns): the caller tries again shortly.
        if !checkpoints::take_turns(&mut conn, &names).await.map_err(Failed::all)? {
            return Err(Failed { member: None, error: ProjectionError::Busy });
        }
        let stored = checkpoints::load_many(&mut conn, &names).await.map_err(Failed::all)?;
        let at = |name: &str| stored.get(name).copied().unwrap_or_default();
        // Read models behind the window (filled or rebuilt long ago, a long outage) catch up alone:
        // the others do not wait for them.
        let behind: Vec<&'static str> =
            names.iter().copied().filter(|n| self.tail.started() && !self.tail.covers(at(n))).collect();
        if !behind.is_empty() && behind.len() < names.len() {
            self.set_solo(&behind);
            members.retain(|m| !behind.contains(&m.0));
        }
        let from = members.iter().map(|m| at(m.0)).min().unwrap_or_default();
        let limit = self.group_batch();
        let batch = match self.tail.after(from, None, limit) {
            Some(batch) => batch,
            None => log::read_after(&mut conn, from, None, limit).await.map_err(Failed::all)?,
        };
        let to = batch.next_checkpoint(from, limit);
        let read = batch.events.len();
        let (mut signals, mut moved) = (Vec::new(), Vec::new());
        for (name, subscriber, projection) in &members {
            let mine = at(name);
            let types = subscriber.kind.types();
            let wanted =
                |e: &StoredEvent| e.checkpoint() > mine && types.is_none_or(|t| t.contains(&e.aggregate_type.as_str()));
            // The whole batch, as it is, when it takes every event of it (the seals; the vehicle
            // data under a load of reports): no copy.
            let events: std::borrow::Cow<[StoredEvent]> =
                match batch.events.iter().all(|e| wanted(e) && subscriber.takes_as_is(e)) {
                    true => std::borrow::Cow::Borrowed(&batch.events),
                    false => {
                        let some = batch.events.iter().filter(|e| wanted(e)).cloned().collect();
                        std::borrow::Cow::Owned(subscriber.takes(name, some, &self.metrics))
                    }
                };
            if !events.is_empty() {
                if let Err(e) = projection.apply_batch(&mut conn, &events).await {
                    // The transaction rolls back; the retry passes over what does not decode.
                    if let ProjectionError::Undecodable(undecodable) = &e {
                        subscriber.pass_over(name, undecodable, &self.metrics);
                    }
                    return Err(Failed { member: Some(name), error: e });
                }
            }
            if to > mine {
                moved.push(*name);
            }
            if let Some(channel) = projection.channel() {
                let changed = Self::changed_streams(projection.as_ref(), &events);
                conn.announce(channel, &changed).await.map_err(Failed::all)?;
                signals.push((channel, changed));
            }
        }
        checkpoints::advance_all(&mut conn, &moved, to).await.map_err(Failed::all)?;
        tx.commit().await.map_err(Failed::all)?;
        for (channel, changed) in signals {
            for id in changed {
                self.db.signal(channel, id);
            }
        }
        for (name, subscriber, _) in &members {
            let now = to.max(at(name));
            subscriber.progress.send_if_modified(|p| std::mem::replace(p, now) != now);
        }
        Ok(read)
    }

    async fn run(self: Arc<Self>, name: &'static str, shutdown: CancellationToken) {
        loop {
            // A process acts only while this instance holds its lease.
            let Some(lease) = self.take_lease(name, &shutdown).await else { return };
            let stopped = self.follow(name, &lease, &shutdown).await;
            self.leases.release(&lease).await;
            if stopped {
                return;
            }
        }
    }

    /// Handles batch after batch for process `name` under `lease` until `shutdown` (true) or the
    /// lease is lost (false).
    async fn follow(&self, name: &'static str, lease: &Lease, shutdown: &CancellationToken) -> bool {
        let mut head = self.tail.subscribe();
        let mut failures = 0u32;
        // Where it stands while it holds the lease: read once, then kept here.
        let mut place: Option<Place> = None;
        loop {
            let stepped = match self.subscribers.get(name).map(|s| &s.kind) {
                Some(Kind::Process(process)) => {
                    caught(self.step_process(name, process.as_ref(), lease, &mut place)).await
                }
                _ => Err(unknown(name)),
            };
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
                    // Read it again: the batch is retried from the stored checkpoint.
                    place = None;
                    tracing::error!(subscriber = name, error = %e, failures, "subscriber failed; retrying from its checkpoint");
                }
            }
            // A process also runs `prepare` when nothing is new: it checks what lives elsewhere
            // (the broker's rights) at its own pace, so it is woken at least every poll interval.
            let backoff = self.poll_interval * failures.clamp(1, 20);
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // A clean stop leaves nothing to handle again.
                    if let Some(place) = place.filter(|p| p.at > p.stored) {
                        let mut pooled = self.db.acquire().await.ok();
                        if let Some(pooled) = pooled.as_mut() {
                            let _ = checkpoints::advance(&mut pooled.conn(), name, place.at, Some(lease)).await;
                        }
                    }
                    return true;
                }
                _ = head.changed() => {}
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
                    Some(lease) => self.step_process(name, process.as_ref(), lease, &mut None).await,
                    // Stepped by hand (tests, catch-up): only with the lease, given back after.
                    None => match self.leases.try_take(name).await? {
                        Some(lease) => {
                            let stepped = self.step_process(name, process.as_ref(), &lease, &mut None).await;
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

    /// One batch of a process under `lease`: read after its place (`place`, else the stored
    /// checkpoint), act outside any transaction (so no lock is held while it publishes), then move
    /// the checkpoint while the lease holds: at once after acting, lazily past events of no interest.
    async fn step_process(
        &self,
        name: &str,
        process: &dyn Process,
        lease: &Lease,
        place: &mut Option<Place>,
    ) -> Result<usize, ProjectionError> {
        let subscriber = self.subscribers.get(name).ok_or_else(|| unknown(name))?;
        lease.check()?;
        let current = match place {
            Some(place) => *place,
            None => {
                let stored = checkpoints::load(&mut self.db.acquire().await?.conn(), name).await?;
                *place.insert(Place { at: stored, stored, written: None, acted: false })
            }
        };
        let from = current.at;
        process.prepare(from, lease).await?;
        let types = Some(process.aggregate_types()).filter(|t| !t.is_empty());
        let batch = match self.tail.after(from, types, self.batch_size) {
            Some(batch) => batch,
            None => log::read_after(&mut self.db.acquire().await?.conn(), from, types, self.batch_size).await?,
        };
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
        let acted = current.acted || read > 0;
        let every = if acted { ACTED_CHECKPOINT } else { LAZY_CHECKPOINT };
        // A place just read (a step by hand, a lease just taken) is written at once.
        let write = to > current.stored && current.written.is_none_or(|at| at.elapsed() >= every);
        if write && !checkpoints::advance(&mut self.db.acquire().await?.conn(), name, to, Some(lease)).await? {
            // Stored beyond already (a step by hand) or the lease is gone: read the place again.
            *place = None;
            lease.check()?;
            if checkpoints::load(&mut self.db.acquire().await?.conn(), name).await? < to {
                return Err(LeaseLost(name.to_owned()).into());
            }
        }
        if let Some(place) = place {
            place.at = to;
            place.acted = acted && !write;
            if write {
                place.stored = to;
                place.written = Some(Instant::now());
            }
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

/// Where a process stands while it holds its lease: its place in the log, what is stored of it,
/// when that was written (`None`: not by this holder yet), and whether it acted since.
#[derive(Debug, Clone, Copy)]
struct Place {
    at: Checkpoint,
    stored: Checkpoint,
    written: Option<Instant>,
    acted: bool,
}

/// A failed batch of the read models' group: which read model failed, when it is known.
#[derive(Debug)]
struct Failed {
    member: Option<&'static str>,
    error: ProjectionError,
}

impl Failed {
    /// A failure of the whole batch (the database), no read model's in particular.
    fn all(e: impl Into<ProjectionError>) -> Self {
        Self { member: None, error: e.into() }
    }
}

impl From<ProjectionError> for Failed {
    fn from(error: ProjectionError) -> Self {
        Self { member: None, error }
    }
}

/// Runs `step`, turning a panic (a bug) into an error: it must not end a subscriber for good.
async fn caught<T, E: From<ProjectionError>>(step: impl std::future::Future<Output = Result<T, E>>) -> Result<T, E> {
    AssertUnwindSafe(step).catch_unwind().await.unwrap_or_else(|panic| {
        let what =
            panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
        Err(ProjectionError::Effect(format!("panicked: {}", what.unwrap_or_default())).into())
    })
}
