//! The event log: the one source of truth every read model, process and audit reads.
//!
//! Aggregates append through cqrs-es ([`super::aggregates`]), vehicle facts in batches
//! ([`super::facts`]), broadcasts with [`append`]. Readers follow it in commit order from a
//! [`Checkpoint`] ([`read_after`]); woken on [`EVENTS_CHANNEL`] after each append.
//!
//! **PostgreSQL.** `global_position` is handed out when a row is inserted, not when its transaction
//! commits, so a reader that followed positions alone could pass a position whose transaction
//! commits later and never see it. Readers therefore order by `(tx_id, global_position)` and only
//! read rows whose transaction is older than every running writer of the log (the writers'
//! horizon, [`super::postgres::log`]): every writer that commits after that has a higher `tx_id`,
//! so it sorts after the checkpoint. Transactions that do not write the log (another application,
//! an idle `psql`, in any database of the server) hold no reader back.
//!
//! **SQLite.** One writer at a time: a position is handed out inside the write transaction that
//! commits before the next writer starts, so position order is commit order and `tx_id` is 0.

use super::{postgres, sqlite, Conn, Sql};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The channel woken after events were appended.
pub const EVENTS_CHANNEL: &str = "tacho_events";

/// A place in the log's commit order. Ordered by transaction id, then position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    /// Transaction id of the event (`xid8` as bigint).
    pub tx_id: i64,
    /// Global position of the event.
    pub position: i64,
}

/// One row of the log as its readers see it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Global position (PostgreSQL: bigserial, unique, gaps possible, not commit order on its own;
    /// SQLite: commit order).
    pub position: i64,
    /// Id of the transaction that wrote it: with `position`, the commit order.
    pub tx_id: i64,
    /// Aggregate type (stable name).
    pub aggregate_type: String,
    /// Stream id.
    pub aggregate_id: String,
    /// Sequence in the stream, from 1.
    pub sequence: i64,
    /// Event type (stable name).
    pub event_type: String,
    /// Payload schema version.
    pub event_version: String,
    /// Payload as serialized by cqrs-es (`{"EventType": {...}}`).
    pub payload: Value,
    /// Metadata: actor, request id ...
    pub metadata: Value,
    /// When the database recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Set when the stored payload or metadata is not JSON tacho can read (nested too deep,
    /// malformed); `payload` and `metadata` are then null. Readers pass over such a row instead of
    /// stopping on it; the seals and audit still see it as stored.
    pub unreadable: Option<Unreadable>,
}

/// A row whose payload or metadata does not parse, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Why it does not parse.
    pub reason: String,
    /// The stored payload text.
    pub payload: String,
    /// The stored metadata text.
    pub metadata: String,
}

/// A row of the log as read: payload and metadata as their stored text, parsed in Rust so one row
/// that does not parse never fails a whole read.
#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    global_position: i64,
    tx_id: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    recorded_at: DateTime<Utc>,
}

impl From<EventRow> for StoredEvent {
    fn from(row: EventRow) -> Self {
        let parsed = serde_json::from_str::<Value>(&row.payload)
            .map_err(|e| format!("payload: {e}"))
            .and_then(|p| Ok((p, serde_json::from_str::<Value>(&row.metadata).map_err(|e| format!("metadata: {e}"))?)));
        let (payload, metadata, unreadable) = match parsed {
            Ok((payload, metadata)) => (payload, metadata, None),
            Err(reason) => {
                let unreadable = Unreadable { reason, payload: row.payload, metadata: row.metadata };
                (Value::Null, Value::Null, Some(unreadable))
            }
        };
        Self {
            position: row.global_position,
            tx_id: row.tx_id,
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            sequence: row.sequence,
            event_type: row.event_type,
            event_version: row.event_version,
            payload,
            metadata,
            recorded_at: row.recorded_at,
            unreadable,
        }
    }
}

/// An event in the log whose payload does not decode into its aggregate's events.
#[derive(Debug, thiserror::Error)]
#[error("undecodable event {aggregate_type} {aggregate_id}#{sequence} ({event_type}) at position {position}: {reason}")]
pub struct Undecodable {
    /// Its stream's aggregate type.
    pub aggregate_type: String,
    /// Its stream id.
    pub aggregate_id: String,
    /// Its sequence.
    pub sequence: i64,
    /// Its position in the log.
    pub position: i64,
    /// Its event type.
    pub event_type: String,
    /// What the decoder said.
    pub reason: String,
}

