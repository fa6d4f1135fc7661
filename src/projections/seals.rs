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
use std::collections::{HashMap, HashSet};

/// Keeps `event_seals`.
#[derive(Default)]
pub struct SealProjection {
    /// The last seal this writer made per stream: (sequence, stream hash). Used only for the
    /// event right after it (`sequence + 1`): the hash of a stream's n-th event depends on that
    /// stream's events alone, so an entry stays true whoever sealed since and whether its batch
    /// committed or not; any other event reads its stream's head from the table.
    heads: std::sync::Mutex<std::collections::HashMap<(String, String), (i64, String)>>,
}

/// Streams [`SealProjection`] remembers at most; beyond, it forgets them all and reads them again.
const REMEMBERED_STREAMS: usize = 200_000;

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
        let mut heads: HashMap<(String, String), (i64, String)> = HashMap::new();
        let mut unknown: HashSet<(String, String)> = HashSet::new();
        {
            let remembered = self.heads.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for event in events {
                let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
                if heads.contains_key(&key) || unknown.contains(&key) {
                    continue;
                }
                match remembered.get(&key) {
                    Some((sequence, hash)) if *sequence + 1 == event.sequence => {
                        heads.insert(key, (*sequence, hash.clone()));
                    }
                    _ => {
                        unknown.insert(key);
                    }
                }
            }
        }
        if !unknown.is_empty() {
            let mut unknown: Vec<(String, String)> = unknown.into_iter().collect();
            unknown.sort_unstable();
            let read = seal::stream_heads(conn, &unknown).await?;
            heads.extend(read.into_iter().map(|(key, hash)| (key, (0, hash))));
        }
        let mut seals = Vec::with_capacity(events.len());
        for event in events {
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            let previous = heads.get(&key).map(|(_, hash)| hash.as_str()).unwrap_or(GENESIS);
            let hash = stream_hash(previous, event);
            seal_no += 1;
            chain = chain_hash(&chain, event.position, &hash);
            seals.push(seal::NewSeal { seal_no, event, stream_hash: hash.clone(), chain_hash: chain.clone() });
            heads.insert(key, (event.sequence, hash));
        }
        seal::insert_many(conn, &seals).await?;
        let mut remembered = self.heads.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if remembered.len() >= REMEMBERED_STREAMS {
            remembered.clear();
        }
        for (key, (sequence, hash)) in heads {
            // The stream's newest seal, as the table's head is (a batch is in sequence order).
            let newer = remembered.get(&key).is_none_or(|(known, _)| *known < sequence);
            if newer {
                remembered.insert(key, (sequence, hash));
            }
        }
        Ok(())
    }
}
