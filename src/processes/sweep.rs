//! The clock's process: commands past their deadline time out, queued commands past their TTL
//! expire (also those that passed while tacho was down), queued commands of online vehicles go out
//! (covering races with the connection process), and what is kept for a while is pruned.

use super::acting;
use super::dispatcher::Dispatcher;
use crate::domain::command::CommandCommand;
use crate::projections::ProjectionError;
use crate::store::leases::{Lease, Leases};
use crate::store::{pending, Db, Frameworks};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The clock's lease name: one instance sweeps at a time.
pub const NAME: &str = "clock";

/// How long the clock sleeps at most while the log does not move and nothing falls due.
const QUIET: Duration = Duration::from_secs(30);

/// How often it prunes what is kept for a while.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// On the instance holding the clock's lease: time out commands past their deadline, expire queued
/// commands past their TTL, send queued commands whose vehicle is online (covers races with the
/// connection process), and every minute prune the state history and the inbound dedupe window.
/// It sweeps within a second of the commands read model moving (`log`: its progress; what it
/// sweeps is read there), at the next deadline or end of a time to live, and at least every
/// [`QUIET`]; a quiet tacho costs the database almost nothing.
pub async fn sweep(
    db: Db,
    frameworks: Arc<Frameworks>,
    dispatcher: Option<Arc<Dispatcher>>,
    retention: Retention,
    leases: Leases,
    mut log: tokio::sync::watch::Receiver<crate::store::log::Checkpoint>,
    shutdown: CancellationToken,
) {
    let mut pruned: Option<std::time::Instant> = None;
    let mut lease: Option<Lease> = None;
    loop {
        let mut next = crate::store::leases::RENEW_EVERY;
        if lease.as_ref().is_some_and(|l| l.check().is_err()) {
            if let Some(lost) = lease.take() {
                tracing::warn!("the clock's lease was lost; standing by");
                leases.release(&lost).await;
            }
        }
        if lease.is_none() {
            lease = leases.try_take(NAME).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot take the clock's lease");
                None
            });
        }
        if let Some(lease) = &lease {
            log.mark_unchanged();
            next = match sweep_once(&db, &frameworks, dispatcher.as_deref(), lease).await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default().clamp(Duration::from_secs(1), QUIET),
                Ok(None) => QUIET,
                Err(e) => {
                    tracing::warn!(error = %e, "deadline sweep failed; retrying");
                    Duration::from_secs(1)
                }
            };
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                match prune(&db, retention).await {
                    Ok(_) => pruned = Some(std::time::Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "pruning failed; retrying"),
                }
            }
            next = next.min(PRUNE_EVERY);
        }
        let moved = async {
            // A new command may fall due sooner than `next`: sweep within a second once the read
            // model has it, as before.
            if log.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(next) => {}
            _ = moved, if lease.is_some() => {}
        }
    }
    if let Some(lease) = lease {
        leases.release(&lease).await;
    }
}

/// One sweep under `lease` (also run by tests); when the next command falls due, if any does.
pub async fn sweep_once(
    db: &Db,
    frameworks: &Frameworks,
    dispatcher: Option<&Dispatcher>,
    lease: &Lease,
) -> Result<Option<chrono::DateTime<Utc>>, ProjectionError> {
    let now = Utc::now();
    let due = pending::due(db, now).await?;
    for id in due.overdue {
        lease.check()?;
        // The read model may lag a re-dispatch that moved the deadline: the aggregate decides.
        let _ = frameworks
            .execute(&frameworks.commands, &id.to_string(), CommandCommand::TimeOut { at: now }, &acting("tacho:clock"))
            .await;
    }
    for id in due.expired {
        lease.check()?;
        let _ = frameworks
            .execute(&frameworks.commands, &id.to_string(), CommandCommand::Expire { at: now }, &acting("tacho:clock"))
            .await;
    }
    if let Some(dispatcher) = dispatcher {
        for (id, vin) in due.ready {
            if let Err(e) = dispatcher.dispatch(&id.to_string(), &vin, lease).await {
                tracing::warn!(command = %id, error = %e, "sending a queued command failed; retrying");
            }
        }
    }
    Ok(due.next)
}

/// How long vehicle message ids are remembered to drop repeats.
const DEDUPE_WINDOW_DAYS: i64 = 7;

/// How long what tacho keeps for a while is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// State history.
    pub history: chrono::Duration,
    /// Dead letters.
    pub dead_letters: chrono::Duration,
    /// Idempotency keys (after that a key may name a new command).
    pub idempotency_keys: chrono::Duration,
}

/// Deletes state history, dead letters and idempotency keys past their retention, and message ids
/// older than the deduplication window.
pub async fn prune(db: &Db, retention: Retention) -> Result<u64, sqlx::Error> {
    let now = Utc::now();
    let prune = pending::Prune {
        history_before: now - retention.history,
        seen_before: now - chrono::Duration::days(DEDUPE_WINDOW_DAYS),
        dead_letters_before: now - retention.dead_letters,
        keys_before: now - retention.idempotency_keys,
        // Long past any create, rotation or delivery still in flight.
        webhook_orphans_before: now - chrono::Duration::hours(1),
    };
    pending::prune(db, prune).await
}
