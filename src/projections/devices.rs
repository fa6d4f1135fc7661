//! The device registry read model (`rm_devices`).

use super::{Projection, ProjectionError, StoredEvent};
use crate::domain::device::DeviceEvent;
use serde_json::json;
use sqlx::PgConnection;

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
        &["Device"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
        let id = &event.aggregate_id;
        let version = event.sequence;
        let query = match event.decode::<DeviceEvent>()? {
            DeviceEvent::DeviceRegistered { device_id, vin, kind, certificate_thumbprint, replaces, at } => {
                sqlx::query(
                    "INSERT INTO rm_devices (device_id, vin, kind, status, certificate_thumbprint, replaces, \
                     registered_at, updated_at, version) VALUES ($1, $2, $3, 'registered', $4, $5, $6, $6, $7) \
                     ON CONFLICT (device_id) DO NOTHING",
                )
                .bind(device_id)
                .bind(vin)
                .bind(kind)
                .bind(certificate_thumbprint)
                .bind(replaces)
                .bind(at)
                .bind(version)
            }
            DeviceEvent::DeviceProvisioned { client_id, allowed_topics, at } => sqlx::query(
                "UPDATE rm_devices SET client_id = $2, allowed_topics = $3, \
                 status = CASE status WHEN 'registered' THEN 'provisioned' ELSE status END, \
                 updated_at = $4, version = $5 WHERE device_id = $1",
            )
            .bind(id)
            .bind(client_id)
            .bind(json!(allowed_topics))
            .bind(at)
            .bind(version),
            DeviceEvent::DeviceActivated { at } => status(id, "active", at, version),
            DeviceEvent::DeviceRevoked { at, .. } => status(id, "revoked", at, version),
            DeviceEvent::DeviceReplaced { replacement_device_id, at } => sqlx::query(
                "UPDATE rm_devices SET status = 'replaced', replaced_by = $2, updated_at = $3, version = $4 \
                 WHERE device_id = $1",
            )
            .bind(id)
            .bind(replacement_device_id)
            .bind(at)
            .bind(version),
        };
        query.execute(conn).await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM rm_devices").execute(conn).await?;
        Ok(())
    }
}

fn status<'q>(
    id: &'q str,
    status: &'static str,
    at: chrono::DateTime<chrono::Utc>,
    version: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query("UPDATE rm_devices SET status = $2, updated_at = $3, version = $4 WHERE device_id = $1")
        .bind(id)
        .bind(status)
        .bind(at)
        .bind(version)
}
