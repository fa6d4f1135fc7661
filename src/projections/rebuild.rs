//! Rebuilding a read model from position 0 into fresh tables (see [`crate::store::rebuild`]), then
//! swapping them in, while the API keeps answering from the old ones. Once caught up, one
//! transaction holding the subscriber's turn catches up the rest, replaces the live tables and moves
//! the live checkpoint to where the rebuild stopped.

use super::{Projection, ProjectionError};
use crate::store::log::{self, Checkpoint};
use crate::store::rebuild::{self as tables, Rebuilding};
use crate::store::{checkpoints, Conn, Db};
use std::collections::HashSet;
use std::time::Instant;

/// Events per batch of a rebuild.
const BATCH: i64 = 5000;

/// How far a rebuild got.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuilt {
    /// Events applied.
    pub events: u64,
    /// Seconds it took.
    pub seconds: f64,
}

impl Rebuilt {
    /// Events applied per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// What to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always (`projections rebuild`).
    Always,
    /// Only while it has no checkpoint (a read model new in this version, filled at start: another
    /// instance may have filled it meanwhile).
    New,
}

/// Rebuilds `projection` into fresh tables and swaps them in; `turn` is the live subscriber's
/// in-process turn. `progress` hears after each batch.
pub async fn rebuild(
    db: &Db,
    projection: &dyn Projection,
    turn: &tokio::sync::Mutex<()>,
    when: When,
    progress: &(dyn Fn(Rebuilt) + Send + Sync),
) -> Result<Rebuilt, ProjectionError> {
    let started = Instant::now();
    let mut own = Rebuilding::open(db, projection.name()).await?;
    if when == When::New && checkpoints::exists(&mut own.conn(), projection.name()).await? {
        return Ok(Rebuilt::default());
    }
    own.fresh_tables(projection.tables()).await?;
    let types = Some(projection.aggregate_types()).filter(|t| !t.is_empty());
    let mut at = Checkpoint::default();
    let mut done = Rebuilt::default();
    // Events that do not decode are passed over (as the live subscriber does): a batch that meets
    // one is rolled back and read again without it.
    let mut passed_over = HashSet::new();
    let mut reading = Reading::default();
    // Catch up outside the lock; the API and the live subscriber go on meanwhile.
    loop {
        let mut tx = own.begin(false).await?;
        let (read, taken, to) = match step(&mut tx, projection, at, types, &mut reading, &mut passed_over).await {
            Err(ProjectionError::Undecodable(_)) => {
                tables::rollback(tx).await?;
                continue;
            }
            stepped => stepped?,
        };
        tables::commit(tx).await?;
        at = to;
        done = Rebuilt { events: done.events + taken, seconds: started.elapsed().as_secs_f64() };
        progress(done);
        if read < BATCH as u64 {
            break;
        }
    }
    // The rest and the swap in one transaction, with the live subscriber held off.
    let _turn = turn.lock().await;
    loop {
        let mut tx = own.begin(true).await?;
        checkpoints::take_turn(&mut tx, projection.name(), true).await?;
        let (mut last, mut rest) = (at, 0);
        let finished = loop {
            match step(&mut tx, projection, last, types, &mut reading, &mut passed_over).await {
                Ok((read, taken, to)) => {
                    (last, rest) = (to, rest + taken);
                    if read < BATCH as u64 {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match finished {
            Err(ProjectionError::Undecodable(_)) => {
                tables::rollback(tx).await?;
                continue;
            }
            finished => finished?,
        }
        tables::swap(&mut tx, projection.tables()).await?;
        checkpoints::reset(&mut tx, projection.name(), last).await?;
        tables::commit(tx).await?;
        done.events += rest;
        break;
    }
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}

/// How a rebuild reads the log.
#[derive(Debug, Default)]
struct Reading {
    /// The projection's events were less than a quarter of the last batch's stretch of the log: the
    /// database filters the rest (until they are a quarter again).
    filtered: bool,
}

/// One batch after `at`: how many events were read, how many of them the projection took, and
/// where the checkpoint goes.
async fn step(
    conn: &mut Conn<'_>,
    projection: &dyn Projection,
    at: Checkpoint,
    types: Option<&[&str]>,
    reading: &mut Reading,
    passed_over: &mut HashSet<i64>,
) -> Result<(u64, u64, Checkpoint), ProjectionError> {
    let (events, read, to) = match types {
        // The whole log in commit order, the projection's types picked here, while they are a fair
        // share of it; else the database filters (it reads past the others without sending them).
        Some(types) if !reading.filtered => {
            let picked = log::read_after_picking(conn, at, types, BATCH).await?;
            reading.filtered = picked.read == BATCH as u64 && (picked.events.len() as u64) * 4 < picked.read;
            (picked.events, picked.read, picked.next)
        }
        types => {
            let batch = log::read_after(conn, at, types, BATCH).await?;
            let (read, to) = (batch.events.len() as u64, batch.next_checkpoint(at, BATCH));
            // Positions follow the log closely enough to tell how much it walked past.
            let walked = u64::try_from(to.position - at.position).unwrap_or(0);
            reading.filtered = types.is_some() && read * 4 < walked;
            (batch.events, read, to)
        }
    };
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| !passed_over.contains(&e.position) && (e.unreadable.is_none() || projection.takes_unreadable()))
        .collect();
    if !events.is_empty() {
        if let Err(e) = projection.apply_batch(conn, &events).await {
            if let ProjectionError::Undecodable(undecodable) = &e {
                tracing::error!(subscriber = projection.name(), error = %undecodable, "rebuild passes over an event that does not decode");
                passed_over.insert(undecodable.position);
            }
            return Err(e);
        }
    }
    Ok((read, events.len() as u64, to))
}
