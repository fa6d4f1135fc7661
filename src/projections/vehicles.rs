//! The fleet registry read model (`rm_vehicles`): one row per vehicle, for the fleet list.

use super::{Projection, ProjectionError};
use crate::domain::observation::{VehicleFact, STREAM_TYPE};
use crate::domain::streams;
use crate::domain::vehicle::VehicleEvent;
use crate::store::log::StoredEvent;
use crate::store::{bulk, Conn, Sql};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
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
        &[streams::VEHICLE, STREAM_TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_vehicles"]
    }

    /// Registry events one by one; vehicle facts folded per vehicle (last connection change, latest
    /// contact), so a batch of thousands of state reports costs one statement. `last_seen` moves in
    /// steps of a second at least: a row rewritten per report would cost more than the report.
    async fn apply_batch(&self, conn: &mut Conn<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
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
        bulk::touch_last_seen(conn, seen.into_iter().collect()).await?;
        for (vin, (online, since)) in connection {
            let sql = "UPDATE rm_vehicles SET connected = $2, \
                 connection_since = CASE WHEN connected = $2 AND connection_since IS NOT NULL THEN connection_since ELSE $3 END \
                 WHERE vin = $1";
            Sql::new(sql).bind(&vin).bind(online).bind(since).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn apply(&self, conn: &mut Conn<'_>, event: &StoredEvent) -> Result<(), ProjectionError> {
        let vin = &event.aggregate_id;
        let version = event.sequence;
        if event.aggregate_type == STREAM_TYPE {
            return self.apply_batch(conn, std::slice::from_ref(event)).await;
        }
        match event.decode::<VehicleEvent>()? {
            VehicleEvent::VehicleRegistered { vin, model, model_year, market, options, data_collection, at } => {
                let sql = "INSERT INTO rm_vehicles (vin, status, model, model_year, market, options, data_collection, \
                     registered_at, updated_at, version) VALUES ($1, 'registered', $2, $3, $4, $5, $6, $7, $7, $8) \
                     ON CONFLICT (vin) DO NOTHING";
                let (options, data_collection) = (json!(options), json!(data_collection));
                Sql::new(sql)
                    .bind(&vin)
                    .bind(&model)
                    .bind(model_year)
                    .bind(&market)
                    .bind(&options)
                    .bind(&data_collection)
                    .bind(at)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
            }
            VehicleEvent::VehicleActivated { at } => set_status(conn, vin, "active", at, version).await?,
            VehicleEvent::VehicleSuspended { at, .. } => set_status(conn, vin, "suspended", at, version).await?,
            VehicleEvent::VehicleDecommissioned { at } => set_status(conn, vin, "decommissioned", at, version).await?,
            VehicleEvent::DeviceAttached { device_id, kind, at } => {
                let mut devices = devices(conn, vin).await?;
                devices.push(json!({ "device_id": device_id, "kind": kind }));
                set_devices(conn, vin, devices, at, version).await?;
            }
            VehicleEvent::DeviceDetached { device_id, at } => {
                let mut devices = devices(conn, vin).await?;
                devices.retain(|d| d["device_id"] != device_id.as_str());
                set_devices(conn, vin, devices, at, version).await?;
            }
            VehicleEvent::DeviceSwapped { old_device_id, new_device_id, at } => {
                let mut devices = devices(conn, vin).await?;
                for device in devices.iter_mut().filter(|d| d["device_id"] == old_device_id.as_str()) {
                    device["device_id"] = json!(new_device_id);
                }
                set_devices(conn, vin, devices, at, version).await?;
            }
        }
        Ok(())
    }
}

async fn set_status(
    conn: &mut Conn<'_>,
    vin: &str,
    status: &'static str,
    at: DateTime<Utc>,
    version: i64,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE rm_vehicles SET status = $2, updated_at = $3, version = $4 WHERE vin = $1";
    Sql::new(sql).bind(vin).bind(status).bind(at).bind(version).execute(&mut *conn).await?;
    Ok(())
}

/// The devices attached to `vin`, as the read model lists them.
async fn devices(conn: &mut Conn<'_>, vin: &str) -> Result<Vec<Value>, sqlx::Error> {
    let sql = "SELECT devices FROM rm_vehicles WHERE vin = $1";
    let devices: Option<Value> = Sql::new(sql).bind(vin).scalar_optional(&mut *conn).await?;
    Ok(match devices {
        Some(Value::Array(devices)) => devices,
        _ => Vec::new(),
    })
}

async fn set_devices(
    conn: &mut Conn<'_>,
    vin: &str,
    devices: Vec<Value>,
    at: DateTime<Utc>,
    version: i64,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE rm_vehicles SET devices = $2, updated_at = $3, version = $4 WHERE vin = $1";
    let devices = Value::Array(devices);
    Sql::new(sql).bind(vin).bind(&devices).bind(at).bind(version).execute(&mut *conn).await?;
    Ok(())
}
