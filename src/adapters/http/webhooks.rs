//! `/v1/subscriptions`: partners and services subscribe to vehicle and command events, pushed to
//! their endpoint as signed webhooks. A subscription is its principal's (the token's subject): it
//! sees, pauses, rotates and deletes only its own; an admin sees all.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode, Json, Path, Problem};
use super::state::AppState;
use crate::auth::Role;
use crate::domain::consent::Purpose;
use crate::domain::streams;
use crate::domain::webhook::{Endpoint, Pause, Topic, Webhook, WebhookCommand, WebhookStatus};
use crate::domain::Vin;
use crate::projections::webhooks::{status_name, WebhooksProjection};
use crate::store::queries;
use crate::store::views::{DeliveryView, WebhookView};
use crate::webhooks::{address, signing::Secret, Secrets};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_subscription, delete))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(rotate_secret))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
}

/// Most subscriptions one principal holds (each has a worker and a place in the log).
const MAX_PER_PRINCIPAL: usize = 20;

/// Longest grace period of a rotated secret.
const MAX_GRACE_S: u32 = 7 * 24 * 3600;

/// A new subscription.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// Where to deliver: `https://...` (plain `http` only to a loopback address, for development).
    #[schema(example = "https://partner.example/hooks/tacho")]
    pub endpoint: String,
    /// What to deliver: `command` (transitions of the commands this principal requested),
    /// `vehicle.event`, `vehicle.state`, `vehicle.connection`, `vehicle.registry`.
    #[schema(example = json!(["vehicle.event", "command"]))]
    pub event_types: Vec<String>,
    /// Only these vehicles (at most 1,000); absent: every vehicle whose owner granted the purpose.
    #[serde(default)]
    pub vins: Vec<String>,
    /// The consent purpose vehicle data is delivered under (needed for `vehicle.*` types): the
    /// owner grants it to this principal (`PUT /v1/vehicles/{vin}/consents/{purpose}` with
    /// `subject`).
    #[schema(example = "data_sharing:insurer")]
    pub purpose: Option<String>,
}

/// A principal's turn to create a subscription: a mutex of this instance (waiters hold no
/// connection), then on PostgreSQL an advisory lock of a transaction held open until the turn ends
/// (a lock of the transaction, not the session: a handler dropped midway leaves none behind).
struct Turn {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _shared: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

async fn creating(state: &AppState, principal: &str) -> Result<Turn, ApiError> {
    // Stripes of their own: the turn is held across the create's command, which takes its stream's
    // stripe of the frameworks' (the same stripe would wait for itself).
    static STRIPES: std::sync::OnceLock<Vec<std::sync::Arc<tokio::sync::Mutex<()>>>> = std::sync::OnceLock::new();
    let stripes = STRIPES.get_or_init(|| (0..64).map(|_| std::sync::Arc::default()).collect());
    let stripe = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        principal.hash(&mut hasher);
        (hasher.finish() % stripes.len() as u64) as usize
    };
    let local = std::sync::Arc::clone(&stripes[stripe]).lock_owned().await;
    let shared = match &state.db {
        crate::store::Db::Postgres(pool) => {
            let mut tx = pool.begin().await.map_err(ApiError::from)?;
            let lock = "SELECT pg_advisory_xact_lock(hashtext('tacho-webhook-create:' || $1))";
            sqlx::query(lock).bind(principal).execute(&mut *tx).await.map_err(ApiError::from)?;
            Some(tx)
        }
        crate::store::Db::Sqlite(_) => None,
    };
    Ok(Turn { _local: local, _shared: shared })
}

/// A new signing secret's grace period for the old one.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// Seconds the previous secret keeps signing beside the new one (default 86,400, at most 7 days).
    pub grace_s: Option<u32>,
}

/// A subscription with its signing secret: shown once, here only.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionSecret {
    /// The subscription.
    pub subscription: WebhookView,
    /// The signing secret (`whsec_...`, Standard Webhooks); tacho never shows it again.
    pub secret: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ValidationFailed, message)
}

/// The subscription `id` when `principal` may see it; 404 otherwise (whether it exists is not said).
async fn own(state: &AppState, principal: &Principal, id: Uuid) -> Result<Webhook, ApiError> {
    let webhook = state.frameworks.stores.load::<Webhook>(&id.to_string()).await?;
    let visible = principal.has(Role::Admin) || webhook.principal == principal.sub();
    match webhook.status {
        WebhookStatus::Unknown | WebhookStatus::Deleted => Err(not_found(id)),
        _ if !visible => Err(not_found(id)),
        _ => Ok(webhook),
    }
}

