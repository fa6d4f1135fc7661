//! Tamper evidence (`event_seals`): every event, once committed, gets a SHA-256 hash chained to the
//! previous event of its stream, and a running hash chained over all seals in the order they were
//! made (commit order). Here: the hashing, the check of a stream against its seals, and the table;
//! [`crate::projections::seals`] writes the seals, [`crate::audit`] recomputes them.

use super::log::StoredEvent;
use super::{Conn, Db, Sql};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The hash of a stream before its first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `value` as JSON with object keys sorted, at every depth: the same bytes however the store or the
/// serializer ordered them.
pub fn canonical(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing JSON into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                write_canonical(&map[key.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// The hash of `event` chained to `previous`, the hash of the event before it in its stream: over its
/// stream, id, sequence, type, payload version, canonical payload and metadata, and recorded time.
pub fn stream_hash(previous: &str, event: &StoredEvent) -> String {
    let mut out = Vec::with_capacity(512);
    for part in [previous, &event.aggregate_type, &event.aggregate_id] {
        out.extend_from_slice(part.as_bytes());
        out.push(0x1f);
    }
    out.extend_from_slice(event.sequence.to_string().as_bytes());
    out.push(0x1f);
    for part in [&event.event_type, &event.event_version] {
        out.extend_from_slice(part.as_bytes());
        out.push(0x1f);
    }
    match &event.unreadable {
        None => {
            write_canonical(&event.payload, &mut out);
            out.push(0x1f);
            write_canonical(&event.metadata, &mut out);
            out.push(0x1f);
        }
        // As stored (it cannot be put in canonical form), marked so it never hashes like JSON.
        Some(raw) => {
            for text in [&raw.payload, &raw.metadata] {
                out.push(0x1e);
                out.extend_from_slice(text.as_bytes());
                out.push(0x1f);
            }
        }
    }
    // Microseconds, as both stores keep at least that (SQLite: milliseconds).
    out.extend_from_slice(event.recorded_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string().as_bytes());
    out.push(0x1f);
    hex::encode(Sha256::digest(&out))
}

/// The running hash after the seal of the event at `position` with `stream_hash`.
pub fn chain_hash(previous: &str, position: i64, stream_hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(position.to_be_bytes());
    hasher.update(stream_hash.as_bytes());
    hex::encode(hasher.finalize())
}

/// The seal of one event, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Seal {
    /// Sequence in the stream.
    pub sequence: i64,
    /// Where the event was when sealed.
    pub global_position: i64,
    /// Its hash, chained to the previous event of the stream.
    pub stream_hash: String,
}

/// The first event of a stream that does not match its seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Its sequence.
    pub sequence: i64,
    /// Its position (where it was sealed, when it is gone).
    pub position: i64,
    /// What is wrong, for a human.
    pub problem: String,
}

/// Checks `events` (one stream, in sequence order) against their `seals` (in sequence order):
/// the number of events sealed, or the first one that is missing, moved or changed. Each event is
/// checked against the stored hash of its predecessor, so one edit names one event.
pub fn check_stream(events: &[StoredEvent], seals: &[Seal]) -> Result<u64, Broken> {
    let by_sequence: HashMap<i64, &StoredEvent> = events.iter().map(|e| (e.sequence, e)).collect();
    let mut previous = GENESIS;
    for (i, seal) in seals.iter().enumerate() {
        let expected = i as i64 + 1;
        if seal.sequence != expected {
            let position = by_sequence.get(&expected).map_or(seal.global_position, |e| e.position);
            return Err(Broken {
                sequence: expected,
                position,
                problem: format!("the seal of event #{expected} is missing: deleted"),
            });
        }
        let broken = |position, problem: String| Broken { sequence: seal.sequence, position, problem };
        let Some(event) = by_sequence.get(&seal.sequence) else {
            return Err(broken(
                seal.global_position,
                format!("event #{} (sealed at position {}) is missing: deleted", seal.sequence, seal.global_position),
            ));
        };
        if event.position != seal.global_position {
            return Err(broken(
                event.position,
                format!(
                    "event #{} is the event at position {}, but the one sealed as #{} was at position {}: reordered or replaced",
                    seal.sequence, event.position, seal.sequence, seal.global_position
                ),
            ));
        }
        if stream_hash(previous, event) != seal.stream_hash {
            return Err(broken(
                event.position,
                format!(
                    "event #{} at position {} does not match its seal: its payload, metadata or type was changed",
                    seal.sequence, event.position
                ),
            ));
        }
        previous = &seal.stream_hash;
    }
    Ok(seals.len() as u64)
}

/// The last seal made: its number and the chain hash after it (`None` before the first).
pub async fn last(conn: &mut Conn<'_>) -> Result<Option<(i64, String)>, sqlx::Error> {
    let sql = "SELECT seal_no, chain_hash FROM event_seals ORDER BY seal_no DESC LIMIT 1";
    Sql::new(sql).fetch_optional(&mut *conn).await
}

/// The stream hash of the last sealed event of a stream (`None` before its first).
pub async fn stream_head(
    conn: &mut Conn<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = "SELECT stream_hash FROM event_seals WHERE aggregate_type = $1 AND aggregate_id = $2 \
               ORDER BY sequence DESC LIMIT 1";
    Sql::new(sql).bind(aggregate_type).bind(aggregate_id).scalar_optional(&mut *conn).await
}

/// The stream hashes of the last sealed events of streams `keys` (type, id); streams without a seal
/// are absent. One statement on PostgreSQL.
pub async fn stream_heads(
    conn: &mut Conn<'_>,
    keys: &[(String, String)],
) -> Result<std::collections::HashMap<(String, String), String>, sqlx::Error> {
    let mut heads = std::collections::HashMap::new();
    match conn {
        Conn::Postgres(c) => {
            let (types, ids): (Vec<&str>, Vec<&str>) = keys.iter().map(|(t, i)| (t.as_str(), i.as_str())).unzip();
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT k.t, k.i, h.stream_hash FROM unnest($1::text[], $2::text[]) AS k(t, i) \
                 CROSS JOIN LATERAL (SELECT stream_hash FROM event_seals \
                   WHERE aggregate_type = k.t AND aggregate_id = k.i ORDER BY sequence DESC LIMIT 1) h",
            )
            .bind(&types)
            .bind(&ids)
            .fetch_all(&mut **c)
            .await?;
            heads.extend(rows.into_iter().map(|(t, i, hash)| ((t, i), hash)));
        }
        Conn::Sqlite(_) => {
            for (t, i) in keys {
                if let Some(hash) = stream_head(conn, t, i).await? {
                    heads.insert((t.clone(), i.clone()), hash);
                }
            }
        }
    }
    Ok(heads)
}

