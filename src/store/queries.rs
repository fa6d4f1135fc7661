//! Named reads of the read models behind the HTTP API: point lookups, keyset-paged lists, what
//! vehicles reported.

use super::{Conn, Db, Sql};
use crate::store::views::{CommandView, ConsentView, DeliveryView, DeviceView, Page, VehicleView, WebhookView};
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

/// The page of `items` (read with one row more than `page_size`, to know whether another page
/// follows) and the token of the next, made from its last item by `token`.
fn page<T>(mut items: Vec<T>, page_size: i64, token: impl Fn(&T) -> String) -> Page<T> {
    let next_page_token = match items.len() as i64 > page_size {
        true => {
            items.truncate(page_size as usize);
            items.last().map(token)
        }
        false => None,
    };
    Page { items, next_page_token }
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
    Ok(Sql::new(&sql).bind(vin).fetch_optional(db).await?)
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
    let in_scope = db.dialect().in_json_list("vin", "$7");
    let sql = format!(
        "SELECT {VEHICLE_COLUMNS} FROM rm_vehicles WHERE ($1 IS NULL OR vin > $1) \
         AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR market = $3) \
         AND ($4 IS NULL OR model = $4) AND ($5 IS NULL OR model_year = $5) \
         AND ($6 IS NULL OR connected = $6) AND ($7 IS NULL OR {in_scope}) \
         ORDER BY vin LIMIT $8"
    );
    let vins = filter.vins.as_ref().map(|v| serde_json::json!(v));
    let items: Vec<VehicleView> = Sql::new(&sql)
        .bind(&after)
        .bind(&filter.status)
        .bind(&filter.market)
        .bind(&filter.model)
        .bind(filter.model_year)
        .bind(filter.connected)
        .bind(&vins)
        .bind(page_size + 1)
        .fetch_all(db)
        .await?;
    Ok(page(items, page_size, |v| encode_token(&v.vin)))
}

/// One device.
pub async fn device_by_id(db: &Db, device_id: &str) -> Result<Option<DeviceView>, QueryError> {
    let sql = "SELECT device_id, vin, kind, status, certificate_thumbprint, client_id, allowed_topics, replaces, \
         replaced_by, registered_at, updated_at FROM rm_devices WHERE device_id = $1";
    Ok(Sql::new(sql).bind(device_id).fetch_optional(db).await?)
}

/// Every consent recorded on a vehicle, granted or revoked.
pub async fn consents(db: &Db, vin: &str) -> Result<Vec<ConsentView>, QueryError> {
    let sql =
        "SELECT vin, subject, purpose, status, version, legal_basis, expires_at, granted_at, revoked_at, granted_by \
         FROM rm_consents WHERE vin = $1 ORDER BY subject, purpose";
    Ok(Sql::new(sql).bind(vin).fetch_all(db).await?)
}

/// Whether a `location` consent is in force for `vin` at `now` (any subject), as admission decides it.
pub async fn location_consented(db: &Db, vin: &str, now: DateTime<Utc>) -> Result<bool, QueryError> {
    let access = super::facts::access(db, &[vin.to_owned()], now).await?;
    Ok(access.get(vin).is_some_and(|a| a.location.is_some()))
}

const COMMAND_COLUMNS: &str = "command_id, vin, name, params, status, requester, consent_version, timeout_s, \
     store_and_forward, ttl_s, requested_at, updated_at, transitions, result, error, late_answers";

/// One command.
pub async fn command_by_id(db: &Db, id: Uuid) -> Result<Option<CommandView>, QueryError> {
    let sql = format!("SELECT {COMMAND_COLUMNS} FROM rm_commands WHERE command_id = $1");
    Ok(Sql::new(&sql).bind(id).fetch_optional(db).await?)
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
    let items: Vec<CommandView> =
        Sql::new(&sql).bind(vin).bind(status).bind(at).bind(id).bind(page_size + 1).fetch_all(db).await?;
    Ok(page(items, page_size, |c| encode_token(&(c.requested_at, c.command_id))))
}

/// One signal's last-known value, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignalRow {
    /// VSS path.
    pub signal: String,
    /// Value.
    pub value: serde_json::Value,
    /// Vehicle time of the report.
    pub vehicle_ts: DateTime<Utc>,
    /// When tacho received it.
    pub received_at: DateTime<Utc>,
}

