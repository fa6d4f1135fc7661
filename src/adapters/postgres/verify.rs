//! Audit verification: replay each stream, check its sequence, fold it through its aggregate and
//! compare the result with the read models that claim to reflect it.

use super::log;
use crate::domain::command::{Command, CommandEvent};
use crate::domain::consent::Consent;
use crate::domain::device::Device;
use crate::domain::vehicle::Vehicle;
use crate::projections::{ProjectionError, StoredEvent, Subscriptions};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::BTreeSet;

/// One difference between the log and what claims to reflect it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mismatch {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Stream id.
    pub aggregate_id: String,
    /// What differs.
    pub problem: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// Streams replayed.
    pub streams: u64,
    /// Events replayed.
    pub events: u64,
    /// Streams whose read model had not caught up yet (not compared).
    pub lagging: u64,
    /// Every difference found.
    pub mismatches: Vec<Mismatch>,
}

/// Verifies every stream, or only those of `aggregate_type` (and `id`).
pub async fn verify(
    pool: &PgPool,
    aggregate_type: Option<&str>,
    id: Option<&str>,
) -> Result<VerifyReport, ProjectionError> {
    let mut conn = pool.acquire().await?;
    let streams: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT aggregate_type, aggregate_id FROM events \
         WHERE ($1::text IS NULL OR aggregate_type = $1) AND ($2::text IS NULL OR aggregate_id = $2) \
         ORDER BY aggregate_type, aggregate_id",
    )
    .bind(aggregate_type)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut report = VerifyReport::default();
    for (kind, id) in streams {
        let events = log::read_stream(&mut conn, &kind, &id).await?;
        report.streams += 1;
        report.events += events.len() as u64;
        let mismatch = |problem: String| Mismatch { aggregate_type: kind.clone(), aggregate_id: id.clone(), problem };
        if let Some((i, e)) = events.iter().enumerate().find(|(i, e)| e.sequence != *i as i64 + 1) {
            report.mismatches.push(mismatch(format!("sequence {} found where {} was expected", e.sequence, i + 1)));
            continue;
        }
        let Some(head) = events.last().map(StoredEvent::checkpoint) else { continue };
        let projection = match kind.as_str() {
            // Fact streams have no aggregate to fold: their sequence is what can be checked.
            "VehicleState" | "Broadcast" => continue,
            "Vehicle" => "vehicles",
            "Device" => "devices",
            "Consent" => "consents",
            "Command" => "commands",
            other => {
                report.mismatches.push(mismatch(format!("unknown aggregate type {other}")));
                continue;
            }
        };
        if Subscriptions::checkpoint(&mut conn, projection).await? < head {
            report.lagging += 1;
            continue;
        }
        let problems = match kind.as_str() {
            "Vehicle" => compare_vehicle(&mut conn, &id, &events).await?,
            "Device" => compare_device(&mut conn, &id, &events).await?,
            "Consent" => compare_consent(&mut conn, &id, &events).await?,
            _ => compare_command(&mut conn, &id, &events).await?,
        };
        report.mismatches.extend(problems.into_iter().map(mismatch));
    }
    Ok(report)
}

fn fold<A: Aggregate>(events: &[StoredEvent]) -> Result<A, ProjectionError> {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.decode::<A::Event>()?);
    }
    Ok(aggregate)
}

async fn compare_vehicle(
    conn: &mut PgConnection,
    vin: &str,
    events: &[StoredEvent],
) -> Result<Vec<String>, ProjectionError> {
    let vehicle: Vehicle = fold(events)?;
    let row =
        sqlx::query("SELECT status, devices FROM rm_vehicles WHERE vin = $1").bind(vin).fetch_optional(conn).await?;
    let Some(row) = row else { return Ok(vec!["rm_vehicles has no row".into()]) };
    let mut problems = Vec::new();
    let status: String = row.try_get("status")?;
    if status != vehicle.status.as_str() {
        problems.push(format!("rm_vehicles.status is {status}, the log says {}", vehicle.status.as_str()));
    }
    let devices: serde_json::Value = row.try_get("devices")?;
    let listed: BTreeSet<String> = devices
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["device_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let fitted: BTreeSet<String> = vehicle.devices.keys().cloned().collect();
    if listed != fitted {
        problems.push(format!("rm_vehicles.devices is {listed:?}, the log says {fitted:?}"));
    }
    Ok(problems)
}

async fn compare_device(
    conn: &mut PgConnection,
    id: &str,
    events: &[StoredEvent],
) -> Result<Vec<String>, ProjectionError> {
    let device: Device = fold(events)?;
    let row = sqlx::query("SELECT status, vin, certificate_thumbprint FROM rm_devices WHERE device_id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else { return Ok(vec!["rm_devices has no row".into()]) };
    let mut problems = Vec::new();
    for (column, log) in [
        ("status", device.status.as_str().to_owned()),
        ("vin", device.vin),
        ("certificate_thumbprint", device.certificate_thumbprint),
    ] {
        let model: String = row.try_get(column)?;
        if model != log {
            problems.push(format!("rm_devices.{column} is {model}, the log says {log}"));
        }
    }
    Ok(problems)
}

async fn compare_consent(
    conn: &mut PgConnection,
    vin: &str,
    events: &[StoredEvent],
) -> Result<Vec<String>, ProjectionError> {
    let consent: Consent = fold(events)?;
    let rows = sqlx::query("SELECT subject, purpose, version FROM rm_consents WHERE vin = $1 AND status = 'granted'")
        .bind(vin)
        .fetch_all(conn)
        .await?;
    let mut model = BTreeSet::new();
    for row in rows {
        model.insert((
            row.try_get::<String, _>("subject")?,
            row.try_get::<String, _>("purpose")?,
            row.try_get::<i64, _>("version")?,
        ));
    }
    let log: BTreeSet<(String, String, i64)> = consent
        .grants
        .iter()
        .flat_map(|(subject, grants)| {
            grants.iter().map(move |(p, g)| (subject.clone(), p.to_string(), i64::from(g.version)))
        })
        .collect();
    Ok(if model == log { vec![] } else { vec![format!("rm_consents grants {model:?}, the log grants {log:?}")] })
}

async fn compare_command(
    conn: &mut PgConnection,
    id: &str,
    events: &[StoredEvent],
) -> Result<Vec<String>, ProjectionError> {
    let command: Command = fold(events)?;
    let Ok(uuid) = uuid::Uuid::parse_str(id) else { return Ok(vec![format!("stream id {id} is not a UUID")]) };
    let row = sqlx::query(
        "SELECT status, vin, jsonb_array_length(transitions) AS transitions FROM rm_commands WHERE command_id = $1",
    )
    .bind(uuid)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(vec!["rm_commands has no row".into()]) };
    let mut problems = Vec::new();
    let status: String = row.try_get("status")?;
    if status != command.status.as_str() {
        problems.push(format!("rm_commands.status is {status}, the log says {}", command.status.as_str()));
    }
    let vin: String = row.try_get("vin")?;
    if vin != command.vin {
        problems.push(format!("rm_commands.vin is {vin}, the log says {}", command.vin));
    }
    let transitions: i32 = row.try_get("transitions")?;
    let expected =
        events.iter().filter_map(|e| e.decode::<CommandEvent>().ok()).filter(|e| e.status().is_some()).count();
    if transitions as usize != expected {
        problems.push(format!("rm_commands has {transitions} transitions, the log has {expected}"));
    }
    Ok(problems)
}