/// A seal to store: its number, the event it seals, its stream and chain hashes.
pub struct NewSeal<'e> {
    /// Seal number.
    pub seal_no: i64,
    /// The event.
    pub event: &'e StoredEvent,
    /// Stream hash.
    pub stream_hash: String,
    /// Chain hash.
    pub chain_hash: String,
}

/// Stores `seals`: one statement on PostgreSQL.
pub async fn insert_many(conn: &mut Conn<'_>, seals: &[NewSeal<'_>]) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Postgres(c) => {
            let column = |f: &dyn Fn(&NewSeal) -> String| seals.iter().map(f).collect::<Vec<String>>();
            let numbers: Vec<i64> = seals.iter().map(|s| s.seal_no).collect();
            let positions: Vec<i64> = seals.iter().map(|s| s.event.position).collect();
            let sequences: Vec<i64> = seals.iter().map(|s| s.event.sequence).collect();
            sqlx::query(
                "INSERT INTO event_seals (seal_no, global_position, aggregate_type, aggregate_id, sequence, \
                   stream_hash, chain_hash) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[])",
            )
            .bind(&numbers)
            .bind(&positions)
            .bind(column(&|s| s.event.aggregate_type.clone()))
            .bind(column(&|s| s.event.aggregate_id.clone()))
            .bind(&sequences)
            .bind(column(&|s| s.stream_hash.clone()))
            .bind(column(&|s| s.chain_hash.clone()))
            .execute(&mut **c)
            .await?;
        }
        Conn::Sqlite(_) => {
            for seal in seals {
                insert(conn, seal.seal_no, seal.event, &seal.stream_hash, &seal.chain_hash).await?;
            }
        }
    }
    Ok(())
}

