//! Remote commands: request (idempotent), read with long poll, SSE of transitions, cancel, list.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode, Json, Path, Problem, Query};
use super::state::AppState;
use super::vehicles::page_size;
use crate::auth::Role;
use crate::domain::command::{
    catalogue, Command, CommandCommand, CommandError, CommandStatus, RejectedBy, Rejection, RequestCommand,
};
use crate::domain::streams;
use crate::projections::commands::CommandsProjection;
use crate::store::idempotency::{self, Claim};
use crate::store::queries;
use crate::store::views::{CommandErrorView, CommandView, Page, Transition};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use cqrs_es::AggregateError;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request, list))
        .routes(routes!(get_command))
        .routes(routes!(events))
        .routes(routes!(cancel))
}

/// A remote command request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    /// lock_doors, unlock_doors, flash_lights, honk, start_charging, stop_charging (no params);
    /// set_climate `{temperature_c: 16..30, on}`; set_charge_limit `{percent: 50..100}`; configure `{key, value}`.
    #[schema(example = "lock_doors")]
    pub name: String,
    /// Parameters of the command.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub params: Value,
    /// Seconds to wait for a final answer (1..3600, default 30).
    #[schema(minimum = 1, maximum = 3600)]
    pub timeout_s: Option<u32>,
    /// Queue while the vehicle is offline (default false: fail fast).
    pub store_and_forward: Option<bool>,
    /// How long a queued command may wait (seconds, ≤ 7 days, default 3600).
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_s: Option<u32>,
}

fn requester_only(principal: &Principal, view: CommandView) -> Result<CommandView, ApiError> {
    if view.requester == principal.sub() || principal.has(Role::Auditor) || principal.has(Role::Admin) {
        Ok(view)
    } else {
        Err(not_found(view.command_id))
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::CommandNotFound, format!("command {id} not found"))
}

async fn command_view(state: &AppState, principal: &Principal, id: Uuid) -> Result<CommandView, ApiError> {
    let view = queries::command_by_id(&state.db, id).await?.ok_or_else(|| not_found(id))?;
    requester_only(principal, view)
}

/// Request a remote command (owner, service). Needs the requester's `remote_commands` consent; a
/// refusal for consent or vehicle state is recorded on the command and answered 403 / 409.
#[utoipa::path(post, path = "/v1/vehicles/{vin}/commands", tag = "commands", operation_id = "request_command", request_body = RequestBody,
    params(("vin" = String, Path, description = "VIN"),
           ("Idempotency-Key" = Option<String>, Header, description = "Same key and body: the same command (200); other body: 409")),
    responses(
        (status = 202, description = "Accepted for delivery", body = CommandView, headers(("Location" = String, description = "URL of the command"))),
        (status = 200, description = "Idempotent replay: the command this key already created", body = CommandView),
        (status = 403, description = "No consent in force (`consent_missing`); the rejection is recorded", body = Problem),
        (status = 404, description = "Unknown or out-of-scope vehicle", body = Problem),
        (status = 409, description = "Vehicle not active (`vehicle_not_active`, recorded) or key reused (`idempotency_conflict`)", body = Problem),
        (status = 422, description = "Unknown command or parameters out of range", body = Problem),
    ))]
