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
use std::collections::HashMap;

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
        let mut heads: HashMap<(String, String), String> = HashMap::new();
        for event in events {
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            let previous = match heads.get(&key) {
                Some(hash) => hash.clone(),
                None => seal::stream_head(conn, &key.0, &key.1).await?.unwrap_or_else(|| GENESIS.to_owned()),
            };
            let hash = stream_hash(&previous, event);
            seal_no += 1;
            chain = chain_hash(&chain, event.position, &hash);
            seal::insert(conn, seal_no, event, &hash, &chain).await?;
            heads.insert(key, hash);
        }
        Ok(())
    }
}