impl StoredEvent {
    /// Where this event sits in commit order.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { tx_id: self.tx_id, position: self.position }
    }

    /// Deserializes the payload, upcast to the current version, into an aggregate's event enum.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, Undecodable> {
        if let Some(unreadable) = &self.unreadable {
            return Err(self.undecodable(&unreadable.reason));
        }
        let upcast = crate::domain::upcast(&self.event_type, &self.event_version, &self.payload, &self.metadata);
        E::deserialize(upcast.as_ref().unwrap_or(&self.payload)).map_err(|e| self.undecodable(e))
    }

    /// This event, refused by a decoder for `reason`.
    pub fn undecodable(&self, reason: impl std::fmt::Display) -> Undecodable {
        Undecodable {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            position: self.position,
            event_type: self.event_type.clone(),
            reason: reason.to_string(),
        }
    }
}

/// A batch read from the log.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events after the checkpoint, in commit order.
    pub events: Vec<StoredEvent>,
    /// The last event of any type readable in the same snapshot: when `events` is not full, a
    /// reader may move its checkpoint there, so it never rescans events of types it skips.
    pub frontier: Option<Checkpoint>,
    /// Writers of the log were running when it was read (PostgreSQL): events they commit may soon be
    /// readable without a notification of their own (a writer that appended nothing notifies no one).
    pub held_back: bool,
}

impl Batch {
    /// Where a batch read after `from` with `limit` leaves a reader's checkpoint: its last event, or
    /// the snapshot's frontier when the batch was not full (nothing of interest lies before it).
    pub fn next_checkpoint(&self, from: Checkpoint, limit: i64) -> Checkpoint {
        let last = self.events.last().map(StoredEvent::checkpoint).unwrap_or(from);
        match self.frontier {
            Some(frontier) if (self.events.len() as i64) < limit => last.max(frontier),
            _ => last,
        }
    }
}

/// The first log position recorded at or after `at`; past the log's end when none was. Found by
/// bisection on the position index (no index on the time), then among the 1,000 positions before:
/// times follow positions only roughly (on PostgreSQL an event's time is its transaction's start),
/// so an event a moment older may be taken, and one recorded later by a long transaction is
/// found when it lies within those 1,000.
pub async fn first_position_at(conn: &mut Conn<'_>, at: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    let bounds = "SELECT min(global_position), max(global_position) FROM events";
    let (low, high): (Option<i64>, Option<i64>) = Sql::new(bounds).fetch_one(&mut *conn).await?;
    let (Some(mut low), Some(mut high)) = (low, high) else { return Ok(1) };
    let probe = "SELECT global_position, recorded_at FROM events WHERE global_position >= $1 \
         ORDER BY global_position LIMIT 1";
    let last: Option<(i64, DateTime<Utc>)> = Sql::new(probe).bind(high).fetch_optional(&mut *conn).await?;
    if last.is_none_or(|(_, recorded)| recorded < at) {
        return Ok(high.saturating_add(1));
    }
    // Invariant: the first event at or after `high` was recorded at or after `at`; every event
    // before `low` earlier.
    while low < high {
        let middle = low + (high - low) / 2;
        let row: Option<(i64, DateTime<Utc>)> = Sql::new(probe).bind(middle).fetch_optional(&mut *conn).await?;
        match row {
            Some((_, recorded)) if recorded >= at => high = middle,
            Some((position, _)) => low = position + 1,
            None => break,
        }
    }
    let before = "SELECT global_position, recorded_at FROM events WHERE global_position >= $1 \
         AND global_position < $2 ORDER BY global_position";
    let rows: Vec<(i64, DateTime<Utc>)> =
        Sql::new(before).bind(high.saturating_sub(1000)).bind(high).fetch_all(&mut *conn).await?;
    if let Some((position, _)) = rows.iter().find(|(_, recorded)| *recorded >= at) {
        high = *position;
    }
    Ok(high)
}

/// Reads up to `limit` events after `after` in commit order, only of `aggregate_types` when given.
pub async fn read_after(
    conn: &mut Conn<'_>,
    after: Checkpoint,
    aggregate_types: Option<&[&str]>,
    limit: i64,
) -> Result<Batch, sqlx::Error> {
    let types: Option<Vec<String>> = aggregate_types.map(|t| t.iter().map(|s| (*s).to_owned()).collect());
    let (rows, held_back) = match conn {
        Conn::Postgres(c) => postgres::log::read_after(c, after, types, limit).await?,
        Conn::Sqlite(c) => (sqlite::log::read_after(c, after, types, limit).await?, false),
    };
    Ok(Batch { held_back, ..batch(rows) })
}

