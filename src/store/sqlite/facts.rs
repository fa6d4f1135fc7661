//! Vehicle facts and dead letters on SQLite: row by row, in one write transaction.

use crate::domain::observation::STREAM_TYPE;
use crate::store::facts::{candidates, known_heads, metadata, DeadLetter, Observed};
use chrono::Utc;
use serde_json::Value;
use sqlx::SqliteConnection;
use std::collections::HashMap;

/// Appends `facts` and `dead` row by row inside the caller's `BEGIN IMMEDIATE` transaction, after
/// the `known` last sequences of their streams (the others are read); how many facts were appended,
/// and the last sequence of each stream appended to.
pub async fn store(
    c: &mut SqliteConnection,
    facts: &[&Observed],
    dead: &[DeadLetter],
    known: &HashMap<String, i64>,
) -> Result<(usize, HashMap<String, i64>), sqlx::Error> {
    let mut next = known_heads(facts, known);
    let mut kept = 0;
    for observed in candidates(facts) {
        if let Some(id) = observed.fact.msg_id() {
            let fresh = sqlx::query(
                "INSERT INTO inbound_seen (vin, msg_id, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(&observed.vin)
            .bind(id)
            .bind(Utc::now())
            .execute(&mut *c)
            .await?
            .rows_affected();
            if fresh == 0 {
                continue;
            }
        }
        let sequence = match next.get_mut(&observed.vin) {
            Some(sequence) => sequence,
            None => {
                let last: i64 = sqlx::query_scalar(
                    "SELECT coalesce(max(sequence), 0) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
                )
                .bind(STREAM_TYPE)
                .bind(&observed.vin)
                .fetch_one(&mut *c)
                .await?;
                next.entry(observed.vin.clone()).or_insert(last)
            }
        };
        *sequence += 1;
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ($1, $2, $3, $4, '1', $5, $6)",
        )
        .bind(STREAM_TYPE)
        .bind(&observed.vin)
        .bind(*sequence)
        .bind(observed.fact.event_type())
        .bind(serde_json::to_value(&observed.fact).unwrap_or(Value::Null))
        .bind(metadata(observed))
        .execute(&mut *c)
        .await?;
        kept += 1;
    }
    for letter in dead {
        sqlx::query("INSERT INTO dead_letters (topic, payload, reason, detail) VALUES ($1, $2, $3, $4)")
            .bind(&letter.topic)
            .bind(&letter.payload)
            .bind(letter.reason)
            .bind(&letter.detail)
            .execute(&mut *c)
            .await?;
    }
    Ok((kept, next))
}
