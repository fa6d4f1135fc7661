//! Read-model queries behind the HTTP API: point lookups and keyset-paged lists.

use crate::projections::views::{
    CommandErrorView, CommandView, ConnectionView, ConsentView, DeviceRef, DeviceView, Page, Transition, VehicleView,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A page token that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The client sent a token this server did not make.
    #[error("page_token is not valid")]
    BadPageToken,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An opaque page token for `value`.
pub fn encode_token<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// Decodes a token made by [`encode_token`]; `BadPageToken` for anything else.
pub fn decode_token<T: DeserializeOwned>(token: Option<&str>) -> Result<Option<T>, QueryError> {
    token
        .map(|t| {
            let bytes = URL_SAFE_NO_PAD.decode(t).map_err(|_| QueryError::BadPageToken)?;
            serde_json::from_slice(&bytes).map_err(|_| QueryError::BadPageToken)
        })
        .transpose()
}

/// Filters of the fleet list.
#[derive(Debug, Default, Clone)]
pub struct FleetFilter {
    /// Lifecycle status.
    pub status: Option<String>,
    /// Market code.
    pub market: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Model year.
    pub model_year: Option<i32>,
    /// Connection state.
    pub connected: Option<bool>,
    /// Only these VINs (a dealer's scope); `None` = all.
    pub vins: Option<Vec<String>>,
}

const VEHICLE_COLUMNS: &str = "vin, status, model, model_year, market, options, data_collection, devices, connected, \
     connection_since, last_seen, registered_at, updated_at";

fn vehicle(row: &PgRow) -> Result<VehicleView, sqlx::Error> {
    Ok(VehicleView {
        vin: row.try_get("vin")?,
        status: row.try_get("status")?,
        model: row.try_get("model")?,
        model_year: row.try_get("model_year")?,
        market: row.try_get("market")?,
        options: serde_json::from_value(row.try_get("options")?).unwrap_or_default(),
        data_collection: row.try_get("data_collection")?,
        devices: serde_json::from_value::<Vec<DeviceRef>>(row.try_get("devices")?).unwrap_or_default(),
        connection: ConnectionView {
            connected: row.try_get("connected")?,
            since: row.try_get("connection_since")?,
            last_seen: row.try_get("last_seen")?,
        },
        registered_at: row.try_get("registered_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One vehicle of the registry.
pub async fn vehicle_by_vin(pool: &PgPool, vin: &str) -> Result<Option<VehicleView>, QueryError> {
    let sql = format!("SELECT {VEHICLE_COLUMNS} FROM rm_vehicles WHERE vin = $1");
    Ok(sqlx::query(&sql).bind(vin).fetch_optional(pool).await?.as_ref().map(vehicle).transpose()?)
}

/// The fleet list, ordered by VIN. Keyset paging: vehicles added meanwhile never shift a page.
pub async fn fleet(
    pool: &PgPool,
    filter: &FleetFilter,
    page_size: i64,
    page_token: Option<&str>,
) -> Result<Page<VehicleView>, QueryError> {
    let after: Option<String> = decode_token(page_token)?;
    let sql = format!(
        "SELECT {VEHICLE_COLUMNS} FROM rm_vehicles WHERE ($1::text IS NULL OR vin > $1) \
         AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR market = $3) \
         AND ($4::text IS NULL OR model = $4) AND ($5::int IS NULL OR model_year = $5) \
         AND ($6::bool IS NULL OR connected = $6) AND ($7::text[] IS NULL OR vin = ANY($7)) \
         ORDER BY vin LIMIT $8"
    );
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(&filter.status)
        .bind(&filter.market)
        .bind(&filter.model)
        .bind(filter.model_year)
        .bind(filter.connected)
        .bind(&filter.vins)
        .bind(page_size + 1)
        .fetch_all(pool)
        .await?;
    let mut items = rows.iter().map(vehicle).collect::<Result<Vec<_>, _>>()?;
    let next_page_token = if items.len() as i64 > page_size {
        items.truncate(page_size as usize);
        items.last().map(|v| encode_token(&v.vin))
    } else {
        None
    };
    Ok(Page { items, next_page_token })
}

/// One device.
pub async fn device_by_id(pool: &PgPool, device_id: &str) -> Result<Option<DeviceView>, QueryError> {
    let row = sqlx::query(
        "SELECT device_id, vin, kind, status, certificate_thumbprint, client_id, allowed_topics, replaces, \
         replaced_by, registered_at, updated_at FROM rm_devices WHERE device_id = $1",
    )
    .bind(device_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(DeviceView {
        device_id: row.try_get("device_id")?,
        vin: row.try_get("vin")?,
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        certificate_thumbprint: row.try_get("certificate_thumbprint")?,
        client_id: row.try_get("client_id")?,
        allowed_topics: serde_json::from_value(row.try_get("allowed_topics")?).unwrap_or_default(),
        replaces: row.try_get("replaces")?,
        replaced_by: row.try_get("replaced_by")?,
        registered_at: row.try_get("registered_at")?,
        updated_at: row.try_get("updated_at")?,
    }))
}

/// Every consent recorded on a vehicle, granted or revoked.
pub async fn consents(pool: &PgPool, vin: &str) -> Result<Vec<ConsentView>, QueryError> {
    let rows = sqlx::query(
        "SELECT vin, subject, purpose, status, version, legal_basis, expires_at, granted_at, revoked_at \
         FROM rm_consents WHERE vin = $1 ORDER BY subject, purpose",
    )
    .bind(vin)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ConsentView {
                vin: row.try_get("vin")?,
                subject: row.try_get("subject")?,
                purpose: row.try_get("purpose")?,
                status: row.try_get("status")?,
                version: row.try_get("version")?,
                legal_basis: row.try_get("legal_basis")?,
                expires_at: row.try_get("expires_at")?,
                granted_at: row.try_get("granted_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        })
        .collect()
}

const COMMAND_COLUMNS: &str = "command_id, vin, name, params, status, requester, consent_version, timeout_s, \
     store_and_forward, ttl_s, requested_at, updated_at, transitions, result, error, late_answers";

fn command(row: &PgRow) -> Result<CommandView, sqlx::Error> {
    Ok(CommandView {
        command_id: row.try_get("command_id")?,
        vin: row.try_get("vin")?,
        name: row.try_get("name")?,
        params: row.try_get("params")?,
        status: row.try_get("status")?,
        requester: row.try_get("requester")?,
        consent_version: row.try_get("consent_version")?,
        timeout_s: row.try_get("timeout_s")?,
        store_and_forward: row.try_get("store_and_forward")?,
        ttl_s: row.try_get("ttl_s")?,
        requested_at: row.try_get("requested_at")?,
        updated_at: row.try_get("updated_at")?,
        transitions: serde_json::from_value::<Vec<Transition>>(row.try_get("transitions")?).unwrap_or_default(),
        result: row.try_get("result")?,
        error: row
            .try_get::<Option<serde_json::Value>, _>("error")?
            .and_then(|e| serde_json::from_value::<CommandErrorView>(e).ok()),
        late_answers: serde_json::from_value(row.try_get("late_answers")?).unwrap_or_default(),
    })
}

/// One command.
pub async fn command_by_id(pool: &PgPool, id: Uuid) -> Result<Option<CommandView>, QueryError> {
    let sql = format!("SELECT {COMMAND_COLUMNS} FROM rm_commands WHERE command_id = $1");
    Ok(sqlx::query(&sql).bind(id).fetch_optional(pool).await?.as_ref().map(command).transpose()?)
}

/// A vehicle's commands, newest first, optionally of one status.
pub async fn commands_of_vehicle(
    pool: &PgPool,
    vin: &str,
    status: Option<&str>,
    page_size: i64,
    page_token: Option<&str>,
) -> Result<Page<CommandView>, QueryError> {
    let after: Option<(DateTime<Utc>, Uuid)> = decode_token(page_token)?;
    let sql = format!(
        "SELECT {COMMAND_COLUMNS} FROM rm_commands WHERE vin = $1 AND ($2::text IS NULL OR status = $2) \
         AND ($3::timestamptz IS NULL OR (requested_at, command_id) < ($3, $4)) \
         ORDER BY requested_at DESC, command_id DESC LIMIT $5"
    );
    let rows = sqlx::query(&sql)
        .bind(vin)
        .bind(status)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(page_size + 1)
        .fetch_all(pool)
        .await?;
    let mut items = rows.iter().map(command).collect::<Result<Vec<_>, _>>()?;
    let next_page_token = if items.len() as i64 > page_size {
        items.truncate(page_size as usize);
        items.last().map(|c| encode_token(&(c.requested_at, c.command_id)))
    } else {
        None
    };
    Ok(Page { items, next_page_token })
}
