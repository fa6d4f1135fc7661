//! Commands leave over MQTT: the [`CommandLink`] of the processes as a QoS 1 publish on the
//! vehicle's request topic, confirmed by the broker's PUBACK.

use super::codec::CommandRequest;
use super::publisher::{Acked, Message, PublishError, Publisher};
use super::topics;
use crate::metrics::Metrics;
use crate::processes::{CommandLink, Outgoing, SendError, Sent};
use bytes::Bytes;
use chrono::{Duration, Utc};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use std::sync::Arc;

/// Command requests published through confirmed lanes.
pub struct MqttLink {
    /// Confirmed publishing.
    pub publisher: Publisher,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl CommandLink for MqttLink {
    async fn send(&self, command: &Outgoing) -> Result<Sent, SendError> {
        let now = Utc::now();
        let id = command.command_id.to_string();
        let request = CommandRequest {
            command_id: command.command_id,
            name: command.name.clone(),
            params: command.params.clone(),
            issued_at: now,
            expires_at: now + Duration::seconds(i64::from(command.timeout_s)),
        };
        let properties = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(command.timeout_s),
            response_topic: Some(topics::command_response(&command.vin, &command.name)),
            correlation_data: Some(Bytes::from(id)),
            content_type: Some("application/json".to_owned()),
            ..Default::default()
        };
        let message = Message {
            topic: topics::command_request(&command.vin, &command.name),
            payload: serde_json::to_vec(&request).map_err(|e| SendError::Refused(e.to_string()))?,
            properties,
        };
        match self.publisher.publish(message).await {
            Ok(Acked::Success) => {
                self.metrics.inc("tacho_commands_published_total", &[]);
                Ok(Sent::Delivered)
            }
            Ok(Acked::NoMatchingSubscribers) => {
                self.metrics.inc("tacho_publish_failures_total", &[("kind", "command"), ("reason", "no_subscriber")]);
                Ok(Sent::NoSubscriber)
            }
            Err(PublishError::Refused(reason)) => {
                self.metrics.inc("tacho_publish_failures_total", &[("kind", "command"), ("reason", "refused")]);
                Err(SendError::Refused(reason))
            }
            Err(e) => {
                self.metrics.inc("tacho_publish_failures_total", &[("kind", "command"), ("reason", "unavailable")]);
                Err(SendError::Unavailable(e.to_string()))
            }
        }
    }
}