async fn request(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
    headers: HeaderMap,
    Json(body): Json<RequestBody>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Owner, Role::Service])?;
    principal.scope(&vin)?;
    let params = catalogue::validate(&body.name, &body.params)
        .map_err(crate::domain::command::CommandError::from)
        .map_err(|e| {
            use crate::domain::DomainError;
            ApiError::new(ErrorCode::from(e.refusal()), e.to_string())
        })?;
    let timeout_s = body.timeout_s.unwrap_or(catalogue::DEFAULT_TIMEOUT_S);
    let store_and_forward = body.store_and_forward.unwrap_or(false);
    let ttl_s = body.ttl_s.unwrap_or(catalogue::DEFAULT_TTL_S);
    let key = idempotency_key(&headers)?;
    // What the key stands for, built only when a key came.
    let keyed = key.as_deref().map(|key| (key, json!([vin, body.name, params, timeout_s, store_and_forward, ttl_s])));
    let Keyed { id, claimed, mut replay } = claim(&state, &principal, keyed).await?;
    let command = CommandCommand::Request(RequestCommand {
        command_id: id,
        vin: vin.clone(),
        name: body.name,
        params,
        timeout_s,
        store_and_forward,
        ttl_s,
        requester: principal.sub().to_owned(),
        idempotency_key: key.clone(),
        at: Utc::now(),
    });
    let stream = id.to_string();
    let (recorded, at) = match state.frameworks.execute_command(&stream, &vin, command, &principal.metadata()).await {
        Ok(recorded) => recorded,
        // With a key, the id is the key's: another request with the same key recorded it first.
        Err(AggregateError::UserError(CommandError::AlreadyRequested)) if key.is_some() => {
            replay = true;
            (state.frameworks.stores.load::<Command>(&stream).await?, None)
        }
        Err(e) => {
            if let (true, Some(key)) = (claimed, key.as_deref()) {
                idempotency::release(&state.db, principal.sub(), key).await?;
            }
            return Err(e.into());
        }
    };
    // Read-your-writes: once this answers, the command is readable (GET, lists).
    let settled = match at {
        Some(at) => state.settle_at(CommandsProjection::NAME, at).await,
        None => state.settle(CommandsProjection::NAME, streams::COMMAND, &stream).await?,
    };
    if replay {
        let view = match settled {
            true => command_view(&state, &principal, id).await?,
            false => provisional_view(id, &recorded),
        };
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    // Just requested: the read model's row is what the command decided, no need to read it.
    let view = provisional_view(id, &recorded);
    let refused = match recorded.rejection {
        Some(Rejection::ConsentMissing) => {
            Some((ErrorCode::ConsentMissing, "no remote_commands consent of the requester is in force"))
        }
        Some(Rejection::VehicleNotActive) => Some((ErrorCode::VehicleNotActive, "the vehicle is not active")),
        // The vehicle refused it after it was accepted for delivery: the request itself succeeded.
        Some(Rejection::ByVehicle(_)) | None => None,
    };
    if let Some((code, detail)) = refused {
        return Err(ApiError::new(code, detail).with_command(id));
    }
    let location = format!("/v1/commands/{id}");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(view)).into_response())
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::ValidationFailed, "Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::new(ErrorCode::ValidationFailed, "Idempotency-Key must be 1 to 255 characters"));
    }
    Ok(Some(key.to_owned()))
}

/// The command id a request is for, and what its idempotency key made of it.
struct Keyed {
    /// A new id, or the one the key already names.
    id: Uuid,
    /// This request claimed the key (to release it if the request is refused unrecorded).
    claimed: bool,
    /// The key already names a command for this same request.
    replay: bool,
}

/// Claims `key` of the caller for a new command id, unless it already names one: the same
/// `request` replays that command, another request is a conflict.
async fn claim(state: &AppState, principal: &Principal, keyed: Option<(&str, Value)>) -> Result<Keyed, ApiError> {
    let id = Uuid::new_v4();
    let Some((key, request)) = keyed else { return Ok(Keyed { id, claimed: false, replay: false }) };
    let hash = hex::encode(Sha256::digest(request.to_string().as_bytes()));
    let expired_before = Utc::now() - state.idempotency_key_ttl;
    match idempotency::claim(&state.db, principal.sub(), key, &hash, id, expired_before).await? {
        Claim::New => Ok(Keyed { id, claimed: true, replay: false }),
        // Re-running the request is harmless: it is refused as a duplicate once recorded, and
        // records it when the first attempt stopped between claiming the key and recording.
        Claim::Replay(existing) => Ok(Keyed { id: existing, claimed: false, replay: true }),
        Claim::Conflict => {
            Err(ApiError::new(ErrorCode::IdempotencyConflict, "this Idempotency-Key was used for a different request"))
        }
    }
}

