//! Appending observed vehicle facts to the log in batches, with duplicate message ids dropped, and
//! storing refused MQTT messages as dead letters. One transaction per batch.

use super::log::EVENTS_CHANNEL;
use super::{is_unique_violation, links, postgres, sqlite, Conn, Db, Sql};
use crate::domain::observation::{VehicleFact, CONNECTION_CHANGED, STREAM_TYPE};
use crate::domain::streams;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
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

impl DeadLetter {
    /// Longest topic or detail stored, in characters.
    const MAX_TEXT: usize = 1024;

    /// This letter as it can be stored: NUL characters replaced, topic and detail cut to
    /// [`Self::MAX_TEXT`] characters.
    fn storable(&self) -> Self {
        let clean =
            |text: &str| text.chars().take(Self::MAX_TEXT).map(|c| if c == '\0' { '\u{fffd}' } else { c }).collect();
        Self {
            topic: clean(&self.topic),
            payload: self.payload.clone(),
            reason: self.reason,
            detail: clean(&self.detail),
        }
    }
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
    let listed = db.dialect().in_json_list("v.vin", "$1");
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
        Sql::new(&sql).bind(&vins).bind(at).fetch_all(db).await?;
    let version = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    Ok(rows
        .into_iter()
        .map(|(vin, status, telemetry, location)| {
            (vin, Access { status, telemetry: version(telemetry), location: version(location) })
        })
        .collect())
}

/// What [`store`] did with a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Facts appended (connection changes tacho inferred included).
    pub appended: usize,
    /// Connection messages that said nothing new, by reason (`stale`, `repeat`).
    pub ignored: Vec<&'static str>,
    /// The last sequence of each stream appended to (true once the transaction committed).
    pub heads: HashMap<String, i64>,
}

/// The last sequence of the vehicles' fact streams as this instance committed them: a batch reads
/// only the heads of streams it does not know. Written only after a commit, so never ahead of the
/// log; behind it when another writer appended meanwhile, which the append's unique violation
/// shows: the batch then forgets its streams ([`Sequences::forget`]) and decides again.
/// Off where the consumer shares its subscription with other instances: a vehicle's messages then
/// reach them in turns, and a remembered head would be behind at nearly every batch (each costing
/// a rolled-back transaction).
#[derive(Debug, Default)]
pub struct Sequences {
    enabled: bool,
    heads: std::sync::Mutex<HashMap<String, i64>>,
}

/// Streams [`Sequences`] remembers at most; beyond, it forgets them all.
const REMEMBERED_STREAMS: usize = 200_000;

impl Sequences {
    /// Remembering heads when `enabled` (the consumer is the only one of its subscription).
    pub fn new(enabled: bool) -> Self {
        Self { enabled, heads: Default::default() }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.heads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The known last sequences of the streams of `vins`.
    pub fn known<'v>(&self, vins: impl IntoIterator<Item = &'v str>) -> HashMap<String, i64> {
        if !self.enabled {
            return HashMap::new();
        }
        let map = self.map();
        vins.into_iter().filter_map(|vin| map.get(vin).map(|last| (vin.to_owned(), *last))).collect()
    }

    /// Remembers `heads`, committed.
    pub fn remember(&self, heads: HashMap<String, i64>) {
        if !self.enabled {
            return;
        }
        let mut map = self.map();
        if map.len() >= REMEMBERED_STREAMS {
            map.clear();
        }
        map.extend(heads);
    }

    /// Forgets the streams of `vins`: another writer appended to one of them.
    pub fn forget<'v>(&self, vins: impl IntoIterator<Item = &'v str>) {
        let mut map = self.map();
        for vin in vins {
            map.remove(vin);
        }
    }
}

/// Of `vins`, those whose registry or consent streams hold events the registry and consent read
/// models have not applied yet: for them, what [`access`] says may be out of date.
pub async fn read_models_behind(db: &Db, vins: &[String]) -> Result<HashSet<String>, sqlx::Error> {
    let after = match db {
        Db::Postgres(_) => "(e.tx_id, e.global_position) > (coalesce(c.tx_id, 0)::text::xid8, coalesce(c.position, 0))",
        Db::Sqlite(_) => "e.global_position > coalesce(c.position, 0)",
    };
    let sql = format!(
        "SELECT DISTINCT e.aggregate_id FROM events e LEFT JOIN subscription_checkpoints c \
           ON c.name = CASE e.aggregate_type WHEN $2 THEN $3 ELSE $4 END \
         WHERE e.aggregate_type IN ($2, $5) AND {} AND {after}",
        db.dialect().in_json_list("e.aggregate_id", "$1")
    );
    let vins: Vec<String> = Sql::new(&sql)
        .bind(json!(vins))
        .bind(streams::VEHICLE)
        .bind(ACCESS_READ_MODELS.0)
        .bind(ACCESS_READ_MODELS.1)
        .bind(streams::CONSENT)
        .scalars(db)
        .await?;
    Ok(vins.into_iter().collect())
}

/// The read models [`access`] reads: the registry's and the consents' (their subscriber names).
pub const ACCESS_READ_MODELS: (&str, &str) = ("vehicles", "consents");

