//! Where each reader of the log stands (`subscription_checkpoints`), and the locks that keep one
//! reader per name at a time across instances.
//!
//! A read model's batch and a rebuild's swap exclude each other because they lock the same key
//! ([`LOCK_KEY`]), not because two literals happen to match. A process is guarded by its lease
//! ([`super::leases`]), which also fences its checkpoint. Checkpoints only move forward.

use super::leases::Lease;
use super::log::Checkpoint;
use super::{Conn, Sql};
use sqlx::PgConnection;

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

/// The stored checkpoints of subscribers `names` (those without one are absent).
pub async fn load_many(
    conn: &mut Conn<'_>,
    names: &[&str],
) -> Result<std::collections::HashMap<String, Checkpoint>, sqlx::Error> {
    let sql = format!(
        "SELECT name, tx_id, position FROM subscription_checkpoints WHERE {}",
        conn.dialect().in_json_list("name", "$1")
    );
    let rows: Vec<(String, i64, i64)> = Sql::new(&sql).bind(serde_json::json!(names)).fetch_all(conn).await?;
    Ok(rows.into_iter().map(|(name, tx_id, position)| (name, Checkpoint { tx_id, position })).collect())
}

/// Moves subscriber `name`'s checkpoint forward to `to`; false when it did not move: it already
/// stood there or beyond, or `lease` (a process's, PostgreSQL) is no longer the current one. A
/// checkpoint never moves backwards, and only its lease's holder moves a process's.
pub async fn advance(
    conn: &mut Conn<'_>,
    name: &str,
    to: Checkpoint,
    lease: Option<&Lease>,
) -> Result<bool, sqlx::Error> {
    let fence = match lease.filter(|l| l.is_fenced()) {
        Some(_) => {
            "EXISTS (SELECT 1 FROM process_leases WHERE name = $1 AND holder = $5 AND epoch = $6 \
                    AND expires_at > clock_timestamp())"
        }
        None => "$5 IS NULL AND $6 IS NULL",
    };
    let sql = format!(
        "INSERT INTO subscription_checkpoints (name, tx_id, position, updated_at) SELECT $1, $2, $3, $4 WHERE {fence} \
         ON CONFLICT (name) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position, \
         updated_at = excluded.updated_at \
         WHERE (subscription_checkpoints.tx_id, subscription_checkpoints.position) < (excluded.tx_id, excluded.position)"
    );
    let (holder, epoch) = match lease.filter(|l| l.is_fenced()) {
        Some(lease) => (Some(lease.holder().to_owned()), Some(lease.epoch())),
        None => (None, None),
    };
    let moved = Sql::new(&sql)
        .bind(name)
        .bind(to.tx_id)
        .bind(to.position)
        .bind(chrono::Utc::now())
        .bind(holder)
        .bind(epoch)
        .execute(conn)
        .await?;
    Ok(moved > 0)
}

/// Moves the checkpoints of read models `names` forward to `to` (as [`advance`] without a lease):
/// one statement on PostgreSQL.
pub async fn advance_all(conn: &mut Conn<'_>, names: &[&str], to: Checkpoint) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Postgres(c) if !names.is_empty() => {
            sqlx::query(
                "INSERT INTO subscription_checkpoints (name, tx_id, position, updated_at) \
                 SELECT n, $2, $3, $4 FROM unnest($1::text[]) AS n \
                 ON CONFLICT (name) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position, \
                 updated_at = excluded.updated_at \
                 WHERE (subscription_checkpoints.tx_id, subscription_checkpoints.position) < (excluded.tx_id, excluded.position)",
            )
            .bind(names)
            .bind(to.tx_id)
            .bind(to.position)
            .bind(chrono::Utc::now())
            .execute(&mut **c)
            .await?;
        }
        Conn::Postgres(_) => {}
        Conn::Sqlite(_) => {
            for name in names {
                advance(conn, name, to, None).await?;
            }
        }
    }
    Ok(())
}

/// Sets read model `name`'s checkpoint to `at`, wherever it stood: a rebuild's swap, whose fresh
/// tables hold the log up to `at`.
pub async fn reset(conn: &mut Conn<'_>, name: &str, at: Checkpoint) -> Result<(), sqlx::Error> {
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

/// Takes the turns of subscribers `names` for the rest of the transaction `conn` is in, without
/// waiting: false when another instance holds any of them (those taken are given back with the
/// transaction, which the caller then ends). See [`take_turn`].
pub async fn take_turns(conn: &mut Conn<'_>, names: &[&str]) -> Result<bool, sqlx::Error> {
    let Conn::Postgres(c) = conn else { return Ok(true) };
    let sql = format!(
        "SELECT coalesce(bool_and(taken), true) FROM \
           (SELECT pg_try_advisory_xact_lock({}) AS taken FROM unnest($1::text[]) AS n ORDER BY n) t",
        LOCK_KEY.replace("$1", "n")
    );
    sqlx::query_scalar(&sql).bind(names).fetch_one(&mut **c).await
}

/// Holds off read model `name`'s other rebuilds until `conn` closes (PostgreSQL).
pub async fn hold_rebuild(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SELECT pg_advisory_lock({REBUILD_LOCK_KEY})")).bind(name).execute(conn).await?;
    Ok(())
}