/// Waits (up to 2 s) for the subscriptions read model to have subscription `id`'s last change, so a
/// list right after a change shows it and the deliverer hears of it.
async fn settle(state: &AppState, id: Uuid) -> Result<bool, ApiError> {
    state.settle(WebhooksProjection::NAME, streams::WEBHOOK, &id.to_string()).await
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("subscription {id} not found"))
}

/// What a subscription says of itself.
pub fn view(webhook: &Webhook) -> WebhookView {
    let pause = match &webhook.status {
        WebhookStatus::Paused(pause) => serde_json::to_value(pause).ok(),
        _ => None,
    };
    WebhookView {
        subscription_id: webhook.id.unwrap_or_default(),
        principal: webhook.principal.clone(),
        endpoint: webhook.endpoint.as_ref().map(|e| e.as_str().to_owned()).unwrap_or_default(),
        event_types: webhook.topics.iter().map(|t| t.as_str().to_owned()).collect(),
        vins: webhook.vins.iter().map(|v| v.as_str().to_owned()).collect(),
        purpose: webhook.purpose.as_ref().map(|p| p.as_str().to_owned()),
        status: status_name(&webhook.status).to_owned(),
        pause,
        secret_fingerprint: webhook.secret.clone(),
        previous_secret_until: webhook.previous_secret.as_ref().map(|(_, until)| *until),
        created_at: webhook.created_at.unwrap_or_default(),
        updated_at: webhook.updated_at.unwrap_or_default(),
    }
}

/// A subscription request, checked.
struct Terms {
    endpoint: Endpoint,
    topics: BTreeSet<Topic>,
    vins: BTreeSet<Vin>,
    purpose: Option<Purpose>,
}

fn parse(body: CreateSubscription, allowed: &[address::Range]) -> Result<Terms, ApiError> {
    let endpoint = Endpoint::parse(&body.endpoint).map_err(|e| invalid(e.to_string()))?;
    let literal = url::Url::parse(endpoint.as_str()).ok().as_ref().and_then(address::literal);
    if let Some(why) = literal.and_then(|ip| address::refused_unless(ip, allowed)) {
        return Err(invalid(format!(
            "invalid endpoint: tacho does not deliver to {why} (an operator may allow its range: TACHO_WEBHOOK_ALLOW)"
        )));
    }
    if body.event_types.len() > Topic::ALL.len() * 2 {
        return Err(invalid("event_types names each type at most once"));
    }
    let topics = body.event_types.iter().map(|t| Topic::parse(t)).collect::<Result<BTreeSet<_>, _>>();
    let topics = topics.map_err(|e| invalid(e.to_string()))?;
    if body.vins.len() > crate::domain::webhook::MAX_VINS {
        return Err(invalid(format!("vins may name at most {} vehicles", crate::domain::webhook::MAX_VINS)));
    }
    let vins = body.vins.iter().map(|v| Vin::parse(v).map_err(|e| invalid(format!("vin {v}: {e}"))));
    let vins = vins.collect::<Result<BTreeSet<_>, _>>()?;
    let purpose = body
        .purpose
        .map(|p| Purpose::parse(&p).map_err(|e| ApiError::new(ErrorCode::UnknownPurpose, e.to_string())))
        .transpose()?;
    Ok(Terms { endpoint, topics, vins, purpose })
}

