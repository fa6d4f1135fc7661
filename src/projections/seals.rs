//! The seals' writer: every event, once committed, gets a SHA-256 hash chained to the previous event
//! of its stream, and a running hash chained over all seals in the order they were made (commit
//! order; the hashing is [`crate::store::seal`]'s). `tacho audit verify` recomputes both from the log: an edited payload, a
//! deleted event or a reordered one no longer matches its seal, and the first bad one is named.
//!
//! Whoever can write the database could rewrite the seals too: the chain head (`seal_no`,
//! `chain_hash`) that `audit verify` prints is what an auditor records outside; a later chain that
//! does not pass through it has been rewritten. Seals are the reference, so they are never rebuilt.

use super::{Projection, ProjectionError};
use crate::store::log::StoredEvent;
use crate::store::seal::{self, chain_hash, stream_hash, GENESIS};
use crate::store::Conn;

/// Keeps `event_seals`.
pub struct SealProjection;

impl SealProjection {
    /// Subscriber name.
    pub const NAME: &'static str = "seals";
}

#[async_trait::async_trait]
impl Projection for SealProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// Every stream.
    fn aggregate_types(&self) -> &'static [&'static str] {
        &[]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_seals"]
    }

    fn rebuildable(&self) -> bool {
        false
    }

    /// Every row is sealed as stored, readable or not.
    fn takes_unreadable(&self) -> bool {
        true
    }

    async fn apply(&self, conn: &mut Conn<'_>, event: &StoredEvent) -> Result<(), ProjectionError> {
        self.apply_batch(conn, std::slice::from_ref(event)).await
    }

    async fn apply_batch(&self, conn: &mut Conn<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        let (mut seal_no, mut chain) = seal::last(conn).await?.unwrap_or((0, GENESIS.to_owned()));
        let mut keys: Vec<(String, String)> =
            events.iter().map(|e| (e.aggregate_type.clone(), e.aggregate_id.clone())).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut heads = seal::stream_heads(conn, &keys).await?;
        let mut seals = Vec::with_capacity(events.len());
        for event in events {
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            let previous = heads.get(&key).map(String::as_str).unwrap_or(GENESIS);
            let hash = stream_hash(previous, event);
            seal_no += 1;
            chain = chain_hash(&chain, event.position, &hash);
            seals.push(seal::NewSeal { seal_no, event, stream_hash: hash.clone(), chain_hash: chain.clone() });
            heads.insert(key, hash);
        }
        seal::insert_many(conn, &seals).await?;
        Ok(())
    }
}