/// The view of a command straight from its stream: what was just decided, or for when the read
/// model lags behind the write.
fn provisional_view(id: Uuid, command: &Command) -> CommandView {
    let at = command.requested_at.unwrap_or_else(Utc::now);
    let mut transitions = vec![Transition { status: "requested".into(), at }];
    if command.status != CommandStatus::Requested {
        transitions.push(Transition { status: command.status.as_str().into(), at });
    }
    CommandView {
        command_id: id,
        vin: command.vin.clone(),
        name: command.name.clone(),
        params: command.params.clone(),
        status: command.status.as_str().into(),
        requester: command.requester.clone(),
        consent_version: command.consent_version.map(i64::from),
        timeout_s: i64::from(command.timeout_s),
        store_and_forward: command.store_and_forward,
        ttl_s: i64::from(command.ttl_s),
        requested_at: at,
        updated_at: at,
        transitions,
        result: None,
        error: command.rejection.as_ref().map(|rejection| CommandErrorView {
            code: rejection.code().to_owned(),
            message: None,
            by: match rejection.by() {
                RejectedBy::Tacho => "tacho",
                RejectedBy::Vehicle => "vehicle",
            }
            .into(),
        }),
        late_answers: vec![],
    }
}

/// Long poll.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait up to this many seconds (0..60) for the status to change.
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u64>,
}

/// A command: status, every transition, result or error (its requester, auditors).
/// With `?wait=S`, answers as soon as the status changes or after S seconds.
#[utoipa::path(get, path = "/v1/commands/{id}", tag = "commands", params(("id" = Uuid, Path, description = "Command id"), WaitQuery),
    responses((status = 200, description = "The command", body = CommandView),
              (status = 404, description = "Unknown or not the caller's", body = Problem)))]
async fn get_command(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<CommandView>, ApiError> {
    let wait = q.wait.unwrap_or(0);
    if wait > 60 {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "wait is at most 60 seconds"));
    }
    let mut changes = state.command_changes.subscribe();
    let first = command_view(&state, &principal, id).await?;
    if wait == 0 || CommandStatus::parse(&first.status).is_some_and(CommandStatus::is_terminal) {
        return Ok(Json(first));
    }
    let _held = state.long_polls.hold(principal.sub())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        // Re-read at least every second: a notification lost while the listener reconnects must
        // not hold the caller for the whole wait.
        let slice = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        let _ = tokio::time::timeout_at(slice, next_change(&mut changes, id)).await;
        let now = command_view(&state, &principal, id).await?;
        if now.status != first.status || tokio::time::Instant::now() >= deadline {
            return Ok(Json(now));
        }
    }
}

/// Server-sent events of a command's transitions (its requester): every transition so far, then each
/// new one as it is recorded; the stream ends after a terminal status.
#[utoipa::path(get, path = "/v1/commands/{id}/events", tag = "commands", operation_id = "command_events", params(("id" = Uuid, Path, description = "Command id")),
    responses((status = 200, description = "`text/event-stream` of `transition` events: `{status, at}`", content_type = "text/event-stream", body = String),
              (status = 404, description = "Unknown or not the caller's", body = Problem)))]
