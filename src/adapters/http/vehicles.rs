//! `/v1/vehicles`: registration, fleet list, registry view, lifecycle.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode, Json, Path, Problem, Query};
use super::state::AppState;
use crate::auth::Role;
use crate::domain::streams;
use crate::domain::vehicle::{Vehicle, VehicleCommand, VehicleStatus};
use crate::domain::Vin;
use crate::projections::vehicles::VehiclesProjection;
use crate::store::queries;
use crate::store::views::{ConnectionView, DeviceRef, Page, VehicleView};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(get_vehicle))
        .routes(routes!(activate))
        .routes(routes!(suspend))
        .routes(routes!(decommission))
}

/// A vehicle as the factory registers it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterVehicle {
    /// ISO 3779 VIN: 17 characters, no I, O, Q; check digit verified for North America and China.
    #[schema(example = "1HGCM82633A004352")]
    pub vin: String,
    /// Model name.
    #[schema(example = "Model A")]
    #[schema(min_length = 1, max_length = 100)]
    pub model: String,
    /// Model year (1950..2100).
    #[schema(example = 2026)]
    #[schema(minimum = 1950, maximum = 2100)]
    pub model_year: i32,
    /// Market code.
    #[schema(example = "EU")]
    #[schema(min_length = 1, max_length = 16)]
    pub market: String,
    /// Factory options.
    #[serde(default)]
    pub options: Vec<String>,
    /// Initial data-collection configuration.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data_collection: Map<String, Value>,
}

/// Parses a VIN from a path or body, as a 422 `invalid_vin` when it is not one.
pub fn parse_vin(raw: &str) -> Result<Vin, ApiError> {
    Vin::parse(raw).map_err(|e| ApiError::new(ErrorCode::InvalidVin, format!("'{raw}' is not a valid VIN: {e}")))
}

/// Reads a vehicle the caller may see after a write settled, 404 otherwise.
pub async fn view(state: &AppState, principal: &Principal, vin: &str) -> Result<VehicleView, ApiError> {
    principal.scope(vin)?;
    queries::vehicle_by_vin(&state.db, vin)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::VehicleNotFound, format!("vehicle {vin} not found")))
}

/// Register a vehicle (factory).
#[utoipa::path(post, path = "/v1/vehicles", tag = "vehicles", request_body = RegisterVehicle,
    responses(
        (status = 201, description = "Registered", body = VehicleView, headers(("Location" = String, description = "URL of the vehicle"))),
        (status = 409, description = "VIN already registered (`vehicle_exists`)", body = Problem),
        (status = 422, description = "Invalid VIN or fields (`invalid_vin`, `invalid_body`, `validation_failed`)", body = Problem),
    ))]
async fn register(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<RegisterVehicle>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Factory])?;
    let vin = parse_vin(&body.vin)?;
    let at = Utc::now();
    let command = VehicleCommand::Register {
        vin: vin.clone(),
        model: body.model.clone(),
        model_year: body.model_year,
        market: body.market.clone(),
        options: body.options.clone(),
        data_collection: body.data_collection.clone(),
        at,
    };
    state.frameworks.execute(&state.frameworks.vehicles, vin.as_str(), command, &principal.metadata()).await?;
    // Registered: the answer says so even when the registry has not caught up yet (it shows then
    // what the registration recorded).
    let vehicle = match state.settle(VehiclesProjection::NAME, streams::VEHICLE, vin.as_str()).await? {
        true => view(&state, &principal, vin.as_str()).await?,
        false => VehicleView {
            vin: vin.to_string(),
            status: VehicleStatus::Registered.as_str().to_owned(),
            model: body.model.trim().to_owned(),
            model_year: body.model_year,
            market: body.market.trim().to_owned(),
            options: body.options,
            data_collection: Value::Object(body.data_collection),
            devices: vec![],
            connection: ConnectionView::default(),
            registered_at: at,
            updated_at: at,
        },
    };
    let location = format!("/v1/vehicles/{vin}");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(vehicle)).into_response())
}

/// Filters and paging of the fleet list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FleetQuery {
    /// registered, active, suspended or decommissioned.
    pub status: Option<String>,
    /// Market code.
    pub market: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Model year.
    pub model_year: Option<i32>,
    /// Connected now.
    pub connected: Option<bool>,
    /// 1..500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<i64>,
    /// From the previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// Checks a page size (1..=500, default 50).
pub fn page_size(requested: Option<i64>) -> Result<i64, ApiError> {
    match requested {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::new(ErrorCode::InvalidQuery, format!("page_size {n} is outside 1..500"))),
    }
}

