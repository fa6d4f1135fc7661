//! Where each reader of the log stands (`subscription_checkpoints`), and the locks that keep one
//! reader per name at a time across instances.
//!
//! Every lock on a subscriber's name is taken here, on one key ([`LOCK_KEY`]): the live subscriber's
//! batch, a process's single-instance guard and a rebuild's swap all exclude each other because
//! they lock the same thing, not because two literals happen to match.

use super::log::Checkpoint;
use super::{Conn, Db, Sql};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};

/// The advisory-lock key of subscriber `$1` (PostgreSQL).
const LOCK_KEY: &str = "hashtext('tacho:' || $1)";

/// The advisory-lock key of a rebuild of read model `$1`: one rebuild at a time per read model
/// across instances, as they share the rebuild tables.
const REBUILD_LOCK_KEY: &str = "hashtext('tacho-rebuild:' || $1)";

/// Subscriber `name`'s stored checkpoint (the start of the log when it has none yet).
pub async fn load(conn: &mut Conn<'_>, name: &str) -> Result<Checkpoint, sqlx::Error> {
    let sql = "SELECT tx_id, position FROM subscription_checkpoints WHERE name = $1";
    let row: Option<(i64, i64)> = Sql::new(sql).bind(name).fetch_optional(conn).await?;
    Ok(row.map(|(tx_id, position)| Checkpoint { tx_id, position }).unwrap_or_default())
}

/// Stores `at` as subscriber `name`'s checkpoint.
pub async fn save(conn: &mut Conn<'_>, name: &str, at: Checkpoint) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO subscription_checkpoints (name, tx_id, position, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET tx_id = $2, position = $3, updated_at = $4";
    Sql::new(sql).bind(name).bind(at.tx_id).bind(at.position).bind(chrono::Utc::now()).execute(conn).await?;
    Ok(())
}

/// Whether subscriber `name` has a checkpoint at all (a read model without one is new).
pub async fn exists(conn: &mut Conn<'_>, name: &str) -> Result<bool, sqlx::Error> {
    let sql = "SELECT EXISTS (SELECT 1 FROM subscription_checkpoints WHERE name = $1)";
    Sql::new(sql).bind(name).scalar(conn).await
}

/// Takes subscriber `name`'s turn for the rest of the transaction `conn` is in: waiting for it with
/// `wait`, else false when another instance holds it. PostgreSQL: an advisory lock, which unlike
/// `SELECT FOR UPDATE` takes no transaction id, so idle polls do not hold back the snapshot
/// horizon; SQLite: one instance, and `BEGIN IMMEDIATE` already holds the write lock.
pub async fn take_turn(conn: &mut Conn<'_>, name: &str, wait: bool) -> Result<bool, sqlx::Error> {
    let Conn::Postgres(c) = conn else { return Ok(true) };
    let sql = match wait {
        true => format!("SELECT pg_advisory_xact_lock({LOCK_KEY}) IS NOT NULL"),
        false => format!("SELECT pg_try_advisory_xact_lock({LOCK_KEY})"),
    };
    sqlx::query_scalar(&sql).bind(name).fetch_one(&mut **c).await
}

/// A connection holding subscriber `name`'s lock for as long as it is open (a process's
/// single-instance guard); `None` when another instance holds it. The embedded store has one
/// instance (a file lock guards it): `Some(None)`.
pub async fn try_hold(db: &Db, name: &str) -> Result<Option<Option<PoolConnection<Postgres>>>, sqlx::Error> {
    let Db::Postgres(pool) = db else { return Ok(Some(None)) };
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({LOCK_KEY})"))
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(locked.then_some(Some(conn)))
}

/// Holds off read model `name`'s other rebuilds until `conn` closes (PostgreSQL).
pub async fn hold_rebuild(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SELECT pg_advisory_lock({REBUILD_LOCK_KEY})")).bind(name).execute(conn).await?;
    Ok(())
}
