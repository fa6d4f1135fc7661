//! Rebuilding a read model from position 0 into fresh tables, then swapping them in, while the API
//! keeps answering from the old ones.
//!
//! The projection's SQL names its tables unqualified; the rebuild runs it on a connection of its
//! own where those names resolve to the fresh copies: PostgreSQL puts them in schema
//! `tacho_rebuild` first on the `search_path`, SQLite makes them TEMP tables (searched before
//! `main`). Once caught up, one transaction holding the subscriber's lock catches up the rest,
//! replaces the live tables and moves the live checkpoint to where the rebuild stopped.

use super::{Checkpoint, Projection, ProjectionError};
use crate::adapters::log;
use crate::adapters::sql::{Conn, Db};
use crate::execute;
use sqlx::{ConnectOptions, PgConnection, SqliteConnection};
use std::time::Instant;

/// Events per batch of a rebuild.
const BATCH: i64 = 5000;

/// How far a rebuild got.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuilt {
    /// Events applied.
    pub events: u64,
    /// Seconds it took.
    pub seconds: f64,
}

impl Rebuilt {
    /// Events applied per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// A connection of its own (never returned to a pool: its name resolution is changed).
enum Own {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl Own {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Postgres(c) => Conn::Postgres(c),
            Self::Sqlite(c) => Conn::Sqlite(c),
        }
    }
}

/// What to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always (`projections rebuild`).
    Always,
    /// Only while it has no checkpoint (a read model new in this version, filled at start: another
    /// instance may have filled it meanwhile).
    New,
}

/// Rebuilds `projection` into fresh tables and swaps them in; `turn` is the live subscriber's
/// in-process turn. `progress` hears after each batch.
pub async fn rebuild(
    db: &Db,
    projection: &dyn Projection,
    turn: &tokio::sync::Mutex<()>,
    when: When,
    progress: &(dyn Fn(Rebuilt) + Send + Sync),
) -> Result<Rebuilt, ProjectionError> {
    let started = Instant::now();
    let mut own = match db {
        Db::Postgres(pool) => {
            let mut conn: PgConnection = pool.connect_options().connect().await?;
            // One rebuild of a read model at a time across instances: they share `tacho_rebuild`.
            // Held until this connection closes.
            sqlx::query("SELECT pg_advisory_lock(hashtext('tacho-rebuild:' || $1))")
                .bind(projection.name())
                .execute(&mut conn)
                .await?;
            Own::Postgres(conn)
        }
        Db::Sqlite(embedded) => Own::Sqlite(embedded.pool.connect_options().connect().await?),
    };
    if when == When::New {
        let sql = "SELECT EXISTS (SELECT 1 FROM subscription_checkpoints WHERE name = $1)";
        let known: bool =
            crate::on_conn!(&mut own.conn(), |c| sqlx::query_scalar(sql).bind(projection.name()).fetch_one(c).await)?;
        if known {
            return Ok(Rebuilt::default());
        }
    }
    fresh_tables(&mut own, projection.tables()).await?;
    let types = Some(projection.aggregate_types()).filter(|t| !t.is_empty());
    let mut at = Checkpoint::default();
    let mut done = Rebuilt::default();
    // Catch up outside the lock; the API and the live subscriber go on meanwhile.
    loop {
        let mut tx = begin(&mut own, false).await?;
        let (applied, to) = step(&mut tx, projection, at, types).await?;
        commit(tx).await?;
        at = to;
        done = Rebuilt { events: done.events + applied, seconds: started.elapsed().as_secs_f64() };
        progress(done);
        if applied < BATCH as u64 {
            break;
        }
    }
    // The rest and the swap in one transaction, with the live subscriber held off.
    let _turn = turn.lock().await;
    let mut tx = begin(&mut own, true).await?;
    if let Conn::Postgres(c) = &mut tx {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tacho:' || $1))")
            .bind(projection.name())
            .execute(&mut **c)
            .await?;
    }
    loop {
        let (applied, to) = step(&mut tx, projection, at, types).await?;
        at = to;
        done.events += applied;
        if applied < BATCH as u64 {
            break;
        }
    }
    swap(&mut tx, projection.tables()).await?;
    let sql = "INSERT INTO subscription_checkpoints (name, tx_id, position, updated_at) VALUES ($1, $2, $3, $4) \
               ON CONFLICT (name) DO UPDATE SET tx_id = $2, position = $3, updated_at = $4";
    execute!(&mut tx, sql, projection.name(), at.tx_id, at.position, chrono::Utc::now())?;
    commit(tx).await?;
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}

