//! Vehicle facts and dead letters on PostgreSQL: one transaction per batch, set-based.

use crate::domain::observation::STREAM_TYPE;
use crate::store::facts::{self, candidates, known_heads, DeadLetter, Observed};
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};

/// Appends `facts` (minus message ids already stored) and `dead` inside the caller's transaction,
/// set-based (`UNNEST`), after the `known` last sequences of their streams (the others are read);
/// how many facts were appended, and the last sequence of each stream appended to.
pub async fn store(
    tx: &mut PgConnection,
    facts: &[&Observed],
    dead: &[DeadLetter],
    known: &HashMap<String, i64>,
) -> Result<(usize, HashMap<String, i64>), sqlx::Error> {
    // Duplicates inside the batch first, then against what is stored.
    let candidates = candidates(facts);
    let (seen_vins, seen_ids): (Vec<String>, Vec<String>) =
        candidates.iter().filter_map(|o| o.fact.msg_id().map(|id| (o.vin.clone(), id.to_owned()))).unzip();
    let fresh: HashSet<(String, String)> = if seen_ids.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_as(
            "INSERT INTO inbound_seen (vin, msg_id) SELECT * FROM UNNEST($1::text[], $2::text[]) \
             ON CONFLICT DO NOTHING RETURNING vin, msg_id",
        )
        .bind(&seen_vins)
        .bind(&seen_ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect()
    };
    let kept: Vec<&Observed> = candidates
        .into_iter()
        .filter(|o| o.fact.msg_id().is_none_or(|id| fresh.contains(&(o.vin.clone(), id.to_owned()))))
        .collect();

    let mut next = known_heads(&kept, known);
    if !kept.is_empty() {
        let vins: Vec<String> = kept
            .iter()
            .filter(|o| !next.contains_key(&o.vin))
            .map(|o| o.vin.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // One backward index probe per stream not known: the streams grow without bound.
        let read: Vec<(String, i64)> = if vins.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT v, coalesce((SELECT sequence FROM events WHERE aggregate_type = $1 AND aggregate_id = v \
             ORDER BY sequence DESC LIMIT 1), 0) FROM UNNEST($2::text[]) AS v",
            )
            .bind(STREAM_TYPE)
            .bind(&vins)
            .fetch_all(&mut *tx)
            .await?
        };
        next.extend(read);
        let (mut ids, mut sequences, mut types, mut payloads, mut metadata) = (vec![], vec![], vec![], vec![], vec![]);
        for observed in &kept {
            let sequence = next.entry(observed.vin.clone()).or_insert(0);
            *sequence += 1;
            ids.push(observed.vin.clone());
            sequences.push(*sequence);
            types.push(observed.fact.event_type().to_owned());
            payloads.push(serde_json::to_value(&observed.fact).unwrap_or(Value::Null));
            metadata.push(facts::metadata(observed));
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT $1, a, s, t, '1', p::json, m::json \
             FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::jsonb[], $6::jsonb[]) WITH ORDINALITY AS x(a, s, t, p, m, n) \
             ORDER BY n",
        )
        .bind(STREAM_TYPE)
        .bind(&ids)
        .bind(&sequences)
        .bind(&types)
        .bind(&payloads)
        .bind(&metadata)
        .execute(&mut *tx)
        .await?;
    }

    if !dead.is_empty() {
        let topics: Vec<&str> = dead.iter().map(|d| d.topic.as_str()).collect();
        let payloads: Vec<&[u8]> = dead.iter().map(|d| d.payload.as_slice()).collect();
        let reasons: Vec<&str> = dead.iter().map(|d| d.reason).collect();
        let details: Vec<&str> = dead.iter().map(|d| d.detail.as_str()).collect();
        sqlx::query(
            "INSERT INTO dead_letters (topic, payload, reason, detail) \
             SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::text[])",
        )
        .bind(&topics)
        .bind(&payloads)
        .bind(&reasons)
        .bind(&details)
        .execute(&mut *tx)
        .await?;
    }
    Ok((kept.len(), next))
}
