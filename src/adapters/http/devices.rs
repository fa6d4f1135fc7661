//! Devices: registration on a vehicle, part replacement, broker connection info.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode, Json, Path, Problem};
use super::state::AppState;
use super::vehicles::parse_vin;
use crate::adapters::mqtt::topics;
use crate::auth::Role;
use crate::domain::device::{normalize_thumbprint, validate_device_id, Device, DeviceCommand, DeviceStatus};
use crate::domain::streams;
use crate::domain::vehicle::{Vehicle, VehicleCommand, VehicleStatus};
use crate::projections::devices::DevicesProjection;
use crate::projections::vehicles::VehiclesProjection;
use crate::store::queries;
use crate::store::views::DeviceView;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_device))
        .routes(routes!(get_device))
        .routes(routes!(replace_device))
        .routes(routes!(connection_info))
        .routes(routes!(revoke_device))
}

/// A device as the factory fits it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// Device id: 1 to 64 of A-Z a-z 0-9 . _ -
    #[schema(example = "tcu-0001")]
    pub device_id: String,
    /// Kind: tcu, infotainment ...
    #[schema(example = "tcu")]
    pub kind: String,
    /// SHA-256 thumbprint of its X.509 certificate (64 hex digits, colons allowed).
    #[schema(example = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    pub certificate_thumbprint: String,
}

/// A dealer's part replacement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceDevice {
    /// Id of the new part.
    pub new_device_id: String,
    /// Its certificate thumbprint.
    pub certificate_thumbprint: String,
}

/// The outcome of a replacement.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replacement {
    /// The device taken out (status `replaced`).
    pub retired: DeviceView,
    /// The device put in.
    pub replacement: DeviceView,
}

/// Where and as whom a device connects to the broker.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionInfo {
    /// Broker URL.
    #[schema(example = "mqtt://127.0.0.1:1883")]
    pub broker_url: String,
    /// MQTT client id.
    pub client_id: String,
    /// Its identity at the broker: the common name its X.509 certificate must carry (the device id);
    /// the secured broker takes it as the user name, and as the client id.
    pub username: String,
    /// Topic filters it may publish to.
    pub publish: Vec<String>,
    /// Topic filters it may subscribe to.
    pub subscribe: Vec<String>,
    /// Last Will topic (payload `{"state":"offline","ts":T}`, `T` the time the session began, the
    /// same `ts` as the `online` message it publishes on connecting).
    pub last_will_topic: String,
}

fn invalid(e: crate::domain::device::DeviceError) -> ApiError {
    ApiError::new(ErrorCode::ValidationFailed, e.to_string())
}

/// Device `device_id` after a write: from the registry once it caught up with the write, else from
/// the log (the write is done: the answer never says otherwise because the registry is late).
async fn written_device_view(
    state: &AppState,
    principal: &Principal,
    device_id: &str,
    at: DateTime<Utc>,
) -> Result<DeviceView, ApiError> {
    let shown = queries::device_by_id(&state.db, device_id).await?.filter(|d| principal.sees(&d.vin));
    let device = state.frameworks.stores.load::<Device>(device_id).await?;
    if device.status == DeviceStatus::Unknown || !principal.sees(&device.vin) {
        return Err(ApiError::new(ErrorCode::DeviceNotFound, format!("device {device_id} not found")));
    }
    if let Some(shown) = shown.filter(|s| s.status == device.status.as_str()) {
        return Ok(shown);
    }
    Ok(DeviceView {
        device_id: device.device_id,
        vin: device.vin,
        kind: device.kind,
        status: device.status.as_str().to_owned(),
        certificate_thumbprint: device.certificate_thumbprint,
        client_id: device.client_id,
        allowed_topics: device.allowed_topics,
        replaces: device.replaces,
        replaced_by: device.replaced_by,
        registered_at: at,
        updated_at: at,
    })
}

async fn device_view(state: &AppState, principal: &Principal, device_id: &str) -> Result<DeviceView, ApiError> {
    let device = queries::device_by_id(&state.db, device_id).await?;
    device
        .filter(|d| principal.sees(&d.vin))
        .ok_or_else(|| ApiError::new(ErrorCode::DeviceNotFound, format!("device {device_id} not found")))
}

/// The broker identity of device `device_id` on `vin`.
fn provision(vin: &str, device_id: &str, at: DateTime<Utc>) -> DeviceCommand {
    let mut allowed_topics = topics::vehicle_publishes(vin);
    allowed_topics.extend(topics::vehicle_subscribes(vin));
    DeviceCommand::Provision { client_id: topics::client_id(device_id), allowed_topics, at }
}

