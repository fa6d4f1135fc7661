//! Leases: the right of one instance to run a process, a side effect that must happen once
//! (publishing commands, moving commands on what happens to their vehicle, the clock).
//!
//! PostgreSQL keeps one row per process in `process_leases`: its holder, an `epoch` that grows with
//! every change of holder, and an expiry on the database's clock (the one clock instances share).
//! The holder renews it every [`RENEW_EVERY`]; another instance takes it only once it has expired.
//! A holder trusts its lease only until the time its last successful renewal was *sent* plus the
//! lease's length less a margin: by then the database cannot yet have let anyone else take it, even
//! if the holder lost its connection, the database restarted or failed over. Unlike a session
//! advisory lock, nothing dies silently with a connection: a holder that cannot renew stops by
//! itself, and a checkpoint moves only while the row still names its epoch ([`super::checkpoints`]).
//!
//! SQLite: one tacho per file (a file lock guards it), so a lease is held for good.

use super::{Db, Sql};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(10);
/// How often the holder renews its leases (all of them in one statement).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long before its end a holder stops trusting a lease (clock drift, the time to publish).
const MARGIN: Duration = Duration::from_secs(2);

/// This instance's leases: taking, renewing and releasing them.
#[derive(Clone)]
pub struct Leases {
    db: Db,
    holder: Arc<str>,
    held: Arc<Mutex<HashMap<String, Arc<Held>>>>,
}

/// One lease as its holder sees it.
#[derive(Debug)]
struct Held {
    epoch: i64,
    /// Until when it may act: `None` when held for good (SQLite).
    valid_until: Mutex<Option<Instant>>,
    lost: AtomicBool,
}

/// A held lease: check it before every side effect.
#[derive(Debug, Clone)]
pub struct Lease {
    name: Arc<str>,
    holder: Arc<str>,
    held: Arc<Held>,
}

/// The lease is no longer this instance's (expired without renewal, or taken over).
#[derive(Debug, Clone, thiserror::Error)]
#[error("lease on {0} lost: another instance may run it now")]
pub struct LeaseLost(pub String);

impl Lease {
    /// A lease held for good, not backed by the database (one instance, or a test).
    pub fn exclusive(name: &str) -> Self {
        let held = Held { epoch: 0, valid_until: Mutex::new(None), lost: AtomicBool::new(false) };
        Self { name: name.into(), holder: "exclusive".into(), held: Arc::new(held) }
    }

    /// The process it is for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who holds it (this instance's id).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Its epoch: grows with every change of holder.
    pub fn epoch(&self) -> i64 {
        self.held.epoch
    }

    /// Ok while this instance may still act on it; check before every side effect.
    pub fn check(&self) -> Result<(), LeaseLost> {
        let lost = || LeaseLost(self.name.to_string());
        if self.held.lost.load(Ordering::Acquire) {
            return Err(lost());
        }
        let valid_until = *self.held.valid_until.lock().map_err(|_| lost())?;
        match valid_until {
            Some(until) if Instant::now() >= until => Err(lost()),
            _ => Ok(()),
        }
    }

    /// Whether it is backed by a database row (the checkpoint is then fenced by it).
    pub fn is_fenced(&self) -> bool {
        self.held.epoch > 0
    }
}

impl Leases {
    /// The leases of the instance `holder` (unique per running instance).
    pub fn new(db: Db, holder: &str) -> Self {
        Self { db, holder: holder.into(), held: Arc::default() }
    }

    /// This instance's id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease on `name` when it is free, expired or already this instance's; `None` while
    /// another instance holds it.
    pub async fn try_take(&self, name: &str) -> Result<Option<Lease>, sqlx::Error> {
        if self.db.is_embedded() {
            let lease = Lease { holder: Arc::clone(&self.holder), ..Lease::exclusive(name) };
            return Ok(Some(lease));
        }
        let sent = Instant::now();
        let sql = format!(
            "INSERT INTO process_leases AS l (name, holder, epoch, expires_at) VALUES ($1, $2, 1, {expiry}) \
             ON CONFLICT (name) DO UPDATE SET holder = $2, epoch = l.epoch + 1, expires_at = {expiry} \
             WHERE l.expires_at < clock_timestamp() OR l.holder = $2 \
             RETURNING epoch",
            expiry = expiry("$3")
        );
        let epoch: Option<i64> =
            Sql::new(&sql).bind(name).bind(&*self.holder).bind(ttl_ms()).scalar_optional(&self.db).await?;
        let Some(epoch) = epoch else { return Ok(None) };
        let held =
            Arc::new(Held { epoch, valid_until: Mutex::new(Some(sent + TTL - MARGIN)), lost: AtomicBool::new(false) });
        if let Ok(mut map) = self.held.lock() {
            if let Some(previous) = map.insert(name.to_owned(), Arc::clone(&held)) {
                previous.lost.store(true, Ordering::Release);
            }
        }
        tracing::info!(process = name, holder = %self.holder, epoch, "took the lease");
        Ok(Some(Lease { name: name.into(), holder: Arc::clone(&self.holder), held }))
    }

