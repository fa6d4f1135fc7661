//! Audit verification: replay each stream, check it against its seals (tamper evidence) and its
//! sequence, fold it through its aggregate and compare the result with the read models that claim
//! to reflect it; then recompute the chain over all seals.

mod models;

use crate::domain::streams;
use crate::projections::seals::SealProjection;
use crate::projections::ProjectionError;
use crate::store::log::StoredEvent;
use crate::store::seal::{self, Seal};
use crate::store::{audit, checkpoints, Conn, Db};
use models::Models;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

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
    /// Events in all.
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

/// Verifies every stream, or only those of `aggregate_type` (and `id`), in one pass over the log;
/// `progress` hears as it goes.
pub async fn verify(
    db: &Db,
    aggregate_type: Option<&str>,
    id: Option<&str>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<VerifyReport, ProjectionError> {
    let mut pooled = db.acquire().await?;
    let mut conn = pooled.conn();
    let total = audit::count_events(&mut conn, aggregate_type, id).await?;
    // How far the seals got, read before the seals: every seal of an event up to there is then
    // among those read next.
    let sealed_up_to = checkpoints::load(&mut conn, SealProjection::NAME).await?;
    let rows = audit::seals(&mut conn, aggregate_type, id).await?;
    let mut seals: HashMap<(String, String), Vec<Seal>> = HashMap::new();
    for (kind, stream, sequence, global_position, stream_hash) in rows {
        seals.entry((kind, stream)).or_default().push(Seal { sequence, global_position, stream_hash });
    }
    seals.values_mut().for_each(|s| s.sort_by_key(|seal| seal.sequence));
    let models = Models::load(&mut conn, aggregate_type, sealed_up_to).await?;
    let mut pass = Pass { report: VerifyReport::default(), seals, models, stream: Vec::new(), total: total as u64 };
    audit::for_each_event(&mut conn, aggregate_type, id, |event| pass.push(event, progress)).await?;
    pass.finish_stream()?;
    // Streams whose every event is gone still have their seals.
    let mut orphans: Vec<_> = std::mem::take(&mut pass.seals).into_iter().collect();
    orphans.sort_by(|a, b| a.0.cmp(&b.0));
    for ((kind, stream), seals) in orphans {
        if let Err(broken) = seal::check_stream(&[], &seals) {
            pass.report.streams += 1;
            pass.report.mismatches.push(broken_mismatch(&kind, &stream, broken));
        }
    }
    let mut report = pass.report;
    if aggregate_type.is_none() {
        report.chain = verify_chain(&mut conn, &mut report.mismatches).await?;
    }
    Ok(report)
}

/// One pass over the log, stream by stream.
struct Pass {
    report: VerifyReport,
    seals: HashMap<(String, String), Vec<Seal>>,
    models: Models,
    /// The events of the stream being read.
    stream: Vec<StoredEvent>,
    total: u64,
}

impl Pass {
    fn push(&mut self, event: StoredEvent, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<(), ProjectionError> {
        let same = self
            .stream
            .first()
            .is_some_and(|e| e.aggregate_type == event.aggregate_type && e.aggregate_id == event.aggregate_id);
        if !same {
            self.finish_stream()?;
        }
        self.stream.push(event);
        self.report.events += 1;
        if self.report.events.is_multiple_of(1000) {
            progress(Progress { streams: self.report.streams, total: self.total, events: self.report.events });
        }
        Ok(())
    }

    /// Checks the stream just read against its seals, its sequence and its read model.
    fn finish_stream(&mut self) -> Result<(), ProjectionError> {
        let events = std::mem::take(&mut self.stream);
        let Some(first) = events.first() else { return Ok(()) };
        let (kind, id) = (first.aggregate_type.clone(), first.aggregate_id.clone());
        self.report.streams += 1;
        let mismatch = |problem: String, at: Option<(i64, i64)>| Mismatch {
            aggregate_type: kind.clone(),
            aggregate_id: id.clone(),
            problem,
            sequence: at.map(|a| a.0),
            position: at.map(|a| a.1),
        };
        let seals = self.seals.remove(&(kind.clone(), id.clone())).unwrap_or_default();
        match seal::check_stream(&events, &seals) {
            Ok(sealed) => {
                self.report.sealed += sealed;
                self.report.unsealed += (events.len() as u64).saturating_sub(sealed);
            }
            Err(broken) => {
                self.report.mismatches.push(mismatch(broken.problem, Some((broken.sequence, broken.position))));
                return Ok(());
            }
        }
        // The seals subscriber has passed these: an event it passed without sealing was put
        // behind its back (or its seal deleted).
        let sealed: HashSet<i64> = seals.iter().map(|s| s.sequence).collect();
        if let Some(e) =
            events.iter().find(|e| !sealed.contains(&e.sequence) && e.checkpoint() <= self.models.sealed_up_to)
        {
            let problem = format!(
                "event #{} at position {} has no seal, though the seals passed it: inserted behind their back, or its seal deleted",
                e.sequence, e.position
            );
            self.report.mismatches.push(mismatch(problem, Some((e.sequence, e.position))));
            return Ok(());
        }
        if let Some((i, e)) = events.iter().enumerate().find(|(i, e)| e.sequence != *i as i64 + 1) {
            let problem = format!("sequence {} found where {} was expected", e.sequence, i + 1);
            self.report.mismatches.push(mismatch(problem, Some((i as i64 + 1, e.position))));
            return Ok(());
        }
        let Some(projection) = models::projection_of(&kind) else {
            if !matches!(kind.as_str(), streams::VEHICLE_STATE | streams::BROADCAST) {
                self.report.mismatches.push(mismatch(format!("unknown aggregate type {kind}"), None));
            }
            return Ok(());
        };
        if !self.models.caught_up(projection, &events) {
            self.report.lagging += 1;
            return Ok(());
        }
        // An event that does not decode is a finding about this stream, not the end of the audit.
        let problems =
            self.models.compare(&kind, &id, &events).unwrap_or_else(|e| vec![format!("does not replay: {e}")]);
        self.report.mismatches.extend(problems.into_iter().map(|p| mismatch(p, None)));
        Ok(())
    }
}

fn broken_mismatch(kind: &str, id: &str, broken: seal::Broken) -> Mismatch {
    Mismatch {
        aggregate_type: kind.to_owned(),
        aggregate_id: id.to_owned(),
        problem: broken.problem,
        sequence: Some(broken.sequence),
        position: Some(broken.position),
    }
}

/// Recomputes the running hash over every seal; the first seal that breaks it is a mismatch.
async fn verify_chain(
    conn: &mut Conn<'_>,
    mismatches: &mut Vec<Mismatch>,
) -> Result<Option<ChainHead>, ProjectionError> {
    let seals = seal::chain(conn).await?;
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
                aggregate_type: SealProjection::NAME.into(),
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
