//! (c) Replay: `audit verify` of the whole log and rebuilds of two read models into fresh tables,
//! next to a raw read of the log.

use super::floors;
use crate::adapters::http::state::AppState;
use crate::projections::commands::CommandsProjection;
use crate::projections::seals::SealProjection;
use crate::projections::state::StateProjection;
use crate::projections::Rebuilt;
use std::time::Instant;

/// What a replay run measured.
pub struct Replay {
    /// Rows of the raw read.
    pub log_rows: u64,
    /// Raw read rate of the log (rows/s).
    pub log_read_rate: f64,
    /// Events `audit verify` replayed.
    pub verified: u64,
    /// Their rate (events/s).
    pub verify_rate: f64,
    /// The rebuild of the vehicle-data read models.
    pub state: Rebuilt,
    /// The rebuild of the commands read model.
    pub commands: Rebuilt,
}

/// Verifies the whole log and rebuilds two read models of the running tacho `state`.
pub async fn measure(state: &AppState) -> anyhow::Result<Replay> {
    let subscriptions = &state.subscriptions;
    subscriptions.catch_up(SealProjection::NAME).await?;
    let (log_rows, log_read_rate) = floors::log_read(&state.db).await?;
    let started = Instant::now();
    let verified = crate::audit::verify(&state.db, None, None, &|_| {}).await?;
    let verify_rate = verified.events as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(verified.mismatches.is_empty(), "the bench log does not verify: {:?}", verified.mismatches);
    let state_rebuilt = subscriptions.rebuild(StateProjection::NAME).await?;
    let commands = subscriptions.rebuild(CommandsProjection::NAME).await?;
    Ok(Replay { log_rows, log_read_rate, verified: verified.events, verify_rate, state: state_rebuilt, commands })
}
