//! The fleet registry read model (`rm_vehicles`): one row per vehicle, for the fleet list.

use super::{Projection, ProjectionError, StoredEvent};
use crate::domain::observation::{VehicleFact, STREAM_TYPE};
use crate::domain::vehicle::VehicleEvent;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use std::collections::HashMap;

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
        &["Vehicle", STREAM_TYPE]
    }

    /// Registry events one by one; vehicle facts folded per vehicle (last connection change, latest
    /// contact), so a batch of thousands of state reports costs one statement. `last_seen` moves in
    /// steps of a second at least: a row rewritten per report would cost more than the report.
    async fn apply_batch(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        let mut seen: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut connection: HashMap<String, (bool, DateTime<Utc>)> = HashMap::new();
        for event in events {
            if event.aggregate_type != STREAM_TYPE {
                self.apply(conn, event).await?;
                continue;
            }
            let fact = event.decode::<VehicleFact>()?;
            let at = fact.received_at();
            let latest = seen.entry(event.aggregate_id.clone()).or_insert(at);
            *latest = (*latest).max(at);
            if let VehicleFact::ConnectionChanged { online, received_at, .. } = fact {
                connection.insert(event.aggregate_id.clone(), (online, received_at));
            }
        }
        if !seen.is_empty() {
            let (vins, times): (Vec<String>, Vec<DateTime<Utc>>) = seen.into_iter().unzip();
            sqlx::query(
                "UPDATE rm_vehicles v SET last_seen = u.at \
                 FROM UNNEST($1::text[], $2::timestamptz[]) AS u(vin, at) \
                 WHERE v.vin = u.vin AND (v.last_seen IS NULL OR v.last_seen < u.at - interval '1 second')",
            )
            .bind(&vins)
            .bind(&times)
            .execute(&mut *conn)
            .await?;
        }
        for (vin, (online, since)) in connection {
            sqlx::query(
                "UPDATE rm_vehicles SET connected = $2, \
                 connection_since = CASE WHEN connected = $2 AND connection_since IS NOT NULL THEN connection_since ELSE $3 END \
                 WHERE vin = $1",
            )
            .bind(vin)
            .bind(online)
            .bind(since)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
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
        if event.aggregate_type == STREAM_TYPE {
            return self.apply_batch(conn, std::slice::from_ref(event)).await;
        }
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