/// Register a device on a vehicle (factory); it is provisioned with a broker identity at once.
#[utoipa::path(post, path = "/v1/vehicles/{vin}/devices", tag = "devices", request_body = RegisterDevice,
    params(("vin" = String, Path, description = "VIN")),
    responses((status = 201, description = "Registered and provisioned", body = DeviceView),
              (status = 404, description = "Unknown vehicle", body = Problem),
              (status = 409, description = "Device id taken (`device_exists`) or vehicle decommissioned", body = Problem),
              (status = 422, description = "Bad id, kind or thumbprint", body = Problem)))]
async fn register_device(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
    Json(body): Json<RegisterDevice>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Factory])?;
    let vin = parse_vin(&vin)?;
    validate_device_id(&body.device_id).map_err(invalid)?;
    normalize_thumbprint(&body.certificate_thumbprint).map_err(invalid)?;
    let vehicle = state.frameworks.stores.load::<Vehicle>(vin.as_str()).await?;
    match vehicle.status {
        VehicleStatus::Unknown => {
            return Err(ApiError::new(ErrorCode::VehicleNotFound, format!("vehicle {vin} not found")))
        }
        VehicleStatus::Decommissioned => {
            return Err(ApiError::new(ErrorCode::InvalidTransition, "a decommissioned vehicle gets no device"))
        }
        _ => {}
    }
    let at = Utc::now();
    // Registered, provisioned and attached in one transaction: all or nothing.
    state
        .all_or_nothing(&principal, |mut together| {
            let register = DeviceCommand::Register {
                device_id: body.device_id.clone(),
                vin: vin.to_string(),
                kind: body.kind.clone(),
                certificate_thumbprint: body.certificate_thumbprint.clone(),
                replaces: None,
                at,
            };
            let attach =
                VehicleCommand::AttachDevice { device_id: body.device_id.clone(), kind: body.kind.clone(), at };
            let device = vec![register, provision(vin.as_str(), &body.device_id, at)];
            let (device_id, vin) = (body.device_id.clone(), vin.to_string());
            async move {
                together.decide::<Device>(&device_id, device, &()).await?;
                together.decide::<Vehicle>(&vin, vec![attach], &()).await?;
                Ok(together)
            }
        })
        .await?;
    state.settle(DevicesProjection::NAME, streams::DEVICE, &body.device_id).await?;
    state.settle(VehiclesProjection::NAME, streams::VEHICLE, vin.as_str()).await?;
    let view = written_device_view(&state, &principal, &body.device_id, at).await?;
    let location = format!("/v1/devices/{}", body.device_id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response())
}

/// A device (factory, dealer).
#[utoipa::path(get, path = "/v1/devices/{device_id}", tag = "devices", params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device", body = DeviceView),
              (status = 404, description = "Unknown device", body = Problem)))]
async fn get_device(
    State(state): State<AppState>,
    principal: Principal,
    Path(device_id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    principal.require(&[Role::Factory, Role::Dealer, Role::Auditor])?;
    Ok(Json(device_view(&state, &principal, &device_id).await?))
}

/// Replace a part (dealer): the old device is retired and the new one attached in one step.
#[utoipa::path(post, path = "/v1/devices/{device_id}/replace", tag = "devices", request_body = ReplaceDevice,
    params(("device_id" = String, Path, description = "Id of the device taken out")),
    responses((status = 200, description = "Replaced", body = Replacement),
              (status = 404, description = "Unknown device", body = Problem),
              (status = 409, description = "Device retired or new id taken", body = Problem),
              (status = 422, description = "Bad id or thumbprint", body = Problem)))]
