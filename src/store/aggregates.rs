//! The cqrs-es frameworks on postgres-es or sqlite-es (plain event store: no snapshots, no
//! in-process queries), and the strongly consistent precondition lookups the Command aggregate needs.

use super::log::{self, Checkpoint, EVENTS_CHANNEL};
use super::Db;
use crate::domain::command::{Command, CommandPreconditions, CommandServices, PreconditionError};
use crate::domain::consent::Consent;
use crate::domain::device::Device;
use crate::domain::vehicle::{Vehicle, VehicleStatus};
use crate::domain::webhook::Webhook;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, CqrsFramework, EventStore};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::Mutex;

/// The plain event store of aggregate `A` (no snapshots).
type AggregateEvents<A> = PersistedEventStore<Repository, A>;
/// The cqrs-es framework of aggregate `A`.
type Framework<A> = CqrsFramework<A, AggregateEvents<A>>;

/// The event repository of the open store: postgres-es or sqlite-es write (and map a taken
/// sequence to an optimistic-lock conflict); reads go through [`super::log`], so a row that does
/// not parse fails the load of its own aggregate with a deserialization error, never a panic.
pub struct Repository {
    db: Db,
    writer: Writer,
}

/// The cqrs-es repository that writes.
enum Writer {
    /// postgres-es.
    Postgres(PostgresEventRepository),
    /// sqlite-es.
    Sqlite(SqliteEventRepository),
}

impl Repository {
    fn of(db: &Db) -> Self {
        let writer = match db {
            Db::Postgres(pool) => Writer::Postgres(PostgresEventRepository::new(pool.clone())),
            Db::Sqlite(embedded) => Writer::Sqlite(SqliteEventRepository::new(embedded.pool.clone())),
        };
        Self { db: db.clone(), writer }
    }

    /// The events of stream `id` of `A` after `after`, for cqrs-es.
    async fn read<A: Aggregate>(&self, id: &str, after: usize) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let unavailable = |e: sqlx::Error| match super::is_transient(&e) {
            true => PersistenceError::ConnectionError(Box::new(e)),
            false => PersistenceError::UnknownError(Box::new(e)),
        };
        let mut pooled = self.db.acquire().await.map_err(unavailable)?;
        let events = log::read_stream(&mut pooled.conn(), A::TYPE, id).await.map_err(unavailable)?;
        events
            .into_iter()
            .filter(|e| e.sequence > after as i64)
            .map(|e| match &e.unreadable {
                Some(unreadable) => {
                    Err(PersistenceError::DeserializationError(Box::new(e.undecodable(&unreadable.reason))))
                }
                None => Ok(SerializedEvent {
                    aggregate_id: e.aggregate_id,
                    sequence: e.sequence as usize,
                    aggregate_type: e.aggregate_type,
                    event_type: e.event_type,
                    event_version: e.event_version,
                    payload: e.payload,
                    metadata: e.metadata,
                }),
            })
            .collect()
    }
}

macro_rules! delegate {
    ($self:expr, |$r:ident| $body:expr) => {
        match &$self.writer {
            Writer::Postgres($r) => $body,
            Writer::Sqlite($r) => $body,
        }
    };
}

