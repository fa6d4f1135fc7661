//! The raw log for auditors: one stream, or the global feed in commit order.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode, Json, Path, Problem, Query};
use super::state::AppState;
use crate::audit::{self as verification, VerifyReport};
use crate::auth::Role;
use crate::domain::streams;
use crate::store::log::{self, Checkpoint, StoredEvent};
use crate::store::{seal, Conn};
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
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
    #[schema(value_type = serde_json::Value)]
    pub payload: Value,
    /// Actor, request id, roles.
    #[schema(value_type = serde_json::Value)]
    pub metadata: Value,
    /// When the database recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Who caused it: the token subject of the request, `vehicle:<VIN>` for what a vehicle
    /// reported, `tacho:<process>` for tacho's own decisions.
    pub actor: Option<String>,
    /// The `x-request-id` of the HTTP request that recorded it.
    pub request_id: Option<String>,
    /// Version of the consent that allowed it, when one did.
    pub consent_version: Option<i64>,
    /// When tacho received what it records (a vehicle's message), else when it was recorded.
    pub received_at: DateTime<Utc>,
    /// Its seal: SHA-256 chained through its stream (null until sealed), which `audit verify`
    /// recomputes.
    pub seal: Option<String>,
    /// Present when the stored payload or metadata is not JSON tacho can read (then both are null
    /// above): why, and the texts as stored, which its seal hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<UnreadableEvent>,
}

/// An event as stored when it cannot be read as JSON.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnreadableEvent {
    /// Why it cannot be read.
    pub reason: String,
    /// The stored payload text.
    pub payload: String,
    /// The stored metadata text.
    pub metadata: String,
}

impl LogEvent {
    fn new(e: StoredEvent, seal: Option<String>) -> Self {
        let inner = e.payload.as_object().and_then(|o| o.values().next()).cloned().unwrap_or_default();
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        Self {
            actor: text(&e.metadata, "actor"),
            request_id: text(&e.metadata, "request_id"),
            consent_version: inner.get("consent_version").and_then(Value::as_i64),
            received_at: text(&inner, "received_at").and_then(|t| t.parse().ok()).unwrap_or(e.recorded_at),
            seal,
            position: e.position,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
            unreadable: e.unreadable.map(|u| UnreadableEvent {
                reason: u.reason,
                payload: u.payload,
                metadata: u.metadata,
            }),
        }
    }
}

/// Where the seals of some events are: one stream's, or a range of positions (a feed page).
enum Seals<'a> {
    Stream(&'a str, &'a str),
    Page,
}

/// `events` with their seals.
async fn sealed(conn: &mut Conn<'_>, events: Vec<StoredEvent>, of: Seals<'_>) -> Result<Vec<LogEvent>, ApiError> {
    let (Some(first), Some(last)) = (events.iter().map(|e| e.position).min(), events.iter().map(|e| e.position).max())
    else {
        return Ok(Vec::new());
    };
    let which = match of {
        Seals::Stream(kind, id) => seal::Which::Stream(kind, id),
        Seals::Page => seal::Which::Positions(first, last),
    };
    let seals = seal::hashes(conn, which).await?;
    Ok(events
        .into_iter()
        .map(|e| {
            let seal = seals.get(&e.position).cloned();
            LogEvent::new(e, seal)
        })
        .collect())
}

/// A page of the global feed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Feed {
    /// Events in commit order.
    pub items: Vec<LogEvent>,
    /// Pass as `after` to continue; null when nothing was returned.
    pub next_after: Option<i64>,
}

/// How to return a stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// `jsonl`: an export to keep, one event per line (also chosen by `Accept: application/x-ndjson`).
    pub format: Option<String>,
}

/// Every event of one stream, in sequence order, with its seal (auditor). As JSON lines
/// (`?format=jsonl` or `Accept: application/x-ndjson`) it is a file to keep: `audit verify`'s
/// hashes can be recomputed from it alone.
#[utoipa::path(get, path = "/v1/audit/streams/{aggregate_type}/{id}", tag = "audit",
    params(("aggregate_type" = String, Path, description = "Vehicle, Device, Consent, Command, VehicleState or Broadcast"), ("id" = String, Path, description = "Stream id"), StreamQuery),
    responses((status = 200, description = "The stream", content((Vec<LogEvent> = "application/json"), (String = "application/x-ndjson"))),
              (status = 400, description = "Unknown format", body = Problem),
              (status = 404, description = "No such stream", body = Problem)))]
async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Path((aggregate_type, id)): Path<(String, String)>,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Auditor])?;
    if !streams::ALL.contains(&aggregate_type.as_str()) {
        return Err(ApiError::new(ErrorCode::NotFound, format!("unknown aggregate type '{aggregate_type}'")));
    }
    let accepts_lines =
        headers.get(ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("application/x-ndjson"));
    let lines = match q.format.as_deref() {
        None => accepts_lines,
        Some("jsonl") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::new(ErrorCode::InvalidQuery, format!("unknown format '{other}': json or jsonl")))
        }
    };
    let mut pooled = state.db.acquire().await?;
    let mut conn = pooled.conn();
    let events = log::read_stream(&mut conn, &aggregate_type, &id).await?;
    if events.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no stream {aggregate_type}/{id}")));
    }
    let events = sealed(&mut conn, events, Seals::Stream(&aggregate_type, &id)).await?;
    if !lines {
        return Ok(Json(events).into_response());
    }
    let mut body = String::new();
    for event in &events {
        body += &serde_json::to_string(event).map_err(ApiError::internal)?;
        body.push('\n');
    }
    let safe: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let file = format!("attachment; filename=\"{aggregate_type}-{safe}.jsonl\"");
    Ok(([(CONTENT_TYPE, "application/x-ndjson".to_owned()), (CONTENT_DISPOSITION, file)], body).into_response())
}

/// Where to read the feed from.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Position of the last event already read (0 or absent: from the start).
    pub after: Option<i64>,
    /// 1..1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
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
    let events = log::read_after(&mut conn, after, None, limit).await?.events;
    let items = sealed(&mut conn, events, Seals::Page).await?;
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
        if !streams::ALL.contains(&kind) {
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
