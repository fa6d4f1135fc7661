//! The commands read model (`rm_commands`): current status, every transition with its time, result or
//! error, late answers. Long polls and SSE are woken on [`CommandsProjection::CHANNEL`] (PostgreSQL:
//! `pg_notify` in the same transaction, so every instance hears about every change once it is
//! committed).

use super::{Projection, ProjectionError};
use crate::domain::command::{CommandEvent, RejectedBy, Undelivered};
use crate::domain::streams;
use crate::store::log::StoredEvent;
use crate::store::Conn;
use crate::store::Sql;
use serde_json::{json, Value};
use uuid::Uuid;

/// Keeps `rm_commands`.
pub struct CommandsProjection;

impl CommandsProjection {
    /// Subscriber name.
    pub const NAME: &'static str = "commands";
    /// NOTIFY channel carrying the id of a command whose read model changed.
    pub const CHANNEL: &'static str = "tacho_command";
}

#[async_trait::async_trait]
impl Projection for CommandsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[streams::COMMAND]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_commands"]
    }

    async fn apply(&self, conn: &mut Conn<'_>, event: &StoredEvent) -> Result<(), ProjectionError> {
        let id = Uuid::parse_str(&event.aggregate_id).map_err(|e| event.undecodable(format!("command id: {e}")))?;
        let decoded = event.decode::<CommandEvent>()?;
        let at = decoded.at();
        let version = event.sequence;
        if let CommandEvent::CommandRequested {
            vin,
            name,
            params,
            timeout_s,
            store_and_forward,
            ttl_s,
            requester,
            idempotency_key,
            consent_version,
            ..
        } = &decoded
        {
            let sql = "INSERT INTO rm_commands (command_id, vin, name, params, status, requester, idempotency_key, \
                 consent_version, timeout_s, store_and_forward, ttl_s, requested_at, updated_at, transitions, version, \
                 deadline_at, expires_at) \
                 VALUES ($1, $2, $3, $4, 'requested', $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15) \
                 ON CONFLICT (command_id) DO NOTHING";
            let deadline_at = at + chrono::Duration::seconds(i64::from(*timeout_s));
            let expires_at = at + chrono::Duration::seconds(i64::from(*ttl_s));
            let transitions = json!([{ "status": "requested", "at": at }]);
            Sql::new(sql)
                .bind(id)
                .bind(vin)
                .bind(name)
                .bind(params)
                .bind(requester)
                .bind(idempotency_key)
                .bind(consent_version.map(i64::from))
                .bind(i64::from(*timeout_s))
                .bind(*store_and_forward)
                .bind(i64::from(*ttl_s))
                .bind(at)
                .bind(&transitions)
                .bind(version)
                .bind(deadline_at)
                .bind(expires_at)
                .execute(&mut *conn)
                .await?;
        } else if let Some(status) = decoded.status() {
            let (result, error) = outcome(&decoded);
            let transition = json!({ "status": status.as_str(), "at": at });
            let dialect = conn.dialect();
            let sql = format!(
                "UPDATE rm_commands SET status = $2, updated_at = $3, transitions = {}, \
                 result = coalesce($5, result), error = coalesce($6, error), version = $7, \
                 dispatched_at = CASE WHEN $2 = 'dispatched' THEN $3 ELSE dispatched_at END, \
                 deadline_at = CASE WHEN $2 = 'dispatched' THEN {} ELSE deadline_at END \
                 WHERE command_id = $1",
                dialect.json_append("transitions", "$4"),
                dialect.plus_seconds("$3", "timeout_s"),
            );
            Sql::new(&sql)
                .bind(id)
                .bind(status.as_str())
                .bind(at)
                .bind(&transition)
                .bind(&result)
                .bind(&error)
                .bind(version)
                .execute(&mut *conn)
                .await?;
        } else if let CommandEvent::LateAnswerRecorded { status, code, message, result, vehicle_ts, at } = &decoded {
            let late = json!({ "status": status, "code": code, "message": message, "result": result,
                               "vehicle_ts": vehicle_ts, "received_at": at });
            let sql = format!(
                "UPDATE rm_commands SET late_answers = {}, version = $3 WHERE command_id = $1",
                conn.dialect().json_append("late_answers", "$2")
            );
            Sql::new(&sql).bind(id).bind(&late).bind(version).execute(&mut *conn).await?;
        }
        Ok(())
    }

    fn channel(&self) -> Option<&'static str> {
        Some(Self::CHANNEL)
    }
}

/// The result and error columns an event sets.
fn outcome(event: &CommandEvent) -> (Option<Value>, Option<Value>) {
    match event {
        CommandEvent::CommandSucceeded { result, .. } => (Some(result.clone().unwrap_or(Value::Null)), None),
        CommandEvent::CommandFailed { code, message, vehicle_ts, .. } => {
            let by = if vehicle_ts.is_none() && Undelivered::is_tachos(code) { "tacho" } else { "vehicle" };
            (None, Some(json!({ "code": code, "message": message, "by": by })))
        }
        CommandEvent::CommandRejected { by, code, message, .. } => {
            let by = match by {
                RejectedBy::Tacho => "tacho",
                RejectedBy::Vehicle => "vehicle",
            };
            (None, Some(json!({ "code": code, "message": message, "by": by })))
        }
        CommandEvent::CommandTimedOut { .. } => (
            None,
            Some(json!({ "code": "timed_out", "message": "no final answer before the deadline", "by": "tacho" })),
        ),
        CommandEvent::CommandExpired { .. } => {
            (None, Some(json!({ "code": "expired", "message": "still queued when its TTL ran out", "by": "tacho" })))
        }
        CommandEvent::CommandInterrupted { .. } => (
            None,
            Some(
                json!({ "code": "interrupted", "message": "the vehicle disconnected while it was in flight", "by": "tacho" }),
            ),
        ),
        _ => (None, None),
    }
}