impl PersistedEventRepository for Repository {
    async fn get_events<A: Aggregate>(&self, id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.read::<A>(id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.read::<A>(id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(&self, id: &str) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        delegate!(self, |r| r.get_snapshot::<A>(id).await)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        delegate!(self, |r| r.persist::<A>(events, snapshot_update).await)
    }

    async fn stream_events<A: Aggregate>(&self, id: &str) -> Result<ReplayStream, PersistenceError> {
        delegate!(self, |r| r.stream_events::<A>(id).await)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        delegate!(self, |r| r.stream_all_events::<A>().await)
    }
}

fn event_store<A: Aggregate>(db: &Db) -> AggregateEvents<A> {
    PersistedEventStore::new_event_store(Repository::of(db)).with_upcasters(crate::domain::upcasters())
}

fn framework<A: Aggregate>(db: &Db, services: A::Services) -> Framework<A> {
    CqrsFramework::new(event_store(db), vec![], services)
}

/// Loads aggregates straight from their streams (for preconditions, responses and audit).
#[derive(Clone)]
pub struct EventStores {
    db: Db,
}

impl EventStores {
    /// Stores on `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The current state of aggregate `id` (the default state when it has no events).
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<A, AggregateError<A::Error>> {
        let mut context = event_store::<A>(&self.db).load_aggregate(id).await?;
        Ok(std::mem::take(context.aggregate()))
    }
}

#[async_trait]
impl CommandPreconditions for EventStores {
    async fn vehicle_status(&self, vin: &str) -> Result<Option<VehicleStatus>, PreconditionError> {
        let vehicle = self.load::<Vehicle>(vin).await.map_err(|e| PreconditionError(e.to_string()))?;
        Ok(Some(vehicle.status).filter(|s| *s != VehicleStatus::Unknown))
    }

    async fn consent_version(
        &self,
        vin: &str,
        subject: &str,
        purpose: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<u32>, PreconditionError> {
        let consent = self.load::<Consent>(vin).await.map_err(|e| PreconditionError(e.to_string()))?;
        Ok(consent.allows(subject, purpose, at))
    }
}

/// One cqrs-es framework per aggregate.
pub struct Frameworks {
    /// Vehicles.
    pub vehicles: Framework<Vehicle>,
    /// Devices.
    pub devices: Framework<Device>,
    /// Consents.
    pub consents: Framework<Consent>,
    /// Commands.
    pub commands: Framework<Command>,
    /// Webhook subscriptions.
    pub webhooks: Framework<Webhook>,
    /// Direct loads of aggregates.
    pub stores: EventStores,
    /// What the Command aggregate checks, read from the log when it asks.
    preconditions: CommandServices,
    stripes: Arc<Stripes>,
    db: Db,
}

/// An aggregate tacho stores, with the services its commands are handled with.
pub trait Stored: Aggregate {
    /// The services of `frameworks` for this aggregate.
    fn services(frameworks: &Frameworks) -> Self::Services;
}

impl Stored for Vehicle {
    fn services(_: &Frameworks) -> Self::Services {}
}

impl Stored for Device {
    fn services(_: &Frameworks) -> Self::Services {}
}

impl Stored for Consent {
    fn services(_: &Frameworks) -> Self::Services {}
}

impl Stored for Webhook {
    fn services(_: &Frameworks) -> Self::Services {}
}

impl Stored for Command {
    fn services(frameworks: &Frameworks) -> Self::Services {
        Arc::clone(&frameworks.preconditions)
    }
}

impl Frameworks {
    /// Frameworks writing to `db`.
    pub fn new(db: &Db) -> Self {
        let stores = EventStores::new(db.clone());
        let preconditions: CommandServices = Arc::new(stores.clone());
        Self {
            vehicles: framework(db, ()),
            devices: framework(db, ()),
            consents: framework(db, ()),
            commands: framework(db, Arc::clone(&preconditions)),
            webhooks: framework(db, ()),
            stores,
            preconditions,
            stripes: Arc::new(Stripes::new()),
            db: db.clone(),
        }
    }
}

/// Writers of one instance queue per aggregate (striped locks) instead of colliding: without it,
/// N concurrent commands on one aggregate cost O(N²) optimistic-lock retries. Writers of other
/// instances still collide, and [`Frameworks::execute`] retries them.
struct Stripes(Vec<Arc<Mutex<()>>>);

impl Stripes {
    fn new() -> Self {
        Self((0..256).map(|_| Arc::new(Mutex::new(()))).collect())
    }

    fn of(&self, aggregate_type: &str, id: &str) -> &Arc<Mutex<()>> {
        &self.0[self.index(aggregate_type, id)]
    }

    fn index(&self, aggregate_type: &str, id: &str) -> usize {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (aggregate_type, id).hash(&mut hasher);
        (hasher.finish() % self.0.len() as u64) as usize
    }
}

impl Frameworks {
    /// Runs `command` on aggregate `id` (of `framework`'s type): its stream read and its events
    /// appended in one transaction; retried with a short jittered backoff when a writer of another
    /// instance took the next sequence meanwhile.
    pub async fn execute<A>(
        &self,
        framework: &Framework<A>,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<(), AggregateError<A::Error>>
    where
        A: Stored,
        A::Command: Clone,
    {
        let _turn = self.stripes.of(A::TYPE, id).lock().await;
        self.execute_many(framework, &[(id.to_owned(), vec![command])], metadata).await
    }

    /// Runs each aggregate's commands (aggregates of `framework`'s type, each id once) and appends
    /// all their events in one transaction: a fleet imported at once. All or nothing: a command
    /// refused refuses the set. Retried with a short jittered backoff when another writer appended
    /// to one of the streams meanwhile.
    pub async fn execute_many<A>(
        &self,
        framework: &Framework<A>,
        commands: &[(String, Vec<A::Command>)],
        metadata: &HashMap<String, String>,
    ) -> Result<(), AggregateError<A::Error>>
    where
        A: Stored,
        A::Command: Clone,
    {
        let _ = framework;
        let services = A::services(self);
        let mut attempts = 0;
        loop {
            let mut together = self.together();
            together.begin().await.map_err(database)?;
            for (id, commands) in commands {
                together.decide::<A>(id, commands.clone(), &services).await?;
            }
            match together.commit(metadata).await {
                Ok(()) => return Ok(()),
                Err(e) => again_after(e, &mut attempts).await?,
            }
        }
    }
}

impl Frameworks {
    /// Runs `command` on command `id` with its vehicle `vin`'s status and consents read in the same
    /// transaction (a request costs one); returns the command as it is after, and where its events
    /// sit in commit order.
    pub async fn execute_command(
        &self,
        id: &str,
        vin: &str,
        command: crate::domain::command::CommandCommand,
        metadata: &HashMap<String, String>,
    ) -> Result<(Command, Option<Checkpoint>), AggregateError<crate::domain::command::CommandError>> {
        let _turn = self.stripes.of(Command::TYPE, id).lock().await;
        let mut attempts = 0;
        loop {
            let mut together = self.together();
            together.begin().await.map_err(database)?;
            let streams = [(Vehicle::TYPE, vin), (Consent::TYPE, vin), (Command::TYPE, id)];
            together.prefetch(&streams).await.map_err(database)?;
            let vehicle = together.load::<Vehicle>(vin).await.map_err(retyped)?.0;
            let consent = together.load::<Consent>(vin).await.map_err(retyped)?.0;
            let known: CommandServices = Arc::new(Known { vehicle, consent });
            let decided = together.decide::<Command>(id, vec![command.clone()], &known).await?;
            match together.commit_at(metadata).await {
                Ok(at) => return Ok((decided, at)),
                Err(e) => again_after(e, &mut attempts).await?,
            }
        }
    }
}

/// After a commit refused with `e`: waits a short jittered backoff when another writer took the
/// next sequence (`attempts` of at most 50 so far), else says why the command failed.
async fn again_after<E: std::error::Error>(e: TogetherError, attempts: &mut u64) -> Result<(), AggregateError<E>> {
    match e {
        TogetherError::Conflict if *attempts < 50 => {
            *attempts += 1;
            let jitter = u64::from(rand::random::<u8>() % 5);
            tokio::time::sleep(std::time::Duration::from_millis((*attempts).min(10) + jitter)).await;
            Ok(())
        }
        TogetherError::Conflict => Err(AggregateError::AggregateConflict),
        TogetherError::Database(e) => Err(database(e)),
    }
}

/// A failure to load another aggregate, as the failure of this one's command.
fn retyped<E: std::error::Error + Send + Sync + 'static, F: std::error::Error>(
    e: AggregateError<E>,
) -> AggregateError<F> {
    match e {
        AggregateError::UserError(e) => AggregateError::UnexpectedError(Box::new(e)),
        AggregateError::AggregateConflict => AggregateError::AggregateConflict,
        AggregateError::DatabaseConnectionError(e) => AggregateError::DatabaseConnectionError(e),
        AggregateError::DeserializationError(e) => AggregateError::DeserializationError(e),
        AggregateError::UnexpectedError(e) => AggregateError::UnexpectedError(e),
    }
}

/// A database failure as cqrs-es says it: a connection error when it may pass by itself.
pub fn database<E: std::error::Error>(e: sqlx::Error) -> AggregateError<E> {
    match super::is_transient(&e) {
        true => AggregateError::DatabaseConnectionError(Box::new(e)),
        false => AggregateError::UnexpectedError(Box::new(e)),
    }
}

/// What the Command aggregate checks, as read inside a [`Together`]'s locks.
pub struct Known {
    /// The vehicle.
    pub vehicle: Vehicle,
    /// Its consents.
    pub consent: Consent,
}

#[async_trait]
impl CommandPreconditions for Known {
    async fn vehicle_status(&self, _vin: &str) -> Result<Option<VehicleStatus>, PreconditionError> {
        Ok(Some(self.vehicle.status).filter(|s| *s != VehicleStatus::Unknown))
    }

    async fn consent_version(
        &self,
        _vin: &str,
        subject: &str,
        purpose: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<u32>, PreconditionError> {
        Ok(self.consent.allows(subject, purpose, at))
    }
}

/// The lock key of what decides whether a command may go to vehicle `vin` (its status, its
/// consents): a command is released holding it, and a revocation or a lifecycle change commits
/// holding it, so a release either sees the change or is committed before it, never in between.
pub fn send_rules(vin: &str) -> String {
    format!("send-rules:{vin}")
}

/// Changes to several aggregates decided together and appended in one transaction: all of them or
/// none (a device replaced on its vehicle, a device registered and attached). Each aggregate decides
/// as it would alone; a refusal of any leaves every stream as it was.
pub struct Together {
    db: Db,
    changes: Vec<Change>,
    /// The transaction, opened by the first [`Together::lock`] (else at commit); aggregates are
    /// then loaded on it.
    tx: Option<super::Tx>,
    /// This instance's turns on the keys locked: one waiter per key at the database, so waiters
    /// do not take every pooled connection.
    stripes: Arc<Stripes>,
    turns: Vec<(usize, tokio::sync::OwnedMutexGuard<()>)>,
    /// Streams read ahead on the transaction ([`Together::prefetch`]), by (type, id).
    prefetched: HashMap<(String, String), Vec<log::StoredEvent>>,
}

/// The events one aggregate decided, after its last sequence.
struct Change {
    aggregate_type: &'static str,
    id: String,
    after: usize,
    events: Vec<(String, String, Value)>,
}

/// Why changes decided together were not committed.
#[derive(Debug, thiserror::Error)]
pub enum TogetherError {
    /// Another writer changed one of the aggregates meanwhile: decide again.
    #[error("another writer changed one of the aggregates; decide again")]
    Conflict,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Together {
    /// Runs `commands` in order on aggregate `id` of `A` as it is now; returns its state after them.
    /// Its events are kept for [`Together::commit`].
    pub async fn decide<A: Aggregate>(
        &mut self,
        id: &str,
        commands: Vec<A::Command>,
        services: &A::Services,
    ) -> Result<A, AggregateError<A::Error>> {
        if self.changes.iter().any(|c| c.aggregate_type == A::TYPE && c.id == id) {
            return Err(AggregateError::UnexpectedError(
                "one aggregate decided twice in one set: pass all its commands at once".into(),
            ));
        }
        // On this set's transaction once it holds a lock: no second pooled connection while it waits.
        let (mut aggregate, after) = self.load::<A>(id).await?;
        let mut decided = Vec::new();
        for command in commands {
            let sink = cqrs_es::event_sink::EventSink::default();
            aggregate.handle(command, services, &sink).await.map_err(AggregateError::UserError)?;
            decided.extend(sink.collect().await);
        }
        self.keep::<A>(id, after, decided)?;
        Ok(aggregate)
    }

    /// Runs each of `commands` in order on aggregate `id` of `A`, each on the state the ones before
    /// it left; one refused adds nothing and the next goes on. Each command's outcome.
    pub async fn decide_each<A: Aggregate + Clone>(
        &mut self,
        id: &str,
        commands: Vec<A::Command>,
        services: &A::Services,
    ) -> Result<Vec<Result<(), A::Error>>, AggregateError<A::Error>> {
        if self.changes.iter().any(|c| c.aggregate_type == A::TYPE && c.id == id) {
            return Err(AggregateError::UnexpectedError(
                "one aggregate decided twice in one set: pass all its commands at once".into(),
            ));
        }
        let (mut aggregate, after) = self.load::<A>(id).await?;
        let (mut decided, mut outcomes) = (Vec::new(), Vec::new());
        for command in commands {
            let before = aggregate.clone();
            let sink = cqrs_es::event_sink::EventSink::default();
            match aggregate.handle(command, services, &sink).await {
                Ok(()) => {
                    decided.extend(sink.collect().await);
                    outcomes.push(Ok(()));
                }
                Err(refused) => {
                    aggregate = before;
                    outcomes.push(Err(refused));
                }
            }
        }
        self.keep::<A>(id, after, decided)?;
        Ok(outcomes)
    }

    /// Keeps the events `decided` on aggregate `id` of `A` (after its sequence `after`) for the commit.
    fn keep<A: Aggregate>(
        &mut self,
        id: &str,
        after: usize,
        decided: Vec<A::Event>,
    ) -> Result<(), AggregateError<A::Error>> {
        let events = decided
            .into_iter()
            .map(|event| {
                let payload = serde_json::to_value(&event).map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
                Ok((cqrs_es::DomainEvent::event_type(&event), cqrs_es::DomainEvent::event_version(&event), payload))
            })
            .collect::<Result<Vec<_>, AggregateError<A::Error>>>()?;
        self.changes.push(Change { aggregate_type: A::TYPE, id: id.to_owned(), after, events });
        Ok(())
    }

    /// Aggregate `id` of `A` as it is now, and its last sequence: read on this set's transaction
    /// once it has one (so inside its locks), else from the pool.
    pub async fn load<A: Aggregate>(&mut self, id: &str) -> Result<(A, usize), AggregateError<A::Error>> {
        let key = (A::TYPE.to_owned(), id.to_owned());
        let events = match (self.prefetched.remove(&key), &mut self.tx) {
            (Some(events), _) => events,
            (None, Some(tx)) => log::read_stream(&mut tx.conn(), A::TYPE, id)
                .await
                .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?,
            (None, None) => {
                let context = event_store::<A>(&self.db).load_aggregate(id).await?;
                return Ok((context.aggregate, context.current_sequence));
            }
        };
        let mut aggregate = A::default();
        let mut sequence = 0;
        for event in &events {
            let decoded = event.decode::<A::Event>().map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
            aggregate.apply(decoded);
            sequence = event.sequence as usize;
        }
        Ok((aggregate, sequence))
    }

    /// Reads `streams` (type, id) now on this set's transaction, in one statement: each is then
    /// loaded ([`Together::load`]) from what was read, once. Without a transaction (SQLite), nothing:
    /// each is read when loaded.
    pub async fn prefetch(&mut self, streams: &[(&str, &str)]) -> Result<(), sqlx::Error> {
        let Some(tx) = &mut self.tx else { return Ok(()) };
        let mut streams = streams.to_vec();
        streams.sort_unstable();
        streams.dedup();
        let events = log::read_streams(&mut tx.conn(), &streams).await?;
        for (aggregate_type, id) in &streams {
            self.prefetched.insert(((*aggregate_type).to_owned(), (*id).to_owned()), Vec::new());
        }
        for event in events {
            if let Some(stream) = self.prefetched.get_mut(&(event.aggregate_type.clone(), event.aggregate_id.clone())) {
                stream.push(event);
            }
        }
        Ok(())
    }

    /// PostgreSQL: opens this set's transaction now: the aggregates are then loaded on it, and their
    /// reads and appends cost one transaction. SQLite: nothing; its one writer lock is taken at the
    /// commit, after every turn of this instance the set takes ([`Together::lock`]): a write
    /// transaction opened earlier would hold it while waiting for a turn whose holder waits for it.
    pub async fn begin(&mut self) -> Result<(), sqlx::Error> {
        if let (None, Db::Postgres(pool)) = (&self.tx, &self.db) {
            self.tx = Some(super::Tx::Postgres(pool.begin().await?));
        }
        Ok(())
    }

    /// The connection of this set's transaction, once it has one.
    pub fn conn(&mut self) -> Option<super::Conn<'_>> {
        self.tx.as_mut().map(|tx| tx.conn())
    }

    /// Holds `key` until the commit: whoever else takes it (another set deciding together, a
    /// consent's change) waits, so what this set reads after taking it stays true until it commits.
    /// Within this instance a striped mutex; across instances (PostgreSQL) also an advisory lock of
    /// this set's transaction, which it then reads on. SQLite has one instance: the mutex is all.
    pub async fn lock(&mut self, key: &str) -> Result<(), sqlx::Error> {
        let stripe = self.stripes.index("lock", key);
        if !self.turns.iter().any(|(held, _)| *held == stripe) {
            let turn = Arc::clone(&self.stripes.0[stripe]).lock_owned().await;
            self.turns.push((stripe, turn));
        }
        if let Db::Postgres(pool) = &self.db {
            if self.tx.is_none() {
                self.tx = Some(super::Tx::Postgres(pool.begin().await?));
            }
            if let Some(super::Tx::Postgres(tx)) = &mut self.tx {
                let lock = "SELECT pg_advisory_xact_lock(hashtext('tacho-stream:' || $1))";
                sqlx::query(lock).bind(key).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// The transaction the decided events will be appended in, for the caller to write more in it
    /// first: opened now if need be (SQLite: its writer lock, so only once every turn is taken), and
    /// already a writer of the log (PostgreSQL: see [`super::postgres::log::lock_log`]).
    pub async fn writing(&mut self) -> Result<super::Conn<'_>, sqlx::Error> {
        if self.tx.is_none() {
            self.tx = Some(self.db.begin().await?);
        }
        let tx = match &mut self.tx {
            Some(tx) => tx,
            None => return Err(sqlx::Error::PoolClosed),
        };
        if let super::Conn::Postgres(c) = tx.conn() {
            super::postgres::log::lock_log(c).await?;
        }
        Ok(tx.conn())
    }

    /// Appends every decided event, with `metadata`, in one transaction.
    pub async fn commit(self, metadata: &HashMap<String, String>) -> Result<(), TogetherError> {
        self.commit_at(metadata).await.map(|_| ())
    }

    /// [`Together::commit`]; where the last event appended sits in commit order (what a reader must
    /// pass to have seen them all), `None` when nothing was appended.
    pub async fn commit_at(mut self, metadata: &HashMap<String, String>) -> Result<Option<Checkpoint>, TogetherError> {
        let metadata = serde_json::to_value(metadata).unwrap_or(Value::Null);
        let mut tx = match self.tx.take() {
            Some(tx) => tx,
            None => self.db.begin().await?,
        };
        let events: Vec<log::NewEvent<'_>> = self
            .changes
            .iter()
            .flat_map(|change| {
                change.events.iter().enumerate().map(|(n, (event_type, event_version, payload))| log::NewEvent {
                    aggregate_type: change.aggregate_type,
                    aggregate_id: &change.id,
                    sequence: (change.after + n + 1) as i64,
                    event_type,
                    event_version,
                    payload,
                    metadata: &metadata,
                })
            })
            .collect();
        let appended = match log::append_events(&mut tx.conn(), &events).await {
            Err(e) if super::is_unique_violation(&e) => return Err(TogetherError::Conflict),
            other => other?,
        };
        drop(events);
        tx.commit().await?;
        if appended.is_some() {
            self.db.signal(EVENTS_CHANNEL, String::new());
        }
        Ok(appended)
    }
}

impl Frameworks {
    /// A new set of changes to decide together.
    pub fn together(&self) -> Together {
        Together {
            db: self.db.clone(),
            changes: Vec::new(),
            tx: None,
            stripes: Arc::clone(&self.stripes),
            turns: Vec::new(),
            prefetched: HashMap::new(),
        }
    }
}
