//! The fleet registry read model (`rm_vehicles`): one row per vehicle, for the fleet list.

use super::{Projection, ProjectionError, StoredEvent};
use crate::domain::vehicle::VehicleEvent;
use serde_json::json;
use sqlx::PgConnection;

/// Keeps `rm_vehicles`.
pub struct VehiclesProjection;

impl VehiclesProjection {
    /// Subscriber name.
    pub const NAME: &'static str = "vehicles";
}

#[async_trait::async_trait]
impl Projection for VehiclesProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Vehicle"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
        let vin = &event.aggregate_id;
        let version = event.sequence;
        let set_status = |status: &'static str, at| {
            sqlx::query("UPDATE rm_vehicles SET status = $2, updated_at = $3, version = $4 WHERE vin = $1")
                .bind(vin.clone())
                .bind(status)
                .bind(at)
                .bind(version)
        };
        match event.decode::<VehicleEvent>()? {
            VehicleEvent::VehicleRegistered { vin, model, model_year, market, options, data_collection, at } => {
                sqlx::query(
                    "INSERT INTO rm_vehicles (vin, status, model, model_year, market, options, data_collection, \
                     registered_at, updated_at, version) VALUES ($1, 'registered', $2, $3, $4, $5, $6, $7, $7, $8) \
                     ON CONFLICT (vin) DO NOTHING",
                )
                .bind(vin)
                .bind(model)
                .bind(model_year)
                .bind(market)
                .bind(json!(options))
                .bind(json!(data_collection))
                .bind(at)
                .bind(version)
                .execute(&mut *conn)
                .await?;
            }
            VehicleEvent::VehicleActivated { at } => {
                set_status("active", at).execute(&mut *conn).await?;
            }
            VehicleEvent::VehicleSuspended { at, .. } => {
                set_status("suspended", at).execute(&mut *conn).await?;
            }
            VehicleEvent::VehicleDecommissioned { at } => {
                set_status("decommissioned", at).execute(&mut *conn).await?;
            }
            VehicleEvent::DeviceAttached { device_id, kind, at } => {
                sqlx::query(
                    "UPDATE rm_vehicles SET devices = devices || $2, updated_at = $3, version = $4 WHERE vin = $1",
                )
                .bind(vin)
                .bind(json!([{ "device_id": device_id, "kind": kind }]))
                .bind(at)
                .bind(version)
                .execute(&mut *conn)
                .await?;
            }
            VehicleEvent::DeviceDetached { device_id, at } => {
                sqlx::query(
                    "UPDATE rm_vehicles SET devices = (SELECT coalesce(jsonb_agg(d), '[]') \
                     FROM jsonb_array_elements(devices) d WHERE d->>'device_id' <> $2), \
                     updated_at = $3, version = $4 WHERE vin = $1",
                )
                .bind(vin)
                .bind(device_id)
                .bind(at)
                .bind(version)
                .execute(&mut *conn)
                .await?;
            }
            VehicleEvent::DeviceSwapped { old_device_id, new_device_id, at } => {
                sqlx::query(
                    "UPDATE rm_vehicles SET devices = (SELECT coalesce(jsonb_agg(CASE WHEN d->>'device_id' = $2 \
                     THEN jsonb_set(d, '{device_id}', to_jsonb($3::text)) ELSE d END), '[]') \
                     FROM jsonb_array_elements(devices) d), updated_at = $4, version = $5 WHERE vin = $1",
                )
                .bind(vin)
                .bind(old_device_id)
                .bind(new_device_id)
                .bind(at)
                .bind(version)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM rm_vehicles").execute(conn).await?;
        Ok(())
    }
}
