//! The store: the one handle over PostgreSQL or SQLite, and everything tacho keeps in it.
//!
//! - [`log`]: the event log (appends, commit-ordered reads, [`log::StoredEvent`], the events channel);
//!   [`checkpoints`]: where each reader of the log stands, and the locks that keep one reader per name.
//! - [`aggregates`]: the cqrs-es repositories and frameworks the aggregates are loaded and written with.
//! - [`seal`]: the seals' hashing (canonical JSON, stream and chain hashes) and their table.
//! - [`facts`]: vehicle facts appended in batches, dead letters; [`links`]: what admission knows of
//!   each vehicle's connection; [`idempotency`]: request keys.
//! - [`leases`]: which instance runs each process (fenced, on the database's clock); [`lag`]: how far
//!   each reader is behind the log, and what holds them back.
//! - [`bulk`]: set-based writes of the read models that take thousands of rows per batch.
//! - [`sql`]: [`Sql`], one statement for either store; [`Dialect`]: the fragments they say differently.
//! - [`queries`]: named reads of the read models for the API, returning [`views`]; [`pending`]: what the processes act
//!   on (queued, in-flight and overdue commands) and pruning.
//! - [`audit`]: the reads `audit verify` makes (the log stream by stream, the read models' rows).
//! - [`rebuild`]: fresh copies of read-model tables, swapped in.
//! - [`postgres`] and [`sqlite`]: connecting and migrations, and, in pairs, what the dialects do
//!   differently (the log's commit order, bulk writes, JSON operators, table copies).
//!
//! Most SQL is portable (`$n` placeholders, `ON CONFLICT`, row values, `RETURNING`) and is written
//! once with [`Sql`], which runs it on whichever backend is open. The read models, which sit
//! directly on the store, write their tables with it; nothing above them writes SQL.
//!
//! Times are bound as `DateTime<Utc>`: PostgreSQL keeps `timestamptz`; SQLite keeps RFC 3339 text in
//! UTC, whose fractional part sorts correctly as text, so comparisons work in both.

pub mod aggregates;
pub mod audit;
pub mod bulk;
pub mod checkpoints;
pub mod facts;
pub mod idempotency;
pub mod lag;
pub mod leases;
pub mod links;
pub mod log;
pub mod pending;
pub mod postgres;
pub mod queries;
pub mod rebuild;
pub mod seal;
pub mod sql;
pub mod sqlite;
pub mod views;

pub use aggregates::{EventStores, Frameworks};
pub use sql::Sql;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// An open store: a PostgreSQL pool, or the embedded SQLite file.
#[derive(Clone, Debug)]
pub enum Db {
    /// PostgreSQL (production, several instances).
    Postgres(PgPool),
    /// SQLite (the embedded default, one instance).
    Sqlite(Embedded),
}

/// The embedded SQLite store: its pool, the in-process stand-in for NOTIFY, and the lock that keeps
/// a second tacho off the same file.
#[derive(Clone, Debug)]
pub struct Embedded {
    /// The pool (WAL; writers queue on SQLite's lock).
    pub pool: SqlitePool,
    signals: broadcast::Sender<(&'static str, String)>,
    /// The lock file, held until the store is closed ([`Db::close`]) or its last clone dropped.
    lock: Arc<std::sync::Mutex<Option<std::fs::File>>>,
}

impl Embedded {
    /// Wraps `pool`, holding `lock` (when given) until it is closed or no clone lives.
    pub fn new(pool: SqlitePool, lock: Option<std::fs::File>) -> Self {
        Self { pool, signals: broadcast::channel(4096).0, lock: Arc::new(std::sync::Mutex::new(lock)) }
    }

    /// A write transaction: `BEGIN IMMEDIATE` takes the write lock up front, so a transaction that
    /// reads before it writes never fails to upgrade.
    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

/// The SQL dialect of a store: the fragments portable statements splice in where the two differ
/// (each written in [`postgres::dialect`] and [`sqlite::dialect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// A condition: `column` is one of the strings of the JSON array bound as `param`.
    pub fn in_json_list(self, column: &str, param: &str) -> String {
        match self {
            Self::Postgres => postgres::dialect::in_json_list(column, param),
            Self::Sqlite => sqlite::dialect::in_json_list(column, param),
        }
    }

