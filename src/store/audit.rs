//! The reads `audit verify` ([`crate::audit`]) makes: the log stream by stream, and what the read
//! models say of each stream (to compare with the log's replay).

use super::log::{select_events, EventRow, StoredEvent};
use super::{Conn, Sql};
use futures::TryStreamExt;
use serde_json::Value;
use uuid::Uuid;

/// The condition selecting streams of `$1` (all when null) and id `$2` (all when null).
const FILTER: &str = "($1 IS NULL OR aggregate_type = $1) AND ($2 IS NULL OR aggregate_id = $2)";

/// How many events the streams of `aggregate_type` (and `id`) hold.
pub async fn count_events(
    conn: &mut Conn<'_>,
    aggregate_type: Option<&str>,
    id: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let sql = format!("SELECT count(*) FROM events WHERE {FILTER}");
    Sql::new(&sql).bind(aggregate_type).bind(id).scalar(&mut *conn).await
}

/// Calls `each` with every event of the streams of `aggregate_type` (and `id`), stream by stream in
/// sequence order, streamed (the log is never held in memory whole).
pub async fn for_each_event<E: From<sqlx::Error>>(
    conn: &mut Conn<'_>,
    aggregate_type: Option<&str>,
    id: Option<&str>,
    mut each: impl FnMut(StoredEvent) -> Result<(), E>,
) -> Result<(), E> {
    let sql = format!("{} WHERE {FILTER} ORDER BY aggregate_type, aggregate_id, sequence", select_events(conn));
    macro_rules! each_row {
        ($c:expr) => {{
            let mut rows = sqlx::query_as::<_, EventRow>(&sql).bind(aggregate_type).bind(id).fetch($c);
            while let Some(row) = rows.try_next().await? {
                each(StoredEvent::from(row))?;
            }
            Ok(())
        }};
    }
    // Streamed row by row, which `Sql` does not offer: one arm per driver.
    match conn {
        Conn::Postgres(c) => each_row!(&mut **c),
        Conn::Sqlite(c) => each_row!(&mut **c),
    }
}

/// The seals of the streams of `aggregate_type` (and `id`): type, id, sequence, position, stream hash.
pub async fn seals(
    conn: &mut Conn<'_>,
    aggregate_type: Option<&str>,
    id: Option<&str>,
) -> Result<Vec<(String, String, i64, i64, String)>, sqlx::Error> {
    let sql = format!(
        "SELECT aggregate_type, aggregate_id, sequence, global_position, stream_hash FROM event_seals WHERE {FILTER}"
    );
    Sql::new(&sql).bind(aggregate_type).bind(id).fetch_all(&mut *conn).await
}

/// The registry's vehicles: VIN, status, attached devices.
pub async fn vehicles(conn: &mut Conn<'_>) -> Result<Vec<(String, String, Value)>, sqlx::Error> {
    Sql::new("SELECT vin, status, devices FROM rm_vehicles").fetch_all(&mut *conn).await
}

/// The registry's devices: id, status, VIN, certificate thumbprint.
pub async fn devices(conn: &mut Conn<'_>) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
    let sql = "SELECT device_id, status, vin, certificate_thumbprint FROM rm_devices";
    Sql::new(sql).fetch_all(&mut *conn).await
}

/// The consents granted: VIN, subject, purpose, version.
pub async fn granted_consents(conn: &mut Conn<'_>) -> Result<Vec<(String, String, String, i64)>, sqlx::Error> {
    let sql = "SELECT vin, subject, purpose, version FROM rm_consents WHERE status = 'granted'";
    Sql::new(sql).fetch_all(&mut *conn).await
}

/// The commands: id, status, VIN, transitions.
pub async fn commands(conn: &mut Conn<'_>) -> Result<Vec<(Uuid, String, String, Value)>, sqlx::Error> {
    let sql = "SELECT command_id, status, vin, transitions FROM rm_commands";
    Sql::new(sql).fetch_all(&mut *conn).await
}

/// Every webhook subscription: id, status, endpoint, secret fingerprint.
pub async fn webhooks(conn: &mut Conn<'_>) -> Result<Vec<(Uuid, String, String, String)>, sqlx::Error> {
    let sql = "SELECT webhook_id, status, endpoint, secret FROM rm_webhooks";
    Sql::new(sql).fetch_all(&mut *conn).await
}
