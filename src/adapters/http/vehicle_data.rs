//! What vehicles report: last-known state, its short history, reported events.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode, Json, Path, Problem, Query};
use super::state::AppState;
use super::vehicles::page_size;
use crate::auth::Role;
use crate::domain::observation::{is_location, redact_location};
use crate::store::queries::{self, HistoryFilter, ReportedRow, SignalRow};
use crate::store::views::{ConnectionView, Page};
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(state)).routes(routes!(history)).routes(routes!(events))
}

/// One signal's last-known value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SignalValue {
    /// The value (number, boolean, string ...).
    #[schema(value_type = serde_json::Value)]
    pub value: Value,
    /// Vehicle time of the report.
    pub vehicle_ts: DateTime<Utc>,
    /// When tacho received it.
    pub received_at: DateTime<Utc>,
}

/// A vehicle's last-known state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VehicleState {
    /// VIN.
    pub vin: String,
    /// Connection state.
    pub connection: ConnectionView,
    /// COVESA VSS path → last-known value.
    pub signals: BTreeMap<String, SignalValue>,
}

/// One historical value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// VSS path.
    pub signal: String,
    /// Value.
    #[schema(value_type = serde_json::Value)]
    pub value: Value,
    /// Vehicle time.
    pub vehicle_ts: DateTime<Utc>,
    /// When tacho received it.
    pub received_at: DateTime<Utc>,
}

/// An event a vehicle reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportedEvent {
    /// Vehicle-side message id.
    pub msg_id: String,
    /// Event type (breakdown, maintenance ...).
    pub kind: String,
    /// Event data.
    #[schema(value_type = serde_json::Value)]
    pub data: Value,
    /// Vehicle time.
    pub vehicle_ts: DateTime<Utc>,
    /// When tacho received it.
    pub received_at: DateTime<Utc>,
}

async fn visible(state: &AppState, principal: &Principal, vin: &str) -> Result<ConnectionView, ApiError> {
    principal.require(&[Role::Owner, Role::Dealer, Role::Auditor])?;
    Ok(super::vehicles::view(state, principal, vin).await?.connection)
}

/// Whether a reader may see where `vin` is now: only while a `location` consent is in force. What
/// was admitted under a consent since revoked or expired is kept (for its retention) but not shown.
async fn location_shown(state: &AppState, vin: &str) -> Result<bool, ApiError> {
    Ok(queries::location_consented(&state.db, vin, Utc::now()).await?)
}

/// Last-known state (owner, dealer): per signal its value, vehicle time and received time; connection.
/// Where the vehicle is (`Vehicle.CurrentLocation...` in any case, or a value naming a location at
/// any depth) is shown only while a `location` consent is in force.
#[utoipa::path(get, path = "/v1/vehicles/{vin}/state", tag = "vehicle data", params(("vin" = String, Path, description = "VIN")),
    responses((status = 200, description = "The state", body = VehicleState),
              (status = 404, description = "Unknown or out-of-scope vehicle", body = Problem)))]
async fn state(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
) -> Result<Json<VehicleState>, ApiError> {
    let connection = visible(&state, &principal, &vin).await?;
    let located = location_shown(&state, &vin).await?;
    let signals = queries::vehicle_state(&state.db, &vin)
        .await?
        .into_iter()
        .filter(|row| located || !is_location(&row.signal, &row.value))
        .map(|SignalRow { signal, value, vehicle_ts, received_at }| {
            (signal, SignalValue { value, vehicle_ts, received_at })
        })
        .collect();
    Ok(Json(VehicleState { vin, connection, signals }))
}

/// History filter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this VSS path.
    pub signal: Option<String>,
    /// Vehicle time from (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Vehicle time to (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// 1..1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Short history of signal values, newest first (owner, dealer). Kept for the retention period.
/// Location signals only while a `location` consent is in force (a page may then hold fewer rows).
#[utoipa::path(get, path = "/v1/vehicles/{vin}/state/history", tag = "vehicle data",
    params(("vin" = String, Path, description = "VIN"), HistoryQuery),
    responses((status = 200, description = "Values, newest vehicle time first", body = Vec<HistoryEntry>),
              (status = 400, description = "Bad filter", body = Problem),
              (status = 404, description = "Unknown or out-of-scope vehicle", body = Problem)))]
async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    visible(&state, &principal, &vin).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "limit must be from 1 to 1000"));
    }
    let filter = HistoryFilter { signal: q.signal, from: q.from, to: q.to, limit };
    let rows = queries::state_history(&state.db, &vin, &filter).await?;
    let located = location_shown(&state, &vin).await?;
    Ok(Json(
        rows.into_iter()
            .filter(|row| located || !is_location(&row.signal, &row.value))
            .map(|SignalRow { signal, value, vehicle_ts, received_at }| HistoryEntry {
                signal,
                value,
                vehicle_ts,
                received_at,
            })
            .collect(),
    ))
}

/// Paging of reported events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events of this type.
    pub kind: Option<String>,
    /// 1..500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<i64>,
    /// From the previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// Events the vehicle reported (breakdown, maintenance alerts), newest first (owner, dealer). Keys
/// naming a location are left out of `data` unless a `location` consent is in force.
#[utoipa::path(get, path = "/v1/vehicles/{vin}/events", tag = "vehicle data", operation_id = "vehicle_events",
    params(("vin" = String, Path, description = "VIN"), EventsQuery),
    responses((status = 200, description = "A page of events", body = Page<ReportedEvent>),
              (status = 400, description = "Bad page token", body = Problem),
              (status = 404, description = "Unknown or out-of-scope vehicle", body = Problem)))]
async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Page<ReportedEvent>>, ApiError> {
    visible(&state, &principal, &vin).await?;
    let size = page_size(q.page_size)?;
    let page = queries::reported_events(&state.db, &vin, q.kind.as_deref(), size, q.page_token.as_deref()).await?;
    let located = location_shown(&state, &vin).await?;
    let items = page
        .items
        .into_iter()
        .map(|ReportedRow { msg_id, kind, data, vehicle_ts, received_at, .. }| ReportedEvent {
            msg_id,
            kind,
            data: if located { data } else { redact_location(data) },
            vehicle_ts,
            received_at,
        })
        .collect();
    let next_page_token = page.next_page_token;
    Ok(Json(Page { items, next_page_token }))
}