/// Stores seal `seal_no` of `event`.
pub async fn insert(
    conn: &mut Conn<'_>,
    seal_no: i64,
    event: &StoredEvent,
    stream_hash: &str,
    chain_hash: &str,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO event_seals (seal_no, global_position, aggregate_type, aggregate_id, sequence, \
               stream_hash, chain_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    Sql::new(sql)
        .bind(seal_no)
        .bind(event.position)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(stream_hash)
        .bind(chain_hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every seal in the order made: number, position, stream hash, chain hash.
pub async fn chain(conn: &mut Conn<'_>) -> Result<Vec<(i64, i64, String, String)>, sqlx::Error> {
    let sql = "SELECT seal_no, global_position, stream_hash, chain_hash FROM event_seals ORDER BY seal_no";
    Sql::new(sql).fetch_all(&mut *conn).await
}

/// Which seals to read.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// One stream's: aggregate type and id.
    Stream(&'a str, &'a str),
    /// Those of the events at positions `first..=last`.
    Positions(i64, i64),
}

/// Position → stream hash of the seals `which` names.
pub async fn hashes(conn: &mut Conn<'_>, which: Which<'_>) -> Result<HashMap<i64, String>, sqlx::Error> {
    let select = "SELECT global_position, stream_hash FROM event_seals WHERE";
    let rows: Vec<(i64, String)> = match which {
        Which::Stream(kind, id) => {
            let sql = format!("{select} aggregate_type = $1 AND aggregate_id = $2");
            Sql::new(&sql).bind(kind).bind(id).fetch_all(conn).await?
        }
        Which::Positions(first, last) => {
            let sql = format!("{select} global_position BETWEEN $1 AND $2");
            Sql::new(&sql).bind(first).bind(last).fetch_all(conn).await?
        }
    };
    Ok(rows.into_iter().collect())
}

/// The chain hash stored with seal `seal_no`, if there is one.
pub async fn chain_hash_of(db: &Db, seal_no: i64) -> Result<Option<String>, sqlx::Error> {
    Sql::new("SELECT chain_hash FROM event_seals WHERE seal_no = $1").bind(seal_no).scalar_optional(db).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(sequence: i64, payload: Value) -> StoredEvent {
        StoredEvent {
            position: sequence,
            tx_id: 0,
            aggregate_type: "Vehicle".into(),
            aggregate_id: "1HGCM82633A004352".into(),
            sequence,
            event_type: "VehicleActivated".into(),
            event_version: "1".into(),
            payload,
            metadata: json!({"actor": "plant-1"}),
            recorded_at: chrono::Utc::now(),
            unreadable: None,
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":2,"c":1}],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[{"c":1,"d":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":{"x":null,"y":[{"c":1,"d":2}]},"b":1}"#);
    }

    #[test]
    fn a_changed_payload_or_a_different_predecessor_changes_the_hash() {
        let original = stream_hash(GENESIS, &event(1, json!({"VehicleActivated": {"at": "2026-01-01T00:00:00Z"}})));
        let edited = stream_hash(GENESIS, &event(1, json!({"VehicleActivated": {"at": "2026-01-02T00:00:00Z"}})));
        let moved = stream_hash(&original, &event(1, json!({"VehicleActivated": {"at": "2026-01-01T00:00:00Z"}})));
        assert_ne!(original, edited);
        assert_ne!(original, moved);
        assert_eq!(original.len(), 64);
    }

    fn sealed(events: &[StoredEvent]) -> Vec<Seal> {
        let mut previous = GENESIS.to_owned();
        events
            .iter()
            .map(|e| {
                previous = stream_hash(&previous, e);
                Seal { sequence: e.sequence, global_position: e.position, stream_hash: previous.clone() }
            })
            .collect()
    }

    fn stream() -> Vec<StoredEvent> {
        (1..=4).map(|i| event(i, json!({"VehicleActivated": {"at": format!("2026-01-0{i}T00:00:00Z")}}))).collect()
    }

    #[test]
    fn an_untouched_stream_matches_its_seals_and_unsealed_events_are_not_checked() {
        let events = stream();
        assert_eq!(check_stream(&events, &sealed(&events[..3])), Ok(3));
    }

    #[test]
    fn an_edited_payload_is_named() {
        let mut events = stream();
        let seals = sealed(&events);
        events[1].payload = json!({"VehicleActivated": {"at": "2030-01-01T00:00:00Z"}});
        let broken = check_stream(&events, &seals).unwrap_err();
        assert_eq!((broken.sequence, broken.position), (2, 2));
        assert!(broken.problem.contains("does not match its seal"), "{}", broken.problem);
    }

    #[test]
    fn a_deleted_event_is_named() {
        let mut events = stream();
        let seals = sealed(&events);
        events.remove(2);
        let broken = check_stream(&events, &seals).unwrap_err();
        assert_eq!((broken.sequence, broken.position), (3, 3));
        assert!(broken.problem.contains("missing: deleted"), "{}", broken.problem);
    }

    #[test]
    fn a_reordered_event_is_named() {
        let mut events = stream();
        let seals = sealed(&events);
        events[1].sequence = 3;
        events[2].sequence = 2;
        events.swap(1, 2);
        let broken = check_stream(&events, &seals).unwrap_err();
        assert_eq!((broken.sequence, broken.position), (2, 3));
        assert!(broken.problem.contains("reordered"), "{}", broken.problem);
    }

    #[test]
    fn a_deleted_seal_is_named() {
        let events = stream();
        let mut seals = sealed(&events);
        seals.remove(1);
        let broken = check_stream(&events, &seals).unwrap_err();
        assert_eq!((broken.sequence, broken.position), (2, 2));
        assert!(broken.problem.contains("seal of event #2 is missing"), "{}", broken.problem);
    }

    #[test]
    fn the_chain_depends_on_every_seal_before() {
        let one = chain_hash(GENESIS, 1, "a");
        assert_ne!(chain_hash(&one, 2, "b"), chain_hash(&chain_hash(GENESIS, 1, "x"), 2, "b"));
    }
}
