//! `POST /v1/broadcasts`: one message to every vehicle subscribed to a topic, recorded in the log.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode, Json, Problem};
use super::state::AppState;
use crate::adapters::mqtt::codec::BroadcastMessage;
use crate::adapters::mqtt::publisher::{Message, PublishError};
use crate::adapters::mqtt::topics;
use crate::auth::Role;
use crate::domain::budget::{self, BudgetError};
use crate::store::log;
use crate::store::log::EVENTS_CHANNEL;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(broadcast))
}

/// Aggregate type of broadcast streams in the log.
pub const STREAM_TYPE: &str = crate::domain::streams::BROADCAST;

/// A broadcast to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// Topic below `broadcast/`: 1 to 8 segments of a-z, 0-9, `_`, `-`.
    #[schema(example = "weather/warning")]
    #[schema(pattern = "^[a-z0-9_-]{1,64}(/[a-z0-9_-]{1,64}){0,7}$")]
    pub topic: String,
    /// Any JSON.
    #[schema(value_type = serde_json::Value)]
    pub payload: Value,
    /// Seconds the message stays relevant (1..604800, default 3600): the MQTT message expiry.
    #[schema(minimum = 1, maximum = 604800)]
    pub expiry_s: Option<u32>,
}

/// A broadcast sent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BroadcastSent {
    /// Id (also its stream id in the log).
    pub broadcast_id: Uuid,
    /// Full MQTT topic.
    pub mqtt_topic: String,
    /// When it was published.
    pub issued_at: DateTime<Utc>,
    /// When it stops being relevant.
    pub expires_at: DateTime<Utc>,
}

fn valid_topic(topic: &str) -> bool {
    let segments: Vec<&str> = topic.split('/').collect();
    (1..=8).contains(&segments.len())
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        })
}

/// Broadcast a message to vehicles (service): recorded in the log, then published at QoS 1.
#[utoipa::path(post, path = "/v1/broadcasts", tag = "broadcasts", request_body = BroadcastRequest,
    responses((status = 202, description = "Published; the broker acknowledged it", body = BroadcastSent),
              (status = 413, description = "Payload over its 16 KiB budget (`payload_too_large`)", body = Problem),
              (status = 422, description = "Bad topic or expiry (`validation_failed`), payload nested too deep (`too_deep`)", body = Problem),
              (status = 503, description = "No broker (`unavailable`); the failure is recorded", body = Problem)))]
async fn broadcast(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<BroadcastRequest>,
) -> Result<(StatusCode, Json<BroadcastSent>), ApiError> {
    principal.require(&[Role::Service])?;
    if !valid_topic(&body.topic) {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "topic must be 1 to 8 '/'-separated segments of a-z, 0-9, '_', '-' (no wildcards)",
        ));
    }
    budget::check_value(&body.payload, budget::MAX_VALUE_BYTES).map_err(|e| match e {
        BudgetError::TooDeep => ApiError::new(ErrorCode::TooDeep, format!("payload: {e}")),
        BudgetError::TooBig { .. } => ApiError::new(ErrorCode::PayloadTooLarge, format!("payload: {e}")),
    })?;
    let expiry_s = body.expiry_s.unwrap_or(3600);
    if !(1..=604_800).contains(&expiry_s) {
        return Err(ApiError::new(ErrorCode::ValidationFailed, "expiry_s must be from 1 to 604800"));
    }
    let publisher = state
        .publisher
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "tacho runs without MQTT (TACHO_MQTT_URL=none)"))?;
    let id = Uuid::new_v4();
    let issued_at = Utc::now();
    let message = BroadcastMessage {
        broadcast_id: id,
        topic: body.topic.clone(),
        payload: body.payload,
        issued_at,
        expires_at: issued_at + Duration::seconds(i64::from(expiry_s)),
    };
    let mqtt_topic = topics::broadcast(&body.topic);
    let metadata = json!(principal.metadata());
    // Recorded before it is sent: the log never misses a broadcast that reached vehicles. The
    // connection goes back to the pool before the publish: a slow broker must not hold the pool.
    let sent = json!({ "BroadcastSent": { "message": message, "mqtt_topic": mqtt_topic } });
    let stream = id.to_string();
    log::append(&mut state.db.acquire().await?.conn(), STREAM_TYPE, &stream, 1, "BroadcastSent", &sent, &metadata)
        .await?;
    state.db.signal(EVENTS_CHANNEL, String::new());
    let publish = Message {
        topic: mqtt_topic.clone(),
        payload: serde_json::to_vec(&message).map_err(ApiError::internal)?,
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(expiry_s),
            content_type: Some("application/json".into()),
            ..Default::default()
        },
    };
    if let Err(e) = publisher.publish(publish).await {
        let reason = if matches!(e, PublishError::Refused(_)) { "refused" } else { "unavailable" };
        state.metrics.inc("tacho_publish_failures_total", &[("kind", "broadcast"), ("reason", reason)]);
        let failed = json!({ "BroadcastFailed": { "reason": e.to_string(), "at": Utc::now() } });
        let mut pooled = state.db.acquire().await?;
        log::append(&mut pooled.conn(), STREAM_TYPE, &stream, 2, "BroadcastFailed", &failed, &metadata).await?;
        state.db.signal(EVENTS_CHANNEL, String::new());
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("the broker did not acknowledge the broadcast: {e}"),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(BroadcastSent { broadcast_id: id, mqtt_topic, issued_at, expires_at: message.expires_at }),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn broadcast_topics_are_plain_segments() {
        assert!(super::valid_topic("weather/warning"));
        assert!(!super::valid_topic("weather/#"));
        assert!(!super::valid_topic("Weather"));
        assert!(!super::valid_topic("a//b"));
    }
}