async fn replace_device(
    State(state): State<AppState>,
    principal: Principal,
    Path(device_id): Path<String>,
    Json(body): Json<ReplaceDevice>,
) -> Result<Json<Replacement>, ApiError> {
    principal.require(&[Role::Dealer])?;
    validate_device_id(&body.new_device_id).map_err(invalid)?;
    normalize_thumbprint(&body.certificate_thumbprint).map_err(invalid)?;
    let old = state.frameworks.stores.load::<Device>(&device_id).await?;
    if old.status == DeviceStatus::Unknown || !principal.sees(&old.vin) {
        return Err(ApiError::new(ErrorCode::DeviceNotFound, format!("device {device_id} not found")));
    }
    if matches!(old.status, DeviceStatus::Replaced | DeviceStatus::Revoked) {
        return Err(ApiError::new(ErrorCode::DeviceRetired, format!("device {device_id} is {}", old.status.as_str())));
    }
    let at = Utc::now();
    // The old device retired, the new one registered and provisioned, the vehicle's parts swapped:
    // in one transaction. Any refusal (the new id taken, the vehicle decommissioned) leaves all as
    // it was, and a retry after a crash finds nothing half done.
    state
        .all_or_nothing(&principal, |mut together| {
            let retire = DeviceCommand::Replace { replacement_device_id: body.new_device_id.clone(), at };
            let register = DeviceCommand::Register {
                device_id: body.new_device_id.clone(),
                vin: old.vin.clone(),
                kind: old.kind.clone(),
                certificate_thumbprint: body.certificate_thumbprint.clone(),
                replaces: Some(device_id.clone()),
                at,
            };
            let swap = VehicleCommand::ReplaceDevice {
                old_device_id: device_id.clone(),
                new_device_id: body.new_device_id.clone(),
                at,
            };
            let new_device = vec![register, provision(&old.vin, &body.new_device_id, at)];
            let (device_id, new_device_id, vin) = (device_id.clone(), body.new_device_id.clone(), old.vin.clone());
            async move {
                together.decide::<Device>(&new_device_id, new_device, &()).await?;
                together.decide::<Device>(&device_id, vec![retire], &()).await?;
                together.decide::<Vehicle>(&vin, vec![swap], &()).await?;
                Ok(together)
            }
        })
        .await?;
    state.settle(DevicesProjection::NAME, streams::DEVICE, &body.new_device_id).await?;
    state.settle(VehiclesProjection::NAME, streams::VEHICLE, &old.vin).await?;
    Ok(Json(Replacement {
        retired: written_device_view(&state, &principal, &device_id, at).await?,
        replacement: written_device_view(&state, &principal, &body.new_device_id, at).await?,
    }))
}

/// Broker URL, client id and allowed topics of a device (factory, at end-of-line provisioning).
#[utoipa::path(get, path = "/v1/devices/{device_id}/connection-info", tag = "devices",
    params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Connection info", body = ConnectionInfo),
              (status = 404, description = "Unknown device", body = Problem),
              (status = 409, description = "Device retired", body = Problem)))]
async fn connection_info(
    State(state): State<AppState>,
    principal: Principal,
    Path(device_id): Path<String>,
) -> Result<Json<ConnectionInfo>, ApiError> {
    principal.require(&[Role::Factory])?;
    let device = device_view(&state, &principal, &device_id).await?;
    if matches!(device.status.as_str(), "replaced" | "revoked") {
        return Err(ApiError::new(ErrorCode::DeviceRetired, format!("device {device_id} is {}", device.status)));
    }
    Ok(Json(ConnectionInfo {
        broker_url: state.public_mqtt_url.to_string(),
        client_id: device.client_id.unwrap_or_else(|| topics::client_id(&device_id)),
        username: device_id.clone(),
        publish: topics::vehicle_publishes(&device.vin),
        subscribe: topics::vehicle_subscribes(&device.vin),
        last_will_topic: format!("vehicles/{}/connection", device.vin),
    }))
}

/// Why a device is revoked.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeDevice {
    /// Kept in the log.
    pub reason: Option<String>,
}

/// Revoke a device (factory, admin): its certificate is no longer trusted and it is detached from
/// its vehicle.
#[utoipa::path(post, path = "/v1/devices/{device_id}/revoke", tag = "devices", request_body = RevokeDevice,
    params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Revoked", body = DeviceView),
              (status = 404, description = "Unknown device", body = Problem),
              (status = 409, description = "Already retired (`device_retired`)", body = Problem)))]
async fn revoke_device(
    State(state): State<AppState>,
    principal: Principal,
    Path(device_id): Path<String>,
    Json(body): Json<RevokeDevice>,
) -> Result<Json<DeviceView>, ApiError> {
    principal.require(&[Role::Factory, Role::Admin])?;
    let device = state.frameworks.stores.load::<Device>(&device_id).await?;
    if device.status == DeviceStatus::Unknown {
        return Err(ApiError::new(ErrorCode::DeviceNotFound, format!("device {device_id} not found")));
    }
    let at = Utc::now();
    // Revoked and detached in one transaction.
    state
        .all_or_nothing(&principal, |mut together| {
            let revoke = DeviceCommand::Revoke { reason: body.reason.clone(), at };
            let (device_id, vin, stores) = (device_id.clone(), device.vin.clone(), state.frameworks.stores.clone());
            async move {
                together.decide::<Device>(&device_id, vec![revoke], &()).await?;
                let vehicle = stores.load::<Vehicle>(&vin).await?;
                if vehicle.devices.contains_key(&device_id) {
                    let detach = VehicleCommand::DetachDevice { device_id: device_id.clone(), at };
                    together.decide::<Vehicle>(&vin, vec![detach], &()).await?;
                }
                Ok(together)
            }
        })
        .await?;
    state.settle(DevicesProjection::NAME, streams::DEVICE, &device_id).await?;
    state.settle(VehiclesProjection::NAME, streams::VEHICLE, &device.vin).await?;
    Ok(Json(written_device_view(&state, &principal, &device_id, at).await?))
}