    /// A table of the entries of the JSON object `column`, as `alias` (columns `key`), and the
    /// expression of an entry's value as JSON: `(FROM item, value expression)`.
    pub fn object_entries(self, column: &str, alias: &str) -> (String, String) {
        match self {
            Self::Postgres => postgres::dialect::object_entries(column, alias),
            Self::Sqlite => sqlite::dialect::object_entries(column, alias),
        }
    }
}

/// A connection of either backend, borrowed from a pool or a transaction.
pub enum Conn<'c> {
    /// PostgreSQL.
    Postgres(&'c mut PgConnection),
    /// SQLite.
    Sqlite(&'c mut SqliteConnection),
}

/// A transaction of either backend; rolled back when dropped uncommitted.
pub enum Tx {
    /// PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
    /// SQLite (`BEGIN IMMEDIATE`: the write lock is taken up front, so no reader-turned-writer fails).
    Sqlite(Transaction<'static, Sqlite>),
}

/// A pooled connection of either backend.
pub enum Pooled {
    /// PostgreSQL.
    Postgres(PoolConnection<Postgres>),
    /// SQLite.
    Sqlite(PoolConnection<Sqlite>),
}

impl Db {
    /// Whether this is the embedded store.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }

    /// A name for messages: `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// The SQL dialect of this store.
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Postgres(_) => Dialect::Postgres,
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Self::Sqlite(embedded) => Tx::Sqlite(embedded.begin().await?),
        })
    }

    /// Takes a connection from the pool.
    pub async fn acquire(&self) -> Result<Pooled, sqlx::Error> {
        Ok(match self {
            Self::Postgres(pool) => Pooled::Postgres(pool.acquire().await?),
            Self::Sqlite(embedded) => Pooled::Sqlite(embedded.pool.acquire().await?),
        })
    }

    /// Tells this instance's listeners of `channel` (SQLite only: with PostgreSQL, triggers and
    /// `pg_notify` in the writing transaction reach every instance).
    pub fn signal(&self, channel: &'static str, payload: String) {
        if let Self::Sqlite(embedded) = self {
            let _ = embedded.signals.send((channel, payload));
        }
    }

    /// Calls `on_payload` with each notification on `channel` until `shutdown`.
    pub async fn listen(&self, channel: &'static str, on_payload: impl Fn(&str), shutdown: CancellationToken) {
        match self {
            Self::Postgres(pool) => postgres::notify::listen(pool.clone(), channel, on_payload, shutdown).await,
            Self::Sqlite(embedded) => {
                let mut signals = embedded.signals.subscribe();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        received = signals.recv() => match received {
                            Ok((name, payload)) if name == channel => on_payload(&payload),
                            Ok(_) => {}
                            // Missed signals are covered by the listeners' own polling.
                            Err(broadcast::error::RecvError::Lagged(_)) => on_payload(""),
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }
            }
        }
    }

    /// Closes the pool (the SQLite file is checkpointed and left consistent).
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(embedded) => {
                // Every connection closed: nothing of this process writes the file any more, so
                // another tacho may take it, even while clones of this store linger.
                embedded.pool.close().await;
                embedded.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            }
        }
    }
}

impl Tx {
    /// The transaction's connection.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Postgres(tx) => Conn::Postgres(tx),
            Self::Sqlite(tx) => Conn::Sqlite(tx),
        }
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(tx) => tx.commit().await,
            Self::Sqlite(tx) => tx.commit().await,
        }
    }
}

impl Conn<'_> {
    /// The SQL dialect of this connection.
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Postgres(_) => Dialect::Postgres,
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Tells every instance's listeners of `channel` each of `payloads` once the transaction this
    /// connection is in commits (PostgreSQL: `pg_notify`). SQLite has one instance: its caller
    /// signals after the commit ([`Db::signal`]).
    pub async fn announce(&mut self, channel: &str, payloads: &[String]) -> Result<(), sqlx::Error> {
        if let Self::Postgres(c) = self {
            if !payloads.is_empty() {
                sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                    .bind(channel)
                    .bind(payloads)
                    .execute(&mut **c)
                    .await?;
            }
        }
        Ok(())
    }
}

impl Pooled {
    /// The connection.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Postgres(c) => Conn::Postgres(c),
            Self::Sqlite(c) => Conn::Sqlite(c),
        }
    }
}

/// Whether `e` may pass by itself (the database restarting, failing over, busy, out of
/// connections): worth retrying, never a verdict on the data.
pub fn is_transient(e: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => true,
        E::Database(d) => d.code().is_some_and(|code| {
            // PostgreSQL SQLSTATE classes: 08 connection, 40 rollback (serialization, deadlock),
            // 53 insufficient resources, 57 operator intervention (shutdown, starting up).
            let postgres = ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) && code.len() == 5;
            // SQLite: BUSY and LOCKED with their extended codes.
            let sqlite = matches!(code.as_ref(), "5" | "6" | "261" | "262" | "517" | "773");
            postgres || sqlite
        }),
        _ => false,
    }
}

/// Whether `e` is a unique-key violation (another writer took the key first).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    // 23505: PostgreSQL; 1555 / 2067: SQLite primary key / unique constraint.
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "23505" || c == "1555" || c == "2067")
}
