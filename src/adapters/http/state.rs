//! What every handler shares.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode};
use crate::auth::AuthKeys;
use crate::domain::streams;
use crate::domain::DomainError;
use crate::projections::consents::ConsentsProjection;
use crate::projections::vehicles::VehiclesProjection;
use crate::projections::Subscriptions;
use crate::store::aggregates::{send_rules, Together, TogetherError};
use crate::store::Db;
use crate::store::{log, Frameworks};
use cqrs_es::Aggregate;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Shared state of the HTTP API.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The cqrs-es frameworks.
    pub frameworks: Arc<Frameworks>,
    /// The subscribers (to wait for read models after a write).
    pub subscriptions: Arc<Subscriptions>,
    /// Token keys.
    pub auth: Arc<AuthKeys>,
    /// Ids of commands whose read model changed (fed by the commands projection's channel).
    pub command_changes: broadcast::Sender<Uuid>,
    /// MQTT URL devices connect to (connection-info).
    pub public_mqtt_url: Arc<str>,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Confirmed MQTT publishing (broadcasts); `None` without MQTT.
    pub publisher: Option<crate::adapters::mqtt::publisher::Publisher>,
    /// How long an Idempotency-Key names its command.
    pub idempotency_key_ttl: chrono::Duration,
    /// Open server-sent event streams.
    pub streams: Arc<super::capacity::Capacity>,
    /// Open long polls.
    pub long_polls: Arc<super::capacity::Capacity>,
    /// How long a request may take (a long poll: its wait more).
    pub request_timeout: std::time::Duration,
    /// How far a subscriber may lag before `/readyz` says so.
    pub ready_max_lag: std::time::Duration,
    /// The broker's device rights, when tacho keeps them (`/readyz` says when they cannot be kept).
    pub broker_rights: Vec<crate::adapters::mqtt::dynsec::Control>,
    /// The vehicle topics the broker refused tacho's consumer (`/readyz` names them).
    pub inbound_refused: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// The internal address ranges webhook endpoints may name (`Config::webhook_allowed`).
    pub webhook_allowed: Arc<[crate::webhooks::address::Range]>,
}

impl AppState {
    /// Waits until subscriber `projection` has applied the last event of the stream, so the next read
    /// sees the write (read-your-writes). Gives up after 2 s and says so (`false`): the write is
    /// durable anyway, and callers answer from the stream instead.
    pub async fn settle(&self, projection: &str, aggregate_type: &str, id: &str) -> Result<bool, ApiError> {
        let mut pooled = self.db.acquire().await?;
        let head = log::stream_head(&mut pooled.conn(), aggregate_type, id).await?;
        drop(pooled);
        let Some(head) = head else { return Ok(true) };
        Ok(self.settle_at(projection, head).await)
    }

    /// Waits until read model `projection` has applied the log up to `at` (what a write just
    /// committed); false when it lags more than 2 s.
    pub async fn settle_at(&self, projection: &str, at: log::Checkpoint) -> bool {
        let settled = self.subscriptions.wait_for(projection, at, Duration::from_secs(2)).await;
        if !settled {
            tracing::warn!(projection, position = at.position, "read model lags more than 2 s behind the log");
        }
        settled
    }

    /// Waits until the registry and consent read models have `vin`'s last changes: they are what
    /// admits its MQTT messages. `false` when either lags more than 2 s.
    pub async fn settle_admission(&self, vin: &str) -> Result<bool, ApiError> {
        let registered = self.settle(VehiclesProjection::NAME, streams::VEHICLE, vin).await?;
        Ok(self.settle(ConsentsProjection::NAME, streams::CONSENT, vin).await? && registered)
    }

    /// Runs `command` on aggregate `A` of vehicle `vin` (its consents, its registry entry) holding
    /// the vehicle's send rules ([`send_rules`]): no command is released on what it changes once it
    /// committed.
    pub async fn change_send_rules<A>(
        &self,
        principal: &Principal,
        vin: &str,
        command: A::Command,
    ) -> Result<(), ApiError>
    where
        A: Aggregate<Services = ()>,
        A::Command: Clone,
        A::Error: DomainError,
    {
        self.all_or_nothing(principal, |mut together| {
            let command = command.clone();
            async move {
                together.lock(&send_rules(vin)).await?;
                together.decide::<A>(vin, vec![command], &()).await?;
                Ok(together)
            }
        })
        .await
    }

    /// Decides with `decide` on a fresh [`Together`] and commits it: every aggregate's change or
    /// none. Decides again when another writer changed one of them meanwhile.
    pub async fn all_or_nothing<F, Fut>(&self, principal: &Principal, decide: F) -> Result<(), ApiError>
    where
        F: Fn(Together) -> Fut,
        Fut: std::future::Future<Output = Result<Together, ApiError>>,
    {
        let metadata = principal.metadata();
        for attempt in 0..20u64 {
            match decide(self.frameworks.together()).await?.commit(&metadata).await {
                Ok(()) => return Ok(()),
                Err(TogetherError::Conflict) => tokio::time::sleep(Duration::from_millis(attempt + 1)).await,
                Err(TogetherError::Database(e)) => return Err(e.into()),
            }
        }
        Err(ApiError::new(ErrorCode::Conflict, "too many concurrent changes; retry"))
    }
}