/// What [`read_after_picking`] read.
pub struct Picked {
    /// The events of the types asked for, in commit order.
    pub events: Vec<StoredEvent>,
    /// How many events of any type were read.
    pub read: u64,
    /// Where the reader's checkpoint goes (see [`Batch::next_checkpoint`]).
    pub next: Checkpoint,
}

/// Reads up to `limit` events of any type after `after` and keeps those of `aggregate_types`,
/// decoding only them: for a reader going through the whole log once (a rebuild), where a read
/// filtered by type in the database would walk the commit-order index past every other event for
/// each batch.
pub async fn read_after_picking(
    conn: &mut Conn<'_>,
    after: Checkpoint,
    aggregate_types: &[&str],
    limit: i64,
) -> Result<Picked, sqlx::Error> {
    let (rows, _) = match conn {
        Conn::Postgres(c) => postgres::log::read_after(c, after, None, limit).await?,
        Conn::Sqlite(c) => (sqlite::log::read_after(c, after, None, limit).await?, false),
    };
    let (mut read, mut last, mut frontier) = (0, after, None);
    let mut events = Vec::new();
    for row in rows {
        if let (None, Some(tx_id), Some(position)) = (frontier, row.f_tx, row.f_pos) {
            frontier = Some(Checkpoint { tx_id, position });
        }
        let (Some(tx_id), Some(position)) = (row.tx_id, row.global_position) else { continue };
        (read, last) = (read + 1, Checkpoint { tx_id, position });
        if row.aggregate_type.as_deref().is_some_and(|t| aggregate_types.contains(&t)) {
            events.extend(row.event());
        }
    }
    let next = match frontier {
        Some(frontier) if (read as i64) < limit => last.max(frontier),
        _ => last,
    };
    Ok(Picked { events, read, next })
}

/// A batch row: an event (all `None` when the batch is empty) and the frontier.
#[derive(sqlx::FromRow)]
pub(super) struct BatchRow {
    global_position: Option<i64>,
    tx_id: Option<i64>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    sequence: Option<i64>,
    event_type: Option<String>,
    event_version: Option<String>,
    payload: Option<String>,
    metadata: Option<String>,
    recorded_at: Option<chrono::DateTime<chrono::Utc>>,
    f_tx: Option<i64>,
    f_pos: Option<i64>,
}

impl BatchRow {
    fn event(self) -> Option<StoredEvent> {
        Some(StoredEvent::from(EventRow {
            global_position: self.global_position?,
            tx_id: self.tx_id?,
            aggregate_type: self.aggregate_type?,
            aggregate_id: self.aggregate_id?,
            sequence: self.sequence?,
            event_type: self.event_type?,
            event_version: self.event_version?,
            payload: self.payload?,
            metadata: self.metadata?,
            recorded_at: self.recorded_at?,
        }))
    }
}

fn batch(rows: Vec<BatchRow>) -> Batch {
    let mut batch = Batch::default();
    for row in rows {
        if let (None, Some(tx_id), Some(position)) = (batch.frontier, row.f_tx, row.f_pos) {
            batch.frontier = Some(Checkpoint { tx_id, position });
        }
        batch.events.extend(row.event());
    }
    batch
}

