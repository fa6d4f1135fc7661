//! The dispatcher: a checkpointed subscriber of the log that publishes requested commands to their
//! vehicles. A command becomes `dispatched` only after the broker's PUBACK; a crash between the
//! publish and the record re-publishes it on restart with the same command id (at-least-once).

use super::codec::CommandRequest;
use super::publisher::{Message, Publisher};
use super::topics;
use crate::adapters::sql::Db;
use crate::adapters::Frameworks;
use crate::domain::command::{Command, CommandCommand, CommandStatus};
use crate::metrics::Metrics;
use crate::on_db;
use crate::projections::{Process, ProjectionError, StoredEvent};
use bytes::Bytes;
use chrono::{Duration, Utc};
use futures::StreamExt;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use std::collections::HashMap;
use std::sync::Arc;

/// Publishes command requests.
pub struct Dispatcher {
    /// The database (connection state of vehicles).
    pub db: Db,
    /// Frameworks to record dispatch, queueing and fast failures.
    pub frameworks: Arc<Frameworks>,
    /// Confirmed publishing.
    pub publisher: Publisher,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

fn effect(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Effect(e.to_string())
}

fn metadata() -> HashMap<String, String> {
    HashMap::from([("actor".to_owned(), "tacho:dispatcher".to_owned())])
}

impl Dispatcher {
    /// Subscriber name.
    pub const NAME: &'static str = "dispatcher";

    /// Sends command `id` if it still waits to be sent: published when its vehicle is online, else
    /// queued (store-and-forward) or failed fast. Safe to call again for the same command.
    pub async fn dispatch(&self, id: &str) -> Result<(), ProjectionError> {
        let command = self.frameworks.stores.load::<Command>(id).await.map_err(effect)?;
        if !matches!(command.status, CommandStatus::Requested | CommandStatus::Queued) {
            return Ok(());
        }
        let sql = "SELECT connected FROM rm_vehicles WHERE vin = $1";
        let online: Option<bool> =
            on_db!(&self.db, |p| sqlx::query_scalar(sql).bind(&command.vin).fetch_optional(p).await)?;
        let online = online.unwrap_or(false);
        let now = Utc::now();
        let fw = &self.frameworks;
        if !online {
            let next = match (command.status, command.store_and_forward) {
                (CommandStatus::Requested, true) => CommandCommand::Queue { at: now },
                (CommandStatus::Requested, false) => CommandCommand::FailOffline { at: now },
                // Queued: it waits for the vehicle to come online, or for its TTL.
                _ => return Ok(()),
            };
            return fw.execute(&fw.commands, id, next, &metadata()).await.map_err(effect);
        }
        let request = CommandRequest {
            command_id: uuid::Uuid::parse_str(id).map_err(effect)?,
            name: command.name.clone(),
            params: command.params.clone(),
            issued_at: now,
            expires_at: now + Duration::seconds(i64::from(command.timeout_s)),
        };
        let properties = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(command.timeout_s),
            response_topic: Some(topics::command_response(&command.vin, &command.name)),
            correlation_data: Some(Bytes::from(id.to_owned())),
            content_type: Some("application/json".to_owned()),
            ..Default::default()
        };
        let message = Message {
            topic: topics::command_request(&command.vin, &command.name),
            payload: serde_json::to_vec(&request).map_err(effect)?,
            properties,
        };
        if let Err(e) = self.publisher.publish(message).await {
            self.metrics.inc("tacho_publish_failures_total", &[("kind", "command")]);
            return Err(effect(format!("publishing command {id}: {e}")));
        }
        self.metrics.inc("tacho_commands_published_total", &[]);
        fw.execute(&fw.commands, id, CommandCommand::MarkDispatched { at: Utc::now() }, &metadata())
            .await
            .map_err(effect)
    }

    /// Sends the queued commands of `vin` (it came online).
    pub async fn send_queued(&self, vin: &str) -> Result<(), ProjectionError> {
        let sql = "SELECT command_id FROM rm_commands WHERE vin = $1 AND status = 'queued' ORDER BY requested_at";
        let queued: Vec<uuid::Uuid> = on_db!(&self.db, |p| sqlx::query_scalar(sql).bind(vin).fetch_all(p).await)?;
        for id in queued {
            self.dispatch(&id.to_string()).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Process for Dispatcher {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Command"]
    }

    async fn handle(&self, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        // Owned ids: borrowing closures here trip the `Send` check of async-trait futures.
        let requested: Vec<String> =
            events.iter().filter(|e| e.event_type == "CommandRequested").map(|e| e.aggregate_id.clone()).collect();
        // Every dispatch runs to its end before the first error is returned: dropping one between
        // its PUBACK and its record would publish it twice on the retry.
        let outcomes: Vec<Result<(), ProjectionError>> = futures::stream::iter(requested)
            .map(|id| async move { self.dispatch(&id).await })
            .buffer_unordered(64)
            .collect()
            .await;
        outcomes.into_iter().collect()
    }
}
