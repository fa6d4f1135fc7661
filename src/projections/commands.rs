//! The commands read model (`rm_commands`): current status, every transition with its time, result or
//! error, late answers. Long polls and SSE are woken on [`CommandsProjection::CHANNEL`] (PostgreSQL:
//! `pg_notify` in the same transaction, so every instance hears about every change once it is
//! committed).

use super::{Projection, ProjectionError};
use crate::domain::command::{CommandEvent, RejectedBy, Undelivered};
use crate::domain::streams;
use crate::store::bulk::{self, CommandChange, CommandRows, NewCommand};
use crate::store::log::StoredEvent;
use crate::store::Conn;
use serde_json::{json, Value};
use std::collections::HashMap;
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
        self.apply_batch(conn, std::slice::from_ref(event)).await
    }

    /// Folds the batch per command in log order, then writes each command once: an insert when the
    /// batch holds its request, else an update (a batch of hundreds of commands costs two
    /// statements on PostgreSQL).
    async fn apply_batch(&self, conn: &mut Conn<'_>, events: &[StoredEvent]) -> Result<(), ProjectionError> {
        let mut rows = CommandRows::default();
        // Where each command's change is: an insert or an update, by index.
        let mut index: HashMap<Uuid, Slot> = HashMap::new();
        for event in events {
            let id = Uuid::parse_str(&event.aggregate_id).map_err(|e| event.undecodable(format!("command id: {e}")))?;
            let decoded = event.decode::<CommandEvent>()?;
            if let Some(new) = requested(id, &decoded) {
                if index.contains_key(&id) {
                    continue; // a second request of one command: the first row stands (ON CONFLICT DO NOTHING)
                }
                index.insert(id, Slot::Insert(rows.inserts.len()));
                rows.inserts.push(new);
                rows.inserts.last_mut().expect("just pushed").change.version = event.sequence;
                continue;
            }
            let slot = *index.entry(id).or_insert_with(|| {
                rows.updates.push((id, CommandChange::default()));
                Slot::Update(rows.updates.len() - 1)
            });
            let change = match slot {
                Slot::Insert(i) => &mut rows.inserts[i].change,
                Slot::Update(i) => &mut rows.updates[i].1,
            };
            fold(change, &decoded, event.sequence);
        }
        // A command whose only events here change nothing (a release) is not written.
        rows.updates.retain(|(_, change)| change.version > 0);
        bulk::write_commands(conn, &rows).await?;
        Ok(())
    }

    fn channel(&self) -> Option<&'static str> {
        Some(Self::CHANNEL)
    }
}

/// Where a command's change of the batch is kept.
#[derive(Clone, Copy)]
enum Slot {
    Insert(usize),
    Update(usize),
}

/// The row of a requested command, before the rest of the batch.
fn requested(id: Uuid, event: &CommandEvent) -> Option<NewCommand> {
    let CommandEvent::CommandRequested {
        vin,
        name,
        params,
        timeout_s,
        store_and_forward,
        ttl_s,
        requester,
        idempotency_key,
        consent_version,
        at,
        ..
    } = event
    else {
        return None;
    };
    Some(NewCommand {
        id,
        vin: vin.clone(),
        name: name.clone(),
        params: params.clone(),
        requester: requester.clone(),
        idempotency_key: idempotency_key.clone(),
        consent_version: consent_version.map(i64::from),
        timeout_s: i64::from(*timeout_s),
        store_and_forward: *store_and_forward,
        ttl_s: i64::from(*ttl_s),
        requested_at: *at,
        expires_at: *at + chrono::Duration::seconds(i64::from(*ttl_s)),
        change: CommandChange::default(),
    })
}

/// Adds one later event to a command's change: what applying it to the row one by one would do.
fn fold(change: &mut CommandChange, event: &CommandEvent, sequence: i64) {
    let at = event.at();
    if let Some(status) = event.status() {
        let status = status.as_str();
        change.status = Some((status, at));
        change.transitions.push(json!({ "status": status, "at": at }));
        let (result, error) = outcome(event);
        change.result = result.or(change.result.take());
        change.error = error.or(change.error.take());
        if status == "dispatched" {
            change.dispatched_at = Some(at);
        }
        change.version = sequence;
    } else if let CommandEvent::LateAnswerRecorded { status, code, message, result, vehicle_ts, at } = event {
        change.late_answers.push(json!({ "status": status, "code": code, "message": message, "result": result,
                                         "vehicle_ts": vehicle_ts, "received_at": at }));
        change.version = sequence;
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