/// One batch after `at`: how many events, and where the checkpoint goes.
async fn step(
    conn: &mut Conn<'_>,
    projection: &dyn Projection,
    at: Checkpoint,
    types: Option<&[&str]>,
) -> Result<(u64, Checkpoint), ProjectionError> {
    let batch = log::read_after(conn, at, types, BATCH).await?;
    if !batch.events.is_empty() {
        projection.apply_batch(conn, &batch.events).await?;
    }
    Ok((batch.events.len() as u64, batch.next_checkpoint(at, BATCH)))
}

/// Empty copies of `tables` (columns, keys, indexes) where the projection's SQL will find them.
async fn fresh_tables(own: &mut Own, tables: &[&str]) -> Result<(), sqlx::Error> {
    match own {
        Own::Postgres(c) => {
            for table in tables {
                sqlx::query(&format!("DROP TABLE IF EXISTS tacho_rebuild.{table}")).execute(&mut *c).await?;
                sqlx::query(&format!("CREATE TABLE tacho_rebuild.{table} (LIKE public.{table} INCLUDING ALL)"))
                    .execute(&mut *c)
                    .await?;
            }
            sqlx::query("SET search_path TO tacho_rebuild, public").execute(&mut *c).await?;
        }
        Own::Sqlite(c) => {
            for table in tables {
                sqlx::query(&format!("DROP TABLE IF EXISTS temp.{table}")).execute(&mut *c).await?;
                let ddl: Vec<(String, String)> = sqlx::query_as(
                    "SELECT type, sql FROM sqlite_master WHERE tbl_name = $1 AND sql IS NOT NULL ORDER BY type DESC",
                )
                .bind(table)
                .fetch_all(&mut *c)
                .await?;
                // The table first ("table" sorts after "index" descending), then its indexes.
                for (kind, sql) in ddl {
                    let temp = match kind.as_str() {
                        "table" => sql.replacen("CREATE TABLE ", "CREATE TEMP TABLE ", 1),
                        _ => sql.replacen("CREATE INDEX ", "CREATE INDEX temp.", 1).replacen(
                            "CREATE UNIQUE INDEX ",
                            "CREATE UNIQUE INDEX temp.",
                            1,
                        ),
                    };
                    sqlx::query(&temp).execute(&mut *c).await?;
                }
            }
        }
    }
    Ok(())
}

/// Replaces the live `tables` with the rebuilt ones.
async fn swap(conn: &mut Conn<'_>, tables: &[&str]) -> Result<(), sqlx::Error> {
    for table in tables {
        match conn {
            Conn::Postgres(c) => {
                // `LIKE ... INCLUDING ALL` names the copies' indexes itself: give them back the
                // names migrations know, matching each by its definition.
                let sql = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2";
                let old: Vec<(String, String)> =
                    sqlx::query_as(sql).bind("public").bind(table).fetch_all(&mut **c).await?;
                let new: Vec<(String, String)> =
                    sqlx::query_as(sql).bind("tacho_rebuild").bind(table).fetch_all(&mut **c).await?;
                sqlx::query(&format!("DROP TABLE public.{table}")).execute(&mut **c).await?;
                sqlx::query(&format!("ALTER TABLE tacho_rebuild.{table} SET SCHEMA public")).execute(&mut **c).await?;
                for (name, definition) in &new {
                    let shape = index_shape(definition);
                    let Some((wanted, _)) = old.iter().find(|(_, d)| index_shape(d) == shape) else { continue };
                    if wanted != name {
                        sqlx::query(&format!("ALTER INDEX public.\"{name}\" RENAME TO \"{wanted}\""))
                            .execute(&mut **c)
                            .await?;
                    }
                }
            }
            Conn::Sqlite(c) => {
                sqlx::query(&format!("DELETE FROM main.{table}")).execute(&mut **c).await?;
                sqlx::query(&format!("INSERT INTO main.{table} SELECT * FROM temp.{table}")).execute(&mut **c).await?;
                sqlx::query(&format!("DROP TABLE temp.{table}")).execute(&mut **c).await?;
            }
        }
    }
    Ok(())
}

/// An index definition without its name and table: `USING btree (vin, status) WHERE ...`.
fn index_shape(definition: &str) -> &str {
    definition.find(" USING ").map_or(definition, |at| &definition[at..])
}

async fn begin(own: &mut Own, write: bool) -> Result<Conn<'_>, sqlx::Error> {
    let begin = match (&own, write) {
        (Own::Sqlite(_), true) => "BEGIN IMMEDIATE",
        _ => "BEGIN",
    };
    let mut conn = own.conn();
    execute!(&mut conn, begin)?;
    Ok(conn)
}

async fn commit(mut conn: Conn<'_>) -> Result<(), sqlx::Error> {
    execute!(&mut conn, "COMMIT")?;
    Ok(())
}
