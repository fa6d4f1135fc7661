//! Idempotency keys of command requests: claimed before the command is recorded, strongly
//! consistent (a primary key, not a read model).

use super::{Db, Sql};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What a key already stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is new and now names `command_id`.
    New,
    /// The key names this command, for the same request.
    Replay(Uuid),
    /// The key was used for a different request.
    Conflict,
}

/// Claims `key` of `requester` for `command_id`, unless it already names a command claimed at or
/// after `expired_before` (an older claim has expired: the key is claimed anew).
pub async fn claim(
    db: &Db,
    requester: &str,
    key: &str,
    request_hash: &str,
    command_id: Uuid,
    expired_before: DateTime<Utc>,
) -> Result<Claim, sqlx::Error> {
    let sql = "INSERT INTO command_idempotency (requester, key, request_hash, command_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (requester, key) DO UPDATE SET request_hash = excluded.request_hash, \
         command_id = excluded.command_id, created_at = excluded.created_at \
         WHERE command_idempotency.created_at < $6";
    let inserted = Sql::new(sql)
        .bind(requester)
        .bind(key)
        .bind(request_hash)
        .bind(command_id)
        .bind(Utc::now())
        .bind(expired_before)
        .execute(db)
        .await?;
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let sql = "SELECT request_hash, command_id FROM command_idempotency WHERE requester = $1 AND key = $2";
    let (stored_hash, existing): (String, Uuid) = Sql::new(sql).bind(requester).bind(key).fetch_one(db).await?;
    Ok(if stored_hash == request_hash { Claim::Replay(existing) } else { Claim::Conflict })
}

/// Frees a key whose request was refused before anything was recorded.
pub async fn release(db: &Db, requester: &str, key: &str) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM command_idempotency WHERE requester = $1 AND key = $2";
    Sql::new(sql).bind(requester).bind(key).execute(db).await?;
    Ok(())
}
