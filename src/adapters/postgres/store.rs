//! The cqrs-es frameworks on postgres-es (plain event store: no snapshots, no in-process queries),
//! and the strongly consistent precondition lookups the Command aggregate needs.

use crate::domain::command::{Command, CommandPreconditions, CommandServices, PreconditionError};
use crate::domain::consent::Consent;
use crate::domain::device::Device;
use crate::domain::vehicle::{Vehicle, VehicleStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, CqrsFramework, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::Mutex;

type Store<A> = PersistedEventStore<PostgresEventRepository, A>;
type Framework<A> = CqrsFramework<A, Store<A>>;

fn store<A: Aggregate>(pool: &PgPool) -> Store<A> {
    PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
}

fn framework<A: Aggregate>(pool: &PgPool, services: A::Services) -> Framework<A> {
    CqrsFramework::new(store(pool), vec![], services)
}

/// Loads aggregates straight from their streams (for preconditions, responses and audit).
#[derive(Clone)]
pub struct EventStores {
    pool: PgPool,
}

impl EventStores {
    /// Stores on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The current state of aggregate `id` (the default state when it has no events).
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<A, AggregateError<A::Error>> {
        let mut context = store::<A>(&self.pool).load_aggregate(id).await?;
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
    /// Direct loads of aggregates.
    pub stores: EventStores,
    stripes: Stripes,
}

impl Frameworks {
    /// Frameworks writing to `pool`.
    pub fn new(pool: &PgPool) -> Self {
        let stores = EventStores::new(pool.clone());
        let preconditions: CommandServices = Arc::new(stores.clone());
        Self {
            vehicles: framework(pool, ()),
            devices: framework(pool, ()),
            consents: framework(pool, ()),
            commands: framework(pool, preconditions),
            stores,
            stripes: Stripes::new(),
        }
    }
}

/// Writers of one instance queue per aggregate (striped locks) instead of colliding: without it,
/// N concurrent commands on one aggregate cost O(N²) optimistic-lock retries. Writers of other
/// instances still collide, and [`Frameworks::execute`] retries them.
struct Stripes(Vec<Mutex<()>>);

impl Stripes {
    fn new() -> Self {
        Self((0..256).map(|_| Mutex::new(())).collect())
    }

    fn of(&self, aggregate_type: &str, id: &str) -> &Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (aggregate_type, id).hash(&mut hasher);
        &self.0[(hasher.finish() % self.0.len() as u64) as usize]
    }
}

impl Frameworks {
    /// Runs `command` on aggregate `id` of `framework`, retrying with a short jittered backoff when a
    /// writer of another instance took the next sequence.
    pub async fn execute<A>(
        &self,
        framework: &Framework<A>,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<(), AggregateError<A::Error>>
    where
        A: Aggregate,
        A::Command: Clone,
    {
        let _turn = self.stripes.of(A::TYPE, id).lock().await;
        let mut attempts = 0;
        loop {
            match framework.execute_with_metadata(id, command.clone(), metadata.clone()).await {
                Err(AggregateError::AggregateConflict) if attempts < 50 => {
                    attempts += 1;
                    let jitter = u64::from(rand::random::<u8>() % 5);
                    tokio::time::sleep(std::time::Duration::from_millis(attempts.min(10) + jitter)).await;
                }
                other => return other,
            }
        }
    }
}