/// Every signal's last-known value of `vin`.
pub async fn vehicle_state(db: &Db, vin: &str) -> Result<Vec<SignalRow>, QueryError> {
    let sql = "SELECT signal, value, vehicle_ts, received_at FROM rm_vehicle_state WHERE vin = $1";
    Ok(Sql::new(sql).bind(vin).fetch_all(db).await?)
}

/// Filters of a vehicle's state history.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only this VSS path.
    pub signal: Option<String>,
    /// Vehicle time from (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Vehicle time to (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// At most this many values.
    pub limit: i64,
}

/// Historical values of `vin`'s signals, newest vehicle time first.
pub async fn state_history(db: &Db, vin: &str, filter: &HistoryFilter) -> Result<Vec<SignalRow>, QueryError> {
    // One row per signal of each report.
    let (signals, value) = db.dialect().object_entries("h.signals", "s");
    let sql = format!(
        "SELECT s.key AS signal, {value} AS value, h.vehicle_ts, h.received_at FROM rm_state_history h, {signals} \
         WHERE h.vin = $1 AND ($2 IS NULL OR s.key = $2) \
         AND ($3 IS NULL OR h.vehicle_ts >= $3) AND ($4 IS NULL OR h.vehicle_ts < $4) \
         ORDER BY h.vehicle_ts DESC, h.position DESC, s.key LIMIT $5"
    );
    Ok(Sql::new(&sql)
        .bind(vin)
        .bind(&filter.signal)
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.limit)
        .fetch_all(db)
        .await?)
}

/// An event a vehicle reported, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportedRow {
    /// Vehicle-side message id.
    pub msg_id: String,
    /// Event type.
    pub kind: String,
    /// Event data.
    pub data: serde_json::Value,
    /// Vehicle time.
    pub vehicle_ts: DateTime<Utc>,
    /// When tacho received it.
    pub received_at: DateTime<Utc>,
    /// Its position in the log (the page key).
    pub position: i64,
}

/// The events `vin` reported, newest first, optionally of one kind.
pub async fn reported_events(
    db: &Db,
    vin: &str,
    kind: Option<&str>,
    page_size: i64,
    page_token: Option<&str>,
) -> Result<Page<ReportedRow>, QueryError> {
    let after: Option<i64> = decode_token(page_token)?;
    let sql = "SELECT msg_id, kind, data, vehicle_ts, received_at, position FROM rm_vehicle_events WHERE vin = $1 \
         AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR position < $3) \
         ORDER BY position DESC LIMIT $4";
    let items: Vec<ReportedRow> =
        Sql::new(sql).bind(vin).bind(kind).bind(after).bind(page_size + 1).fetch_all(db).await?;
    Ok(page(items, page_size, |r| encode_token(&r.position)))
}

/// Whether `table` has any row.
pub async fn table_has_rows(conn: &mut Conn<'_>, table: &str) -> Result<bool, sqlx::Error> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {table})");
    Sql::new(&sql).scalar(&mut *conn).await
}

/// Whether the store answers.
pub async fn ping(db: &Db) -> Result<(), sqlx::Error> {
    Sql::new("SELECT 1").execute(db).await.map(|_| ())
}

/// The webhook subscriptions of `principal` (all when `None`), deleted ones left out, oldest first.
pub async fn webhooks(db: &Db, principal: Option<&str>) -> Result<Vec<WebhookView>, QueryError> {
    let sql = "SELECT webhook_id, principal, endpoint, topics, vins, purpose, status, pause, secret, \
         previous_until AS previous_secret_until, created_at, updated_at FROM rm_webhooks \
         WHERE status <> 'deleted' AND ($1 IS NULL OR principal = $1) ORDER BY created_at, webhook_id LIMIT 1000";
    Ok(Sql::new(sql).bind(principal).fetch_all(db).await?)
}

/// The latest delivery attempts of subscription `id`, newest first.
pub async fn webhook_deliveries(db: &Db, id: Uuid) -> Result<Vec<DeliveryView>, QueryError> {
    let sql = "SELECT attempted_at, ok, response_status, latency_ms, events, first_position, last_position, error \
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY attempt_no DESC LIMIT 100";
    Ok(Sql::new(sql).bind(id).fetch_all(db).await?)
}