    /// Gives `lease` up at once (a clean stop), so another instance need not wait for it to expire.
    pub async fn release(&self, lease: &Lease) {
        lease.held.lost.store(true, Ordering::Release);
        if let Ok(mut map) = self.held.lock() {
            if map.get(lease.name()).is_some_and(|h| Arc::ptr_eq(h, &lease.held)) {
                map.remove(lease.name());
            }
        }
        if !lease.is_fenced() {
            return;
        }
        // Ended, not deleted: the next holder's epoch still grows.
        let sql = "UPDATE process_leases SET expires_at = '-infinity' WHERE name = $1 AND holder = $2 AND epoch = $3";
        let deleted = Sql::new(sql).bind(lease.name()).bind(&*self.holder).bind(lease.epoch()).execute(&self.db).await;
        if let Err(e) = deleted {
            tracing::warn!(process = lease.name(), error = %e, "cannot release the lease; it expires by itself");
        }
    }

    /// Renews every lease held, once; a lease the database no longer gives this instance is lost.
    pub async fn renew(&self) -> Result<(), sqlx::Error> {
        let held: Vec<(String, Arc<Held>)> = match self.held.lock() {
            Ok(map) => map.iter().map(|(name, held)| (name.clone(), Arc::clone(held))).collect(),
            Err(_) => return Ok(()),
        };
        if held.is_empty() || self.db.is_embedded() {
            return Ok(());
        }
        let sent = Instant::now();
        let names: Vec<&str> = held.iter().map(|(name, _)| name.as_str()).collect();
        let sql = format!(
            "UPDATE process_leases SET expires_at = {} WHERE holder = $1 AND name = ANY($2) RETURNING name, epoch",
            expiry("$3")
        );
        let renewed: Vec<(String, i64)> = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_as(&sql).bind(&*self.holder).bind(&names).bind(ttl_ms()).fetch_all(pool).await?
            }
            Db::Sqlite(_) => return Ok(()),
        };
        let renewed: HashMap<String, i64> = renewed.into_iter().collect();
        for (name, lease) in held {
            if renewed.get(&name) == Some(&lease.epoch) {
                if let Ok(mut until) = lease.valid_until.lock() {
                    *until = Some(sent + TTL - MARGIN);
                }
            } else if !lease.lost.swap(true, Ordering::AcqRel) {
                tracing::warn!(process = %name, holder = %self.holder, "lease taken over by another instance");
            }
        }
        Ok(())
    }

    /// Renews the leases held every [`RENEW_EVERY`] until `shutdown`.
    pub async fn keep(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(error = %e, "cannot renew the leases; processes stop when they run out");
            }
        }
    }
}

/// The lease's end: the database's clock now plus `param` milliseconds.
fn expiry(param: &str) -> String {
    format!("clock_timestamp() + {param} * interval '1 millisecond'")
}

fn ttl_ms() -> i64 {
    TTL.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(valid_until: Option<Instant>) -> Lease {
        let held = Held { epoch: 3, valid_until: Mutex::new(valid_until), lost: AtomicBool::new(false) };
        Lease { name: "dispatcher".into(), holder: "a".into(), held: Arc::new(held) }
    }

    #[test]
    fn a_lease_not_renewed_in_time_is_no_longer_trusted() {
        assert!(lease(Some(Instant::now() + Duration::from_secs(5))).check().is_ok());
        let ran_out = lease(Some(Instant::now() - Duration::from_millis(1)));
        assert_eq!(ran_out.check().unwrap_err().0, "dispatcher");
        assert!(lease(None).check().is_ok(), "held for good");
    }

    #[test]
    fn a_lease_taken_over_is_lost_whatever_its_time() {
        let taken = lease(Some(Instant::now() + Duration::from_secs(5)));
        taken.held.lost.store(true, Ordering::Release);
        assert!(taken.check().is_err());
    }
}
