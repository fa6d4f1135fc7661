//! Audit verification: replay each stream, check it against its seals (tamper evidence) and its
//! sequence, fold it through its aggregate and compare the result with the read models that claim
//! to reflect it; then recompute the chain over all seals.

use super::log;
use super::sql::{Conn, Db};
use crate::domain::command::{Command, CommandEvent};
use crate::domain::consent::Consent;
use crate::domain::device::Device;
use crate::domain::vehicle::Vehicle;
use crate::on_conn;
use crate::projections::seal::{self, Seal};
use crate::projections::{ProjectionError, StoredEvent, Subscriptions};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
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
    /// The first event concerned, when one is.
    pub sequence: Option<i64>,
    /// Its position in the log.
    pub position: Option<i64>,
}

/// The newest seal: record it outside tacho, and a later verification proves the log up to it was
/// not rewritten (its chain must still pass through this hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainHead {
    /// Number of seals.
    pub seal_no: i64,
    /// Position of the last sealed event.
    pub position: i64,
    /// The running hash over every seal.
    pub chain_hash: String,
}

/// How far a verification got (for a progress bar).
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Streams done.
    pub streams: u64,
    /// Streams in all.
    pub total: u64,
    /// Events replayed so far.
    pub events: u64,
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
    /// Events checked against their seals.
    pub sealed: u64,
    /// Events not sealed yet (appended after the seals subscriber's last batch).
    pub unsealed: u64,
    /// The newest seal, when every stream was verified.
    pub chain: Option<ChainHead>,
    /// Every difference found.
    pub mismatches: Vec<Mismatch>,
}