/// Every event of one stream, in sequence order.
pub async fn read_stream(
    conn: &mut Conn<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("{} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence", select_events(conn));
    let rows: Vec<EventRow> = Sql::new(&sql).bind(aggregate_type).bind(aggregate_id).fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// The events of `streams` (type, id), each stream's in order, in one statement.
pub async fn read_streams(conn: &mut Conn<'_>, streams: &[(&str, &str)]) -> Result<Vec<StoredEvent>, sqlx::Error> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    // One index scan per stream, whatever the planner thinks of the table's size.
    let select = select_events(conn);
    let sql = (0..streams.len())
        .map(|n| {
            format!(
                "SELECT * FROM ({select} WHERE aggregate_type = ${} AND aggregate_id = ${}) s{n}",
                2 * n + 1,
                2 * n + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut query = Sql::new(&sql);
    for (aggregate_type, aggregate_id) in streams {
        query = query.bind(*aggregate_type).bind(*aggregate_id);
    }
    let rows: Vec<EventRow> = query.fetch_all(&mut *conn).await?;
    let mut events: Vec<StoredEvent> = rows.into_iter().map(StoredEvent::from).collect();
    events.sort_by(|a, b| {
        (&a.aggregate_type, &a.aggregate_id, a.sequence).cmp(&(&b.aggregate_type, &b.aggregate_id, b.sequence))
    });
    Ok(events)
}

/// Where the last event of a stream sits in commit order (what a reader must pass to have seen it).
pub async fn stream_head(
    conn: &mut Conn<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
        place(conn)
    );
    let row: Option<(i64, i64)> =
        Sql::new(&sql).bind(aggregate_type).bind(aggregate_id).fetch_optional(&mut *conn).await?;
    Ok(row.map(|(tx_id, position)| Checkpoint { tx_id, position }))
}

/// The commit-order place of the event at `position`, if it exists.
pub async fn checkpoint_of(conn: &mut Conn<'_>, position: i64) -> Result<Option<Checkpoint>, sqlx::Error> {
    let sql = format!("SELECT {} FROM events WHERE global_position = $1", place(conn));
    let row: Option<(i64, i64)> = Sql::new(&sql).bind(position).fetch_optional(&mut *conn).await?;
    Ok(row.map(|(tx_id, position)| Checkpoint { tx_id, position }))
}

/// The expression of an event's transaction id in `conn`'s dialect.
fn tx_id(conn: &Conn<'_>) -> &'static str {
    match conn {
        Conn::Postgres(_) => postgres::log::TX_ID,
        Conn::Sqlite(_) => sqlite::log::TX_ID,
    }
}

/// The columns of an [`EventRow`], with `tx_id` its transaction id's expression and `as_text` the
/// cast that reads a JSON column as its stored text.
pub(super) fn columns(tx_id: &str, as_text: &str) -> String {
    format!(
        "global_position, {tx_id} AS tx_id, aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload{as_text} AS payload, metadata{as_text} AS metadata, recorded_at"
    )
}

/// The columns of an event's place in commit order: `tx_id, global_position`.
fn place(conn: &Conn<'_>) -> String {
    format!("{}, global_position", tx_id(conn))
}

/// `SELECT <the event columns> FROM events` for `conn`'s dialect (add a `WHERE`); read the rows as
/// [`EventRow`]s.
pub(super) fn select_events(conn: &Conn<'_>) -> String {
    let as_text = match conn {
        Conn::Postgres(_) => postgres::log::AS_TEXT,
        Conn::Sqlite(_) => sqlite::log::AS_TEXT,
    };
    format!("SELECT {} FROM events", columns(tx_id(conn), as_text))
}

/// Appends one event to a stream tacho writes without an aggregate (broadcasts); fails with a
/// unique violation when `sequence` is taken. Returns its position.
pub async fn append(
    conn: &mut Conn<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    payload: &Value,
    metadata: &Value,
) -> Result<i64, sqlx::Error> {
    let event = NewEvent { aggregate_type, aggregate_id, sequence, event_type, event_version: "1", payload, metadata };
    Ok(append_event(conn, &event).await?.position)
}

/// Appends `event`; fails with a unique violation when its sequence is taken. Returns its place.
pub(super) async fn append_event(conn: &mut Conn<'_>, event: &NewEvent<'_>) -> Result<Checkpoint, sqlx::Error> {
    match conn {
        Conn::Postgres(c) => postgres::log::append(c, event).await,
        Conn::Sqlite(c) => sqlite::log::append(c, event).await,
    }
}

/// Appends `events` in their order (PostgreSQL: one statement); fails with a unique violation when
/// a sequence is taken. Returns the place of the last, `None` when there are none.
pub(super) async fn append_events(
    conn: &mut Conn<'_>,
    events: &[NewEvent<'_>],
) -> Result<Option<Checkpoint>, sqlx::Error> {
    match (conn, events) {
        (_, []) => Ok(None),
        (conn, [event]) => append_event(conn, event).await.map(Some),
        (Conn::Postgres(c), events) => postgres::log::append_all(c, events).await.map(Some),
        (Conn::Sqlite(c), events) => {
            let mut last = None;
            for event in events {
                last = Some(sqlite::log::append(c, event).await?);
            }
            Ok(last)
        }
    }
}

/// An event to append.
pub(super) struct NewEvent<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    pub metadata: &'a Value,
}

/// Whether the log holds any event.
pub async fn has_events(conn: &mut Conn<'_>) -> Result<bool, sqlx::Error> {
    Sql::new("SELECT EXISTS (SELECT 1 FROM events)").scalar(&mut *conn).await
}
