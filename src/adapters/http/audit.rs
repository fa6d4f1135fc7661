//! The raw log for auditors: one stream, or the global feed in commit order.

use super::auth::{Principal, Role};
use super::error::{ApiError, ErrorCode, Json, Path, Problem, Query};
use super::state::AppState;
use crate::adapters::log;
use crate::adapters::verify::{self as verification, VerifyReport};
use crate::projections::{Checkpoint, StoredEvent};
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream)).routes(routes!(feed)).routes(routes!(verify))
}

/// One event of the log with its metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogEvent {
    /// Global position.
    pub position: i64,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Stream id.
    pub aggregate_id: String,
    /// Sequence in the stream, from 1.
    pub sequence: i64,
    /// Event type.
    pub event_type: String,
    /// Payload schema version.
    pub event_version: String,
    /// Payload.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Actor, request id, roles.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// When the database recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl From<StoredEvent> for LogEvent {
    fn from(e: StoredEvent) -> Self {
        Self {
            position: e.position,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }
    }
}

/// A page of the global feed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Feed {
    /// Events in commit order.
    pub items: Vec<LogEvent>,
    /// Pass as `after` to continue; null when nothing was returned.
    pub next_after: Option<i64>,
}

const AGGREGATE_TYPES: [&str; 6] = ["Vehicle", "Device", "Consent", "Command", "VehicleState", "Broadcast"];

/// Every event of one stream, in sequence order (auditor).
#[utoipa::path(get, path = "/v1/audit/streams/{aggregate_type}/{id}", tag = "audit",
    params(("aggregate_type" = String, Path, description = "Vehicle, Device, Consent, Command, VehicleState or Broadcast"), ("id" = String, Path, description = "Stream id")),
    responses((status = 200, description = "The stream", body = Vec<LogEvent>),
              (status = 404, description = "No such stream", body = Problem)))]
async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    Path((aggregate_type, id)): Path<(String, String)>,
) -> Result<Json<Vec<LogEvent>>, ApiError> {
    principal.require(&[Role::Auditor])?;
    if !AGGREGATE_TYPES.contains(&aggregate_type.as_str()) {
        return Err(ApiError::new(ErrorCode::NotFound, format!("unknown aggregate type '{aggregate_type}'")));
    }
    let events = log::read_stream(&mut state.db.acquire().await?.conn(), &aggregate_type, &id).await?;
    if events.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no stream {aggregate_type}/{id}")));
    }
    Ok(Json(events.into_iter().map(LogEvent::from).collect()))
}

/// Where to read the feed from.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Position of the last event already read (0 or absent: from the start).
    pub after: Option<i64>,
    /// 1..1000, default 100.
    pub limit: Option<i64>,
}

/// The global log in commit order after a position (auditor): a feed nothing is ever inserted into
/// behind the reader.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", params(FeedQuery),
    responses((status = 200, description = "Events after `after`", body = Feed),
              (status = 400, description = "Unknown position or bad limit", body = Problem)))]
async fn feed(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<FeedQuery>,
) -> Result<Json<Feed>, ApiError> {
    principal.require(&[Role::Auditor])?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "limit must be from 1 to 1000"));
    }
    let mut pooled = state.db.acquire().await?;
    let mut conn = pooled.conn();
    let after = match q.after.filter(|p| *p > 0) {
        None => Checkpoint::default(),
        Some(position) => log::checkpoint_of(&mut conn, position)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, format!("no event at position {position}")))?,
    };
    let items: Vec<LogEvent> =
        log::read_after(&mut conn, after, None, limit).await?.events.into_iter().map(Into::into).collect();
    let next_after = items.last().map(|e| e.position).or(q.after);
    Ok(Json(Feed { items, next_after }))
}

/// What to verify; everything when empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Only streams of this aggregate type.
    pub aggregate_type: Option<String>,
    /// Only this stream (with `aggregate_type`).
    pub id: Option<String>,
}

/// Replay streams, fold them through their aggregates and compare with the read models (auditor).
#[utoipa::path(post, path = "/v1/audit/verify", tag = "audit", request_body = VerifyRequest,
    responses((status = 200, description = "The report; `mismatches` is empty when the read models reflect the log", body = VerifyReport),
              (status = 404, description = "Unknown aggregate type", body = Problem),
              (status = 422, description = "`id` without `aggregate_type`", body = Problem)))]
async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<VerifyRequest>,
) -> Result<Json<VerifyReport>, ApiError> {
    principal.require(&[Role::Auditor])?;
    if let Some(kind) = body.aggregate_type.as_deref() {
        if !AGGREGATE_TYPES.contains(&kind) {
            return Err(ApiError::new(ErrorCode::NotFound, format!("unknown aggregate type '{kind}'")));
        }
    } else if body.id.is_some() {
        return Err(ApiError::new(ErrorCode::ValidationFailed, "id needs aggregate_type"));
    }
    let report = verification::verify(&state.db, body.aggregate_type.as_deref(), body.id.as_deref(), &|_| {})
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(report))
}