/// Verifies every stream, or only those of `aggregate_type` (and `id`); `progress` hears after each
/// stream.
pub async fn verify(
    db: &Db,
    aggregate_type: Option<&str>,
    id: Option<&str>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<VerifyReport, ProjectionError> {
    let mut pooled = db.acquire().await?;
    let mut conn = pooled.conn();
    // Streams whose events are all gone still have seals.
    let sql = "SELECT aggregate_type, aggregate_id FROM events \
         WHERE ($1 IS NULL OR aggregate_type = $1) AND ($2 IS NULL OR aggregate_id = $2) \
         UNION SELECT aggregate_type, aggregate_id FROM event_seals \
         WHERE ($1 IS NULL OR aggregate_type = $1) AND ($2 IS NULL OR aggregate_id = $2) \
         ORDER BY 1, 2";
    let streams: Vec<(String, String)> =
        on_conn!(&mut conn, |c| sqlx::query_as(sql).bind(aggregate_type).bind(id).fetch_all(c).await)?;
    let mut report = VerifyReport::default();
    let total = streams.len() as u64;
    for (kind, id) in streams {
        let events = log::read_stream(&mut conn, &kind, &id).await?;
        report.streams += 1;
        report.events += events.len() as u64;
        progress(Progress { streams: report.streams, total, events: report.events });
        let mismatch = |problem: String| Mismatch {
            aggregate_type: kind.clone(),
            aggregate_id: id.clone(),
            problem,
            sequence: None,
            position: None,
        };
        let sql = "SELECT sequence, global_position, stream_hash FROM event_seals \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence";
        let seals: Vec<Seal> = on_conn!(&mut conn, |c| sqlx::query_as(sql).bind(&kind).bind(&id).fetch_all(c).await)?;
        match seal::check_stream(&events, &seals) {
            Ok(sealed) => {
                report.sealed += sealed;
                report.unsealed += events.len() as u64 - sealed.min(events.len() as u64);
            }
            Err(broken) => {
                report.mismatches.push(Mismatch {
                    sequence: Some(broken.sequence),
                    position: Some(broken.position),
                    ..mismatch(broken.problem)
                });
                continue;
            }
        }
        if let Some((i, e)) = events.iter().enumerate().find(|(i, e)| e.sequence != *i as i64 + 1) {
            report.mismatches.push(Mismatch {
                sequence: Some(i as i64 + 1),
                position: Some(e.position),
                ..mismatch(format!("sequence {} found where {} was expected", e.sequence, i + 1))
            });
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
    if aggregate_type.is_none() {
        report.chain = verify_chain(&mut conn, &mut report.mismatches).await?;
    }
    Ok(report)
}

/// Recomputes the running hash over every seal; the first seal that breaks it is a mismatch.
async fn verify_chain(
    conn: &mut Conn<'_>,
    mismatches: &mut Vec<Mismatch>,
) -> Result<Option<ChainHead>, ProjectionError> {
    let sql = "SELECT seal_no, global_position, stream_hash, chain_hash FROM event_seals ORDER BY seal_no";
    let seals: Vec<(i64, i64, String, String)> = on_conn!(conn, |c| sqlx::query_as(sql).fetch_all(c).await)?;
    let mut chain = seal::GENESIS.to_owned();
    let mut head = None;
    for (i, (seal_no, position, stream_hash, stored)) in seals.into_iter().enumerate() {
        chain = seal::chain_hash(&chain, position, &stream_hash);
        let problem = if seal_no != i as i64 + 1 {
            Some(format!("seal #{} is missing: the seals were edited", i + 1))
        } else if chain != stored {
            Some(format!("seal #{seal_no} (position {position}) breaks the chain: the seals were edited"))
        } else {
            None
        };
        if let Some(problem) = problem {
            mismatches.push(Mismatch {
                aggregate_type: "seals".into(),
                aggregate_id: seal_no.to_string(),
                problem,
                sequence: None,
                position: Some(position),
            });
            return Ok(None);
        }
        head = Some(ChainHead { seal_no, position, chain_hash: stored });
    }
    Ok(head)
}

fn fold<A: Aggregate>(events: &[StoredEvent]) -> Result<A, ProjectionError> {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.decode::<A::Event>()?);
    }
    Ok(aggregate)
}

async fn compare_vehicle(
    conn: &mut Conn<'_>,
    vin: &str,
    events: &[StoredEvent],
) -> Result<Vec<String>, ProjectionError> {
    let vehicle: Vehicle = fold(events)?;
    let sql = "SELECT status, devices FROM rm_vehicles WHERE vin = $1";
    let row: Option<(String, serde_json::Value)> =
        on_conn!(conn, |c| sqlx::query_as(sql).bind(vin).fetch_optional(c).await)?;
    let Some((status, devices)) = row else { return Ok(vec!["rm_vehicles has no row".into()]) };
    let mut problems = Vec::new();
    if status != vehicle.status.as_str() {
        problems.push(format!("rm_vehicles.status is {status}, the log says {}", vehicle.status.as_str()));
    }
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

async fn compare_device(conn: &mut Conn<'_>, id: &str, events: &[StoredEvent]) -> Result<Vec<String>, ProjectionError> {
    let device: Device = fold(events)?;
    let sql = "SELECT status, vin, certificate_thumbprint FROM rm_devices WHERE device_id = $1";
    let row: Option<(String, String, String)> =
        on_conn!(conn, |c| sqlx::query_as(sql).bind(id).fetch_optional(c).await)?;
    let Some((status, vin, thumbprint)) = row else { return Ok(vec!["rm_devices has no row".into()]) };
    let mut problems = Vec::new();
    for (column, model, log) in [
        ("status", status, device.status.as_str().to_owned()),
        ("vin", vin, device.vin),
        ("certificate_thumbprint", thumbprint, device.certificate_thumbprint),
    ] {
        if model != log {
            problems.push(format!("rm_devices.{column} is {model}, the log says {log}"));
        }
    }
    Ok(problems)
}

async fn compare_consent(
    conn: &mut Conn<'_>,
    vin: &str,
    events: &[StoredEvent],
) -> Result<Vec<String>, ProjectionError> {
    let consent: Consent = fold(events)?;
    let sql = "SELECT subject, purpose, version FROM rm_consents WHERE vin = $1 AND status = 'granted'";
    let rows: Vec<(String, String, i64)> = on_conn!(conn, |c| sqlx::query_as(sql).bind(vin).fetch_all(c).await)?;
    let model: BTreeSet<(String, String, i64)> = rows.into_iter().collect();
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
    conn: &mut Conn<'_>,
    id: &str,
    events: &[StoredEvent],
) -> Result<Vec<String>, ProjectionError> {
    let command: Command = fold(events)?;
    let Ok(uuid) = uuid::Uuid::parse_str(id) else { return Ok(vec![format!("stream id {id} is not a UUID")]) };
    let sql = "SELECT status, vin, transitions FROM rm_commands WHERE command_id = $1";
    let row: Option<(String, String, serde_json::Value)> =
        on_conn!(conn, |c| sqlx::query_as(sql).bind(uuid).fetch_optional(c).await)?;
    let Some((status, vin, transitions)) = row else { return Ok(vec!["rm_commands has no row".into()]) };
    let transitions = transitions.as_array().map_or(0, Vec::len);
    let mut problems = Vec::new();
    if status != command.status.as_str() {
        problems.push(format!("rm_commands.status is {status}, the log says {}", command.status.as_str()));
    }
    if vin != command.vin {
        problems.push(format!("rm_commands.vin is {vin}, the log says {}", command.vin));
    }
    let expected =
        events.iter().filter_map(|e| e.decode::<CommandEvent>().ok()).filter(|e| e.status().is_some()).count();
    if transitions != expected {
        problems.push(format!("rm_commands has {transitions} transitions, the log has {expected}"));
    }
    Ok(problems)
}
