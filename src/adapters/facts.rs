//! Appending observed vehicle facts to the log in batches, with duplicate message ids dropped, and
//! storing refused MQTT messages as dead letters. One transaction per batch.

use super::sql::{is_unique_violation, Db};
use crate::domain::observation::{VehicleFact, STREAM_TYPE};
use crate::projections::EVENTS_CHANNEL;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgPool, SqliteConnection};
use std::collections::{HashMap, HashSet};

/// A fact about vehicle `vin`, ready to append.
#[derive(Debug, Clone)]
pub struct Observed {
    /// VIN (the stream id).
    pub vin: String,
    /// The fact.
    pub fact: VehicleFact,
}

/// An MQTT message refused as a fact.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Topic it came on.
    pub topic: String,
    /// Its payload (kept as received, up to 64 KiB).
    pub payload: Vec<u8>,
    /// Stable reason: malformed, oversized, unknown_topic, unregistered_vehicle, consent_missing ...
    pub reason: &'static str,
    /// Details for a human.
    pub detail: String,
}

/// What a vehicle may send, from the registry and consent read models.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Lifecycle status.
    pub status: String,
    /// Version of a `telemetry` consent in force (any subject).
    pub telemetry: Option<u32>,
    /// Version of a `location` consent in force (any subject).
    pub location: Option<u32>,
}

/// Registry status and consents in force of `vins` at `at`; unregistered VINs are absent.
pub async fn access(db: &Db, vins: &[String], at: DateTime<Utc>) -> Result<HashMap<String, Access>, sqlx::Error> {
    let listed = match db {
        Db::Postgres(_) => "v.vin IN (SELECT jsonb_array_elements_text($1))",
        Db::Sqlite(_) => "v.vin IN (SELECT value FROM json_each($1))",
    };
    let sql = format!(
        "SELECT v.vin, v.status, \
           (SELECT max(c.version) FROM rm_consents c WHERE c.vin = v.vin AND c.purpose = 'telemetry' \
              AND c.status = 'granted' AND (c.expires_at IS NULL OR c.expires_at > $2)) AS telemetry, \
           (SELECT max(c.version) FROM rm_consents c WHERE c.vin = v.vin AND c.purpose = 'location' \
              AND c.status = 'granted' AND (c.expires_at IS NULL OR c.expires_at > $2)) AS location \
         FROM rm_vehicles v WHERE {listed}"
    );
    let vins = json!(vins);
    let rows: Vec<(String, String, Option<i64>, Option<i64>)> =
        crate::on_db!(db, |p| sqlx::query_as(&sql).bind(&vins).bind(at).fetch_all(p).await)?;
    let version = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    Ok(rows
        .into_iter()
        .map(|(vin, status, telemetry, location)| {
            (vin, Access { status, telemetry: version(telemetry), location: version(location) })
        })
        .collect())
}

/// Appends `facts` (minus message ids already stored) and `dead` in one transaction; returns how
/// many facts were appended. Retries when another instance appended to the same stream meanwhile.
pub async fn store(db: &Db, facts: &[Observed], dead: &[DeadLetter]) -> Result<usize, sqlx::Error> {
    let mut attempt = 0;
    loop {
        let stored = match db {
            Db::Postgres(pool) => store_once(pool, facts, dead).await,
            Db::Sqlite(embedded) => {
                let mut tx = embedded.begin().await?;
                let stored = store_sqlite(&mut tx, facts, dead).await?;
                tx.commit().await?;
                if stored > 0 {
                    db.signal(EVENTS_CHANNEL, String::new());
                }
                Ok(stored)
            }
        };
        match stored {
            Err(e) if attempt < 5 && is_unique_violation(&e) => attempt += 1,
            other => return other,
        }
    }
}

/// `facts` without the repeats of a message id inside the batch.
fn candidates(facts: &[Observed]) -> Vec<&Observed> {
    let mut in_batch = HashSet::new();
    facts.iter().filter(|o| o.fact.msg_id().is_none_or(|id| in_batch.insert((o.vin.clone(), id.to_owned())))).collect()
}

fn metadata(observed: &Observed) -> Value {
    json!({ "actor": format!("vehicle:{}", observed.vin), "source": "mqtt" })
}

/// The same as [`store_once`] on SQLite, row by row in one `BEGIN IMMEDIATE` transaction.
async fn store_sqlite(c: &mut SqliteConnection, facts: &[Observed], dead: &[DeadLetter]) -> Result<usize, sqlx::Error> {
    let mut next: HashMap<String, i64> = HashMap::new();
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
    Ok(kept)
}

async fn store_once(pool: &PgPool, facts: &[Observed], dead: &[DeadLetter]) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
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

    if !kept.is_empty() {
        let vins: Vec<String> = kept.iter().map(|o| o.vin.clone()).collect::<HashSet<_>>().into_iter().collect();
        // One backward index probe per stream: the streams grow without bound.
        let mut next: HashMap<String, i64> = sqlx::query_as(
            "SELECT v, coalesce((SELECT sequence FROM events WHERE aggregate_type = $1 AND aggregate_id = v \
             ORDER BY sequence DESC LIMIT 1), 0) FROM UNNEST($2::text[]) AS v",
        )
        .bind(STREAM_TYPE)
        .bind(&vins)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let (mut ids, mut sequences, mut types, mut payloads, mut metadata) = (vec![], vec![], vec![], vec![], vec![]);
        for observed in &kept {
            let sequence = next.entry(observed.vin.clone()).or_insert(0);
            *sequence += 1;
            ids.push(observed.vin.clone());
            sequences.push(*sequence);
            types.push(observed.fact.event_type().to_owned());
            payloads.push(serde_json::to_value(&observed.fact).unwrap_or(Value::Null));
            metadata.push(self::metadata(observed));
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
    tx.commit().await?;
    Ok(kept.len())
}
