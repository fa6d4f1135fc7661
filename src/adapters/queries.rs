//! Read-model queries behind the HTTP API: point lookups and keyset-paged lists.

use super::sql::Db;
use crate::on_db;
use crate::projections::views::{CommandView, ConsentView, DeviceView, Page, VehicleView};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};
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

/// One vehicle of the registry.
pub async fn vehicle_by_vin(db: &Db, vin: &str) -> Result<Option<VehicleView>, QueryError> {
    let sql = format!("SELECT {VEHICLE_COLUMNS} FROM rm_vehicles WHERE vin = $1");
    Ok(on_db!(db, |p| sqlx::query_as(&sql).bind(vin).fetch_optional(p).await)?)
}

/// The fleet list, ordered by VIN. Keyset paging: vehicles added meanwhile never shift a page.
pub async fn fleet(
    db: &Db,
    filter: &FleetFilter,
    page_size: i64,
    page_token: Option<&str>,
) -> Result<Page<VehicleView>, QueryError> {
    let after: Option<String> = decode_token(page_token)?;
    // sqlx sends every parameter's type, so `$n IS NULL` needs no cast and the SQL is portable
    // but for the scope list (a JSON array: PostgreSQL and SQLite take it apart differently).
    let in_scope = match db {
        Db::Postgres(_) => "vin IN (SELECT jsonb_array_elements_text($7))",
        Db::Sqlite(_) => "vin IN (SELECT value FROM json_each($7))",
    };
    let sql = format!(
        "SELECT {VEHICLE_COLUMNS} FROM rm_vehicles WHERE ($1 IS NULL OR vin > $1) \
         AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR market = $3) \
         AND ($4 IS NULL OR model = $4) AND ($5 IS NULL OR model_year = $5) \
         AND ($6 IS NULL OR connected = $6) AND ($7 IS NULL OR {in_scope}) \
         ORDER BY vin LIMIT $8"
    );
    let vins = filter.vins.as_ref().map(|v| serde_json::json!(v));
    let mut items: Vec<VehicleView> = on_db!(db, |p| {
        sqlx::query_as(&sql)
            .bind(&after)
            .bind(&filter.status)
            .bind(&filter.market)
            .bind(&filter.model)
            .bind(filter.model_year)
            .bind(filter.connected)
            .bind(&vins)
            .bind(page_size + 1)
            .fetch_all(p)
            .await
    })?;
    let next_page_token = if items.len() as i64 > page_size {
        items.truncate(page_size as usize);
        items.last().map(|v| encode_token(&v.vin))
    } else {
        None
    };
    Ok(Page { items, next_page_token })
}

/// One device.
pub async fn device_by_id(db: &Db, device_id: &str) -> Result<Option<DeviceView>, QueryError> {
    let sql = "SELECT device_id, vin, kind, status, certificate_thumbprint, client_id, allowed_topics, replaces, \
         replaced_by, registered_at, updated_at FROM rm_devices WHERE device_id = $1";
    Ok(on_db!(db, |p| sqlx::query_as(sql).bind(device_id).fetch_optional(p).await)?)
}

/// Every consent recorded on a vehicle, granted or revoked.
pub async fn consents(db: &Db, vin: &str) -> Result<Vec<ConsentView>, QueryError> {
    let sql =
        "SELECT vin, subject, purpose, status, version, legal_basis, expires_at, granted_at, revoked_at, granted_by \
         FROM rm_consents WHERE vin = $1 ORDER BY subject, purpose";
    Ok(on_db!(db, |p| sqlx::query_as(sql).bind(vin).fetch_all(p).await)?)
}

const COMMAND_COLUMNS: &str = "command_id, vin, name, params, status, requester, consent_version, timeout_s, \
     store_and_forward, ttl_s, requested_at, updated_at, transitions, result, error, late_answers";

/// One command.
pub async fn command_by_id(db: &Db, id: Uuid) -> Result<Option<CommandView>, QueryError> {
    let sql = format!("SELECT {COMMAND_COLUMNS} FROM rm_commands WHERE command_id = $1");
    Ok(on_db!(db, |p| sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?)
}

/// A vehicle's commands, newest first, optionally of one status.
pub async fn commands_of_vehicle(
    db: &Db,
    vin: &str,
    status: Option<&str>,
    page_size: i64,
    page_token: Option<&str>,
) -> Result<Page<CommandView>, QueryError> {
    let after: Option<(DateTime<Utc>, Uuid)> = decode_token(page_token)?;
    let sql = format!(
        "SELECT {COMMAND_COLUMNS} FROM rm_commands WHERE vin = $1 AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR (requested_at, command_id) < ($3, $4)) \
         ORDER BY requested_at DESC, command_id DESC LIMIT $5"
    );
    let (at, id) = after.unzip();
    let mut items: Vec<CommandView> = on_db!(db, |p| {
        sqlx::query_as(&sql).bind(vin).bind(status).bind(at).bind(id).bind(page_size + 1).fetch_all(p).await
    })?;
    let next_page_token = if items.len() as i64 > page_size {
        items.truncate(page_size as usize);
        items.last().map(|c| encode_token(&(c.requested_at, c.command_id)))
    } else {
        None
    };
    Ok(Page { items, next_page_token })
}
