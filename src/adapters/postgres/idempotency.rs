//! Idempotency keys of command requests: claimed before the command is recorded, strongly
//! consistent (a primary key, not a read model).

use sqlx::PgPool;
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

/// Claims `key` of `requester` for `command_id`, unless it already names a command.
pub async fn claim(
    pool: &PgPool,
    requester: &str,
    key: &str,
    request_hash: &str,
    command_id: Uuid,
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO command_idempotency (requester, key, request_hash, command_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (requester, key) DO NOTHING",
    )
    .bind(requester)
    .bind(key)
    .bind(request_hash)
    .bind(command_id)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let (stored_hash, existing): (String, Uuid) =
        sqlx::query_as("SELECT request_hash, command_id FROM command_idempotency WHERE requester = $1 AND key = $2")
            .bind(requester)
            .bind(key)
            .fetch_one(pool)
            .await?;
    Ok(if stored_hash == request_hash { Claim::Replay(existing) } else { Claim::Conflict })
}

/// Frees a key whose request was refused before anything was recorded.
pub async fn release(pool: &PgPool, requester: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM command_idempotency WHERE requester = $1 AND key = $2")
        .bind(requester)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}
