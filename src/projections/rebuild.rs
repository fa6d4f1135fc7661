//! Rebuilding a read model from position 0 into fresh tables (see [`crate::store::rebuild`]), then
//! swapping them in, while the API keeps answering from the old ones. Once caught up, one
//! transaction holding the subscriber's turn catches up the rest, replaces the live tables and moves
//! the live checkpoint to where the rebuild stopped.

use super::{Projection, ProjectionError};
use crate::store::log::{self, Checkpoint};
use crate::store::rebuild::{self as tables, Rebuilding};
use crate::store::{checkpoints, Conn, Db};
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
    // Catch up outside the lock; the API and the live subscriber go on meanwhile.
    loop {
        let mut tx = own.begin(false).await?;
        let (applied, to) = step(&mut tx, projection, at, types).await?;
        tables::commit(tx).await?;
        at = to;
        done = Rebuilt { events: done.events + applied, seconds: started.elapsed().as_secs_f64() };
        progress(done);
        if applied < BATCH as u64 {
            break;
        }
    }
    // The rest and the swap in one transaction, with the live subscriber held off.
    let _turn = turn.lock().await;
    let mut tx = own.begin(true).await?;
    checkpoints::take_turn(&mut tx, projection.name(), true).await?;
    loop {
        let (applied, to) = step(&mut tx, projection, at, types).await?;
        at = to;
        done.events += applied;
        if applied < BATCH as u64 {
            break;
        }
    }
    tables::swap(&mut tx, projection.tables()).await?;
    checkpoints::save(&mut tx, projection.name(), at).await?;
    tables::commit(tx).await?;
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}

/// One batch after `at`: how many events, and where the checkpoint goes.
async fn step(
    conn: &mut Conn<'_>,
    projection: &dyn Projection,
    at: Checkpoint,
    types: Option<&[&str]>,
) -> Result<(u64, Checkpoint), ProjectionError> {
    let batch = log::read_after(conn, at, types, BATCH).await?;
    if !batch.events.is_empty() {
        projection.apply_batch(conn, &batch.events).await?;
    }
    Ok((batch.events.len() as u64, batch.next_checkpoint(at, BATCH)))
}