/// Subscribe (service, admin): answers with the signing secret, shown this once.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = CreateSubscription,
    responses((status = 201, description = "Subscribed", body = SubscriptionSecret, headers(("Location" = String, description = "URL of the subscription"))),
              (status = 403, description = "Not a service", body = Problem),
              (status = 409, description = "The principal holds as many subscriptions as it may", body = Problem),
              (status = 422, description = "Invalid endpoint, event type, VIN or purpose", body = Problem)))]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateSubscription>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Service])?;
    let Terms { endpoint, topics, vins, purpose } = parse(body, &state.webhook_allowed)?;
    // One create per principal at a time, until the new subscription is in the read model the
    // count is taken from: parallel creates cannot pass the bound together.
    let _turn = creating(&state, principal.sub()).await?;
    if queries::webhooks(&state.db, Some(principal.sub())).await?.len() >= MAX_PER_PRINCIPAL {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a principal holds at most {MAX_PER_PRINCIPAL} subscriptions: delete one first"),
        ));
    }
    let id = Uuid::new_v4();
    let secret = Secret::generate();
    let secrets = Secrets::new(&state.db);
    // The secret is stored first: a subscription never exists without the secret that signs for it
    // (one left over by a refused create signs nothing).
    secrets.add(id, &secret).await?;
    let command = WebhookCommand::Create {
        id,
        principal: principal.sub().to_owned(),
        endpoint,
        topics,
        vins,
        purpose,
        secret: secret.fingerprint(),
        at: Utc::now(),
    };
    let webhook = with_new_secret(&state, &principal, id, command, &secrets, &secret).await?;
    let body = SubscriptionSecret { subscription: view(&webhook), secret: secret.reveal() };
    let location = format!("/v1/subscriptions/{id}");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// The caller's subscriptions (service; an admin sees every one), deleted ones left out.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", operation_id = "list_subscriptions",
    responses((status = 200, description = "Subscriptions", body = Vec<WebhookView>),
              (status = 403, description = "Not a service", body = Problem)))]
async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<Vec<WebhookView>>, ApiError> {
    principal.require(&[Role::Service])?;
    let of = (!principal.has(Role::Admin)).then(|| principal.sub().to_owned());
    Ok(Json(queries::webhooks(&state.db, of.as_deref()).await?))
}

/// One subscription (its principal, admin).
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions", operation_id = "get_subscription",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = WebhookView),
              (status = 404, description = "Unknown, deleted or another principal's", body = Problem)))]
async fn get_subscription(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<WebhookView>, ApiError> {
    principal.require(&[Role::Service])?;
    Ok(Json(view(&own(&state, &principal, id).await?)))
}

async fn change(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    command: WebhookCommand,
) -> Result<Json<WebhookView>, ApiError> {
    principal.require(&[Role::Service])?;
    own(state, principal, id).await?;
    state.frameworks.execute(&state.frameworks.webhooks, &id.to_string(), command, &principal.metadata()).await?;
    settle(state, id).await?;
    Ok(Json(view(&own(state, principal, id).await?)))
}

/// Stop deliveries (its principal, admin); they resume from where they stopped.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 200, description = "Paused", body = WebhookView),
              (status = 404, description = "Unknown, deleted or another principal's", body = Problem)))]
async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<WebhookView>, ApiError> {
    let pause = Pause::Requested { by: principal.sub().to_owned() };
    change(&state, &principal, id, WebhookCommand::Pause { pause, at: Utc::now() }).await
}

/// Deliver again, from where deliveries stopped (its principal, admin).
#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 200, description = "Active", body = WebhookView),
              (status = 404, description = "Unknown, deleted or another principal's", body = Problem)))]
async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<WebhookView>, ApiError> {
    let by = principal.sub().to_owned();
    change(&state, &principal, id, WebhookCommand::Resume { by, at: Utc::now() }).await
}

/// A new signing secret (its principal, admin), shown once; the previous one keeps signing beside
/// it for the grace period.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/rotate-secret", tag = "subscriptions", request_body = RotateSecret,
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 200, description = "Rotated", body = SubscriptionSecret),
              (status = 404, description = "Unknown, deleted or another principal's", body = Problem),
              (status = 422, description = "Grace period out of range", body = Problem)))]
async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<RotateSecret>,
) -> Result<Json<SubscriptionSecret>, ApiError> {
    principal.require(&[Role::Service])?;
    let grace = body.grace_s.unwrap_or(86_400);
    if grace > MAX_GRACE_S {
        return Err(invalid(format!("grace_s must be at most {MAX_GRACE_S}")));
    }
    own(&state, &principal, id).await?;
    let secret = Secret::generate();
    let secrets = Secrets::new(&state.db);
    secrets.add(id, &secret).await?;
    let at = Utc::now();
    let previous_until: DateTime<Utc> = at + Duration::seconds(i64::from(grace));
    let command = WebhookCommand::RotateSecret { secret: secret.fingerprint(), previous_until, at };
    let subscription = view(&with_new_secret(&state, &principal, id, command, &secrets, &secret).await?);
    Ok(Json(SubscriptionSecret { subscription, secret: secret.reveal() }))
}