/// The fleet list (dealer), ordered by VIN, filtered, keyset-paged.
#[utoipa::path(get, path = "/v1/vehicles", tag = "vehicles", operation_id = "list_vehicles", params(FleetQuery),
    responses((status = 200, description = "A page of vehicles", body = Page<VehicleView>),
              (status = 400, description = "Bad filter or page token", body = Problem)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<FleetQuery>,
) -> Result<Json<Page<VehicleView>>, ApiError> {
    principal.require(&[Role::Dealer, Role::Factory, Role::Auditor])?;
    let size = page_size(q.page_size)?;
    let filter = queries::FleetFilter {
        status: q.status,
        market: q.market,
        model: q.model,
        model_year: q.model_year,
        connected: q.connected,
        vins: principal.vin_filter(),
    };
    Ok(Json(queries::fleet(&state.db, &filter, size, q.page_token.as_deref()).await?))
}

/// A vehicle's registry view (dealer, owner in scope).
#[utoipa::path(get, path = "/v1/vehicles/{vin}", tag = "vehicles", params(("vin" = String, Path, description = "VIN")),
    responses((status = 200, description = "The vehicle", body = VehicleView),
              (status = 404, description = "Unknown or out of scope (`vehicle_not_found`)", body = Problem)))]
async fn get_vehicle(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
) -> Result<Json<VehicleView>, ApiError> {
    principal.require(&[Role::Dealer, Role::Owner, Role::Factory, Role::Auditor])?;
    Ok(Json(view(&state, &principal, &vin).await?))
}

async fn lifecycle(
    state: AppState,
    principal: Principal,
    vin: String,
    command: VehicleCommand,
) -> Result<Json<VehicleView>, ApiError> {
    principal.require(&[Role::Factory, Role::Admin])?;
    principal.scope(&vin)?;
    state.change_send_rules::<Vehicle>(&principal, &vin, command).await?;
    if state.settle(VehiclesProjection::NAME, streams::VEHICLE, &vin).await? {
        return Ok(Json(view(&state, &principal, &vin).await?));
    }
    // Done: the answer says so even when the registry has not caught up yet, with what the log
    // holds now (the rest as the registry last showed it).
    let vehicle = state.frameworks.stores.load::<Vehicle>(&vin).await?;
    let shown = queries::vehicle_by_vin(&state.db, &vin).await?;
    let now = Utc::now();
    let devices = vehicle.devices.iter().map(|(id, kind)| DeviceRef { device_id: id.clone(), kind: kind.clone() });
    Ok(Json(VehicleView {
        vin: vehicle.vin.clone(),
        status: vehicle.status.as_str().to_owned(),
        model: vehicle.model.clone(),
        model_year: vehicle.model_year,
        market: vehicle.market.clone(),
        options: shown.as_ref().map(|v| v.options.clone()).unwrap_or_default(),
        data_collection: shown.as_ref().map(|v| v.data_collection.clone()).unwrap_or_else(|| Value::Object(Map::new())),
        devices: devices.collect(),
        connection: shown.as_ref().map(|v| v.connection.clone()).unwrap_or_default(),
        registered_at: shown.as_ref().map(|v| v.registered_at).unwrap_or(now),
        updated_at: now,
    }))
}

/// Why a vehicle is suspended.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuspendQuery {
    /// Reason, kept in the log.
    pub reason: Option<String>,
}

/// Put a vehicle in service (factory, admin): registered or suspended → active.
#[utoipa::path(post, path = "/v1/vehicles/{vin}/activate", tag = "vehicles", params(("vin" = String, Path, description = "VIN")),
    responses((status = 200, description = "Active", body = VehicleView),
              (status = 404, description = "Unknown vehicle", body = Problem),
              (status = 409, description = "Decommissioned (`invalid_transition`)", body = Problem)))]
async fn activate(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
) -> Result<Json<VehicleView>, ApiError> {
    lifecycle(state, principal, vin, VehicleCommand::Activate { at: Utc::now() }).await
}

/// Take a vehicle out of service (factory, admin): active → suspended.
#[utoipa::path(post, path = "/v1/vehicles/{vin}/suspend", tag = "vehicles",
    params(("vin" = String, Path, description = "VIN"), SuspendQuery),
    responses((status = 200, description = "Suspended", body = VehicleView),
              (status = 404, description = "Unknown vehicle", body = Problem),
              (status = 409, description = "Not active (`invalid_transition`)", body = Problem)))]
async fn suspend(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
    Query(q): Query<SuspendQuery>,
) -> Result<Json<VehicleView>, ApiError> {
    lifecycle(state, principal, vin, VehicleCommand::Suspend { reason: q.reason, at: Utc::now() }).await
}

/// Retire a vehicle for good (factory, admin).
#[utoipa::path(post, path = "/v1/vehicles/{vin}/decommission", tag = "vehicles", params(("vin" = String, Path, description = "VIN")),
    responses((status = 200, description = "Decommissioned", body = VehicleView),
              (status = 404, description = "Unknown vehicle", body = Problem)))]
async fn decommission(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
) -> Result<Json<VehicleView>, ApiError> {
    lifecycle(state, principal, vin, VehicleCommand::Decommission { at: Utc::now() }).await
}
