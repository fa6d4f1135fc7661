//! The device registry read model (`rm_devices`).

use super::{Projection, ProjectionError};
use crate::domain::device::DeviceEvent;
use crate::domain::streams;
use crate::store::log::StoredEvent;
use crate::store::Conn;
use crate::store::Sql;
use serde_json::json;

/// Keeps `rm_devices`.
pub struct DevicesProjection;

impl DevicesProjection {
    /// Subscriber name.
    pub const NAME: &'static str = "devices";
}

#[async_trait::async_trait]
impl Projection for DevicesProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[streams::DEVICE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_devices"]
    }

    async fn apply(&self, conn: &mut Conn<'_>, event: &StoredEvent) -> Result<(), ProjectionError> {
        let id = &event.aggregate_id;
        let version = event.sequence;
        match event.decode::<DeviceEvent>()? {
            DeviceEvent::DeviceRegistered { device_id, vin, kind, certificate_thumbprint, replaces, at } => {
                let sql = "INSERT INTO rm_devices (device_id, vin, kind, status, certificate_thumbprint, replaces, \
                     registered_at, updated_at, version) VALUES ($1, $2, $3, 'registered', $4, $5, $6, $6, $7) \
                     ON CONFLICT (device_id) DO NOTHING";
                Sql::new(sql)
                    .bind(device_id)
                    .bind(vin)
                    .bind(kind)
                    .bind(certificate_thumbprint)
                    .bind(replaces)
                    .bind(at)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
            }
            DeviceEvent::DeviceProvisioned { client_id, allowed_topics, at } => {
                let sql = "UPDATE rm_devices SET client_id = $2, allowed_topics = $3, \
                     status = CASE status WHEN 'registered' THEN 'provisioned' ELSE status END, \
                     updated_at = $4, version = $5 WHERE device_id = $1";
                let topics = json!(allowed_topics);
                Sql::new(sql).bind(id).bind(client_id).bind(topics).bind(at).bind(version).execute(&mut *conn).await?;
            }
            DeviceEvent::DeviceActivated { at } => status(conn, id, "active", at, version).await?,
            DeviceEvent::DeviceRevoked { at, .. } => status(conn, id, "revoked", at, version).await?,
            DeviceEvent::DeviceReplaced { replacement_device_id, at } => {
                let sql = "UPDATE rm_devices SET status = 'replaced', replaced_by = $2, updated_at = $3, version = $4 \
                     WHERE device_id = $1";
                Sql::new(sql).bind(id).bind(replacement_device_id).bind(at).bind(version).execute(&mut *conn).await?;
            }
        }
        Ok(())
    }
}

async fn status(
    conn: &mut Conn<'_>,
    id: &str,
    status: &'static str,
    at: chrono::DateTime<chrono::Utc>,
    version: i64,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE rm_devices SET status = $2, updated_at = $3, version = $4 WHERE device_id = $1";
    Sql::new(sql).bind(id).bind(status).bind(at).bind(version).execute(&mut *conn).await?;
    Ok(())
}