/// Runs `command`, which names the new `secret` (stored before it: a subscription never names a
/// secret that is not there), and answers with the subscription once the read model has it. The
/// secret is erased when the subscription refused the command (it will never sign); not on any
/// other error: the command may have been recorded (a lost acknowledgement) and the secret then
/// signs for it.
async fn with_new_secret(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    command: WebhookCommand,
    secrets: &Secrets,
    secret: &Secret,
) -> Result<Webhook, ApiError> {
    let done =
        state.frameworks.execute(&state.frameworks.webhooks, &id.to_string(), command, &principal.metadata()).await;
    if let Err(e) = done {
        if matches!(e, cqrs_es::AggregateError::UserError(_)) {
            let _ = secrets.forget(id, &secret.fingerprint()).await;
        }
        return Err(e.into());
    }
    settle(state, id).await?;
    own(state, principal, id).await
}

/// End a subscription (its principal, admin): nothing more is delivered, its secrets are erased
/// (by the read model, in the transaction that records the deletion there).
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 204, description = "Deleted"),
              (status = 404, description = "Unknown, deleted or another principal's", body = Problem)))]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    principal.require(&[Role::Service])?;
    own(&state, &principal, id).await?;
    let command = WebhookCommand::Delete { by: principal.sub().to_owned(), at: Utc::now() };
    state.frameworks.execute(&state.frameworks.webhooks, &id.to_string(), command, &principal.metadata()).await?;
    settle(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The latest delivery attempts, newest first (its principal, admin): when, what, how it went.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/deliveries", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 200, description = "Up to the latest 100 attempts", body = Vec<DeliveryView>),
              (status = 404, description = "Unknown, deleted or another principal's", body = Problem)))]
async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    principal.require(&[Role::Service])?;
    own(&state, &principal, id).await?;
    Ok(Json(queries::webhook_deliveries(&state.db, id).await?))
}

/// Where to deliver again from: a log position or a time (one of them).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// A log position (`tachoposition` of a delivered event, or an auditor's position): every
    /// event from there on is delivered again, under the consent in force when it is sent.
    pub from_position: Option<i64>,
    /// A time: every event recorded from then on is delivered again.
    pub from_time: Option<DateTime<Utc>>,
}

/// What a replay does.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayStarted {
    /// The subscription.
    pub subscription_id: Uuid,
    /// The log position deliveries go back to (for `from_time`, the first event recorded then or
    /// later; past the log's end when none was).
    pub from_position: i64,
    /// The time asked for, if one was.
    pub from_time: Option<DateTime<Utc>>,
}

/// Deliver again from a log position or a time (its principal, admin): moves the subscription's
/// place back (never forward); what comes again is checked against the consents in force when it
/// is sent, and a vehicle's data goes only as far back as the grant in force.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/replay", tag = "subscriptions", request_body = Replay,
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 202, description = "Replaying", body = ReplayStarted),
              (status = 404, description = "Unknown, deleted or another principal's", body = Problem),
              (status = 422, description = "A negative position, or not exactly one of position and time", body = Problem)))]
async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<Replay>,
) -> Result<(StatusCode, Json<ReplayStarted>), ApiError> {
    principal.require(&[Role::Service])?;
    let from_time = match (body.from_position, body.from_time) {
        (Some(position), None) if position < 0 => return Err(invalid("from_position must be 0 or more")),
        (Some(_), None) => None,
        (None, Some(time)) => Some(time),
        _ => return Err(invalid("give exactly one of from_position and from_time")),
    };
    own(&state, &principal, id).await?;
    let from_position = match from_time {
        Some(time) => crate::store::log::first_position_at(&mut state.db.acquire().await?.conn(), time).await?,
        None => body.from_position.unwrap_or_default(),
    };
    // The read model moves the subscription's place back when it records the replay.
    let by = principal.sub().to_owned();
    let command = WebhookCommand::Replay { from_position, from_time: body.from_time, by, at: Utc::now() };
    state.frameworks.execute(&state.frameworks.webhooks, &id.to_string(), command, &principal.metadata()).await?;
    state.metrics.inc("tacho_webhook_replays_total", &[]);
    settle(&state, id).await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayStarted { subscription_id: id, from_position, from_time: body.from_time })))
}