/// Appends `facts` (minus message ids already stored, with their connection messages decided by
/// [`super::links`]; `heard` are the other messages of vehicles, such as answers, received at the
/// given times) and `dead` in one transaction. Retries when another instance appended to the same
/// stream meanwhile.
pub async fn store(
    db: &Db,
    facts: &[Observed],
    heard: &[(String, DateTime<Utc>)],
    dead: &[DeadLetter],
) -> Result<Stored, sqlx::Error> {
    // A dead letter's text comes from whoever sent it: it must store whatever it holds (PostgreSQL
    // refuses NUL in text), or one refused message would stop the whole consumer.
    let dead = storable(dead);
    let dead = dead.as_slice();
    let mut attempt = 0;
    loop {
        match store_once(db, facts, heard, dead).await {
            Err(e) if attempt < 5 && is_unique_violation(&e) => attempt += 1,
            Ok(stored) => {
                if stored.appended > 0 {
                    db.signal(EVENTS_CHANNEL, String::new());
                }
                return Ok(stored);
            }
            Err(e) => return Err(e),
        }
    }
}

async fn store_once(
    db: &Db,
    facts: &[Observed],
    heard: &[(String, DateTime<Utc>)],
    dead: &[DeadLetter],
) -> Result<Stored, sqlx::Error> {
    let mut tx = db.begin().await?;
    // It writes links and message ids before the events: it must count as a writer of the log
    // before it gets its transaction id (see the writers' horizon in `postgres::log`).
    if let Conn::Postgres(c) = tx.conn() {
        postgres::log::lock_log(c).await?;
    }
    let stored = write(&mut tx.conn(), facts, heard, dead, &HashMap::new()).await?;
    tx.commit().await?;
    Ok(stored)
}

/// What [`store`] writes, inside the caller's transaction, which already is a writer of the log
/// (PostgreSQL: [`postgres::log::lock_log`] before anything else is written). `dead` must be
/// storable; `known`: the last sequences of streams as last committed ([`Sequences`]); a unique
/// violation means another instance appended to the same stream: retry (with those forgotten).
pub(crate) async fn write(
    conn: &mut Conn<'_>,
    facts: &[Observed],
    heard: &[(String, DateTime<Utc>)],
    dead: &[DeadLetter],
    known: &HashMap<String, i64>,
) -> Result<Stored, sqlx::Error> {
    let (admitted, ignored) = links::admit(conn, facts, heard).await?;
    let admitted: Vec<&Observed> = admitted.iter().map(|o| o.as_ref()).collect();
    let (appended, heads) = match conn {
        Conn::Postgres(c) => postgres::facts::store(c, &admitted, dead, known).await?,
        Conn::Sqlite(c) => sqlite::facts::store(c, &admitted, dead, known).await?,
    };
    Ok(Stored { appended, ignored, heads })
}

/// `dead` as it can be stored (see [`DeadLetter`]).
pub(crate) fn storable(dead: &[DeadLetter]) -> Vec<DeadLetter> {
    dead.iter().map(DeadLetter::storable).collect()
}

/// Of the `known` last sequences, those of the streams of `facts`.
pub(super) fn known_heads(facts: &[&Observed], known: &HashMap<String, i64>) -> HashMap<String, i64> {
    facts.iter().filter_map(|o| known.get(&o.vin).map(|last| (o.vin.clone(), *last))).collect()
}

/// `facts` without the repeats of a message id inside the batch.
pub(super) fn candidates<'f>(facts: &[&'f Observed]) -> Vec<&'f Observed> {
    let mut in_batch = HashSet::new();
    facts
        .iter()
        .copied()
        .filter(|o| o.fact.msg_id().is_none_or(|id| in_batch.insert((o.vin.clone(), id.to_owned()))))
        .collect()
}

/// The metadata of a fact's event: the vehicle is its actor.
pub(super) fn metadata(observed: &Observed) -> Value {
    json!({ "actor": format!("vehicle:{}", observed.vin), "source": "mqtt" })
}

/// The vehicles whose last connection change in the log says online.
pub async fn online_in_log(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let sql = "SELECT aggregate_id, payload FROM events e WHERE aggregate_type = $1 AND event_type = $2 \
               AND sequence = (SELECT max(sequence) FROM events l \
               WHERE l.aggregate_type = $1 AND l.aggregate_id = e.aggregate_id AND l.event_type = $2)";
    let last: Vec<(String, Value)> = Sql::new(sql).bind(STREAM_TYPE).bind(CONNECTION_CHANGED).fetch_all(db).await?;
    let online = |payload: &Value| {
        matches!(
            <VehicleFact as serde::Deserialize>::deserialize(payload),
            Ok(VehicleFact::ConnectionChanged { online: true, .. })
        )
    };
    Ok(last.into_iter().filter(|(_, payload)| online(payload)).map(|(vin, _)| vin).collect())
}

/// How many distinct signals the state read model holds for each of `vins` (absent: none).
pub async fn signal_counts(db: &Db, vins: &[String]) -> Result<HashMap<String, i64>, sqlx::Error> {
    let sql = format!(
        "SELECT vin, count(*) FROM rm_vehicle_state WHERE {} GROUP BY vin",
        db.dialect().in_json_list("vin", "$1")
    );
    let rows: Vec<(String, i64)> = Sql::new(&sql).bind(json!(vins)).fetch_all(db).await?;
    Ok(rows.into_iter().collect())
}

/// The names of the signals the state read model holds for `vin`.
pub async fn signal_names(db: &Db, vin: &str) -> Result<HashSet<String>, sqlx::Error> {
    let names: Vec<String> =
        Sql::new("SELECT signal FROM rm_vehicle_state WHERE vin = $1").bind(vin).scalars(db).await?;
    Ok(names.into_iter().collect())
}