async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    // Subscribed before the first read, so no change between the read and the wait is missed.
    let changes = state.command_changes.subscribe();
    let first = command_view(&state, &principal, id).await?;
    let held = state.streams.hold(principal.sub())?;
    let start = SseState { state, principal, id, changes, sent: 0, pending: Some(first), done: false, _held: held };
    let stream = futures::stream::unfold(start, |mut s| async move {
        if s.done {
            return None;
        }
        let view = match s.pending.take() {
            Some(view) => view,
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(5), next_change(&mut s.changes, s.id)).await;
                command_view(&s.state, &s.principal, s.id).await.ok()?
            }
        };
        let fresh: Vec<Result<Event, Infallible>> = view
            .transitions
            .iter()
            .skip(s.sent)
            .map(|t| Ok(Event::default().event("transition").json_data(t).unwrap_or_default()))
            .collect();
        s.sent = view.transitions.len();
        s.done = CommandStatus::parse(&view.status).is_some_and(CommandStatus::is_terminal);
        Some((futures::stream::iter(fresh), s))
    })
    .flatten();
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

struct SseState {
    state: AppState,
    principal: Principal,
    id: Uuid,
    changes: broadcast::Receiver<Uuid>,
    sent: usize,
    pending: Option<CommandView>,
    done: bool,
    /// Its place among the open streams, given back when the stream ends or the client goes.
    _held: super::capacity::Held,
}

/// Returns when command `id` changed (or notifications were lost, so the caller re-reads).
async fn next_change(changes: &mut broadcast::Receiver<Uuid>, id: Uuid) {
    loop {
        match changes.recv().await {
            Ok(changed) if changed == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// Cancel a command (its requester) while it is still `requested` or `queued` and tacho has not
/// started to publish it. Once the request may have reached the vehicle (being published, or
/// `dispatched` and later) it is no longer cancelable: the answer is 409 and the command goes on to
/// its vehicle's answer or its deadline, so `canceled` always means the vehicle never got it.
#[utoipa::path(post, path = "/v1/commands/{id}/cancel", tag = "commands", params(("id" = Uuid, Path, description = "Command id")),
    responses((status = 200, description = "Canceled", body = CommandView),
              (status = 404, description = "Unknown or not the caller's", body = Problem),
              (status = 409, description = "Being published, dispatched, at the vehicle or ended (`command_not_cancelable`)", body = Problem)))]
async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<CommandView>, ApiError> {
    let command = state.frameworks.stores.load::<Command>(&id.to_string()).await?;
    let own = command.requester == principal.sub() || principal.has(Role::Admin);
    if command.status == CommandStatus::Unknown || !own {
        return Err(not_found(id));
    }
    let cancel = CommandCommand::Cancel { by: principal.sub().to_owned(), at: Utc::now() };
    state.frameworks.execute(&state.frameworks.commands, &id.to_string(), cancel, &principal.metadata()).await?;
    state.settle(CommandsProjection::NAME, streams::COMMAND, &id.to_string()).await?;
    Ok(Json(command_view(&state, &principal, id).await?))
}

/// Filter and paging of a vehicle's commands.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CommandsQuery {
    /// Only commands in this status.
    pub status: Option<String>,
    /// 1..500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<i64>,
    /// From the previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// A vehicle's commands, newest first (owner, dealer).
#[utoipa::path(get, path = "/v1/vehicles/{vin}/commands", tag = "commands", operation_id = "list_vehicle_commands", params(("vin" = String, Path, description = "VIN"), CommandsQuery),
    responses((status = 200, description = "A page of commands", body = Page<CommandView>),
              (status = 400, description = "Bad status or page token", body = Problem),
              (status = 404, description = "Out-of-scope vehicle", body = Problem)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
    Query(q): Query<CommandsQuery>,
) -> Result<Json<Page<CommandView>>, ApiError> {
    principal.require(&[Role::Owner, Role::Dealer, Role::Auditor])?;
    principal.scope(&vin)?;
    if let Some(status) = q.status.as_deref() {
        if CommandStatus::parse(status).is_none() {
            return Err(ApiError::new(ErrorCode::InvalidQuery, format!("unknown status '{status}'")));
        }
    }
    let size = page_size(q.page_size)?;
    Ok(Json(queries::commands_of_vehicle(&state.db, &vin, q.status.as_deref(), size, q.page_token.as_deref()).await?))
}
