//! `/v1/vehicles/{vin}/consents`: an owner grants, revokes and lists consents.

use super::auth::Principal;
use super::error::{ApiError, ErrorCode, Json, Path, Problem, Query};
use super::state::AppState;
use crate::auth::Role;
use crate::domain::consent::{Consent, ConsentCommand, Purpose};
use crate::domain::streams;
use crate::domain::vehicle::{Vehicle, VehicleStatus};
use crate::projections::consents::ConsentsProjection;
use crate::store::queries;
use crate::store::views::ConsentView;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(grant, revoke)).routes(routes!(list))
}

/// Terms of a grant; all optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantConsent {
    /// Who is allowed; default: the token's subject.
    pub subject: Option<String>,
    /// GDPR legal basis; default `consent`.
    #[schema(example = "consent")]
    pub legal_basis: Option<String>,
    /// End of validity.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Whose consent to revoke.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// Default: the token's subject.
    pub subject: Option<String>,
}

fn purpose(raw: &str) -> Result<Purpose, ApiError> {
    Purpose::parse(raw).map_err(|e| ApiError::new(ErrorCode::UnknownPurpose, e.to_string()))
}

async fn registered(state: &AppState, principal: &Principal, vin: &str) -> Result<(), ApiError> {
    principal.scope(vin)?;
    let vehicle = state.frameworks.stores.load::<Vehicle>(vin).await?;
    if vehicle.status == VehicleStatus::Unknown {
        return Err(ApiError::new(ErrorCode::VehicleNotFound, format!("vehicle {vin} not found")));
    }
    Ok(())
}

/// Grant a consent (owner). Granting the same terms again changes nothing.
#[utoipa::path(put, path = "/v1/vehicles/{vin}/consents/{purpose}", tag = "consents", request_body = GrantConsent,
    params(("vin" = String, Path, description = "VIN"),
           ("purpose" = String, Path, description = "remote_commands, location, telemetry, diagnostics or data_sharing:<partner>")),
    responses((status = 200, description = "Granted", body = ConsentView),
              (status = 404, description = "Unknown or out-of-scope vehicle", body = Problem),
              (status = 422, description = "Unknown purpose or bad terms", body = Problem)))]
async fn grant(
    State(state): State<AppState>,
    principal: Principal,
    Path((vin, raw_purpose)): Path<(String, String)>,
    Json(body): Json<GrantConsent>,
) -> Result<Json<ConsentView>, ApiError> {
    principal.require(&[Role::Owner])?;
    let purpose = purpose(&raw_purpose)?;
    registered(&state, &principal, &vin).await?;
    let subject = body.subject.unwrap_or_else(|| principal.sub().to_owned());
    let at = Utc::now();
    let command = ConsentCommand::Grant {
        vin: vin.clone(),
        subject: subject.clone(),
        purpose: purpose.clone(),
        legal_basis: body.legal_basis.unwrap_or_else(|| "consent".to_owned()),
        expires_at: body.expires_at,
        granted_by: principal.sub().to_owned(),
        at,
    };
    state.frameworks.execute(&state.frameworks.consents, &vin, command, &principal.metadata()).await?;
    if state.settle(ConsentsProjection::NAME, streams::CONSENT, &vin).await? {
        let granted = queries::consents(&state.db, &vin).await?;
        if let Some(view) = granted.into_iter().find(|c| c.subject == subject && c.purpose == purpose.as_str()) {
            return Ok(Json(view));
        }
    }
    // Granted: the answer says so even when the read model has not caught up yet, from the grant
    // now in force in the log.
    let consent = state.frameworks.stores.load::<Consent>(&vin).await?;
    let grant = consent
        .grants
        .get(&subject)
        .and_then(|grants| grants.get(&purpose))
        .ok_or_else(|| ApiError::internal("a granted consent is missing from its own stream"))?;
    Ok(Json(ConsentView {
        vin: vin.clone(),
        subject,
        purpose: purpose.as_str().to_owned(),
        status: "granted".to_owned(),
        version: i64::from(grant.version),
        legal_basis: grant.legal_basis.clone(),
        expires_at: grant.expires_at,
        granted_at: at,
        revoked_at: None,
        granted_by: Some(principal.sub().to_owned()),
    }))
}

/// Revoke a consent (owner). Revoking what was never granted changes nothing.
#[utoipa::path(delete, path = "/v1/vehicles/{vin}/consents/{purpose}", tag = "consents",
    params(("vin" = String, Path, description = "VIN"), ("purpose" = String, Path, description = "Purpose"), RevokeQuery),
    responses((status = 204, description = "Revoked"),
              (status = 404, description = "Unknown or out-of-scope vehicle", body = Problem),
              (status = 422, description = "Unknown purpose", body = Problem)))]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path((vin, raw_purpose)): Path<(String, String)>,
    Query(q): Query<RevokeQuery>,
) -> Result<StatusCode, ApiError> {
    principal.require(&[Role::Owner])?;
    let purpose = purpose(&raw_purpose)?;
    registered(&state, &principal, &vin).await?;
    let subject = q.subject.unwrap_or_else(|| principal.sub().to_owned());
    let command = ConsentCommand::Revoke { subject, purpose, at: Utc::now() };
    state.change_send_rules::<Consent>(&principal, &vin, command).await?;
    state.settle(ConsentsProjection::NAME, streams::CONSENT, &vin).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every consent recorded on a vehicle, granted or revoked (owner, auditor).
#[utoipa::path(get, path = "/v1/vehicles/{vin}/consents", tag = "consents", operation_id = "list_consents", params(("vin" = String, Path, description = "VIN")),
    responses((status = 200, description = "Consents", body = Vec<ConsentView>),
              (status = 404, description = "Unknown or out-of-scope vehicle", body = Problem)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(vin): Path<String>,
) -> Result<Json<Vec<ConsentView>>, ApiError> {
    principal.require(&[Role::Owner, Role::Auditor])?;
    registered(&state, &principal, &vin).await?;
    Ok(Json(queries::consents(&state.db, &vin).await?))
}
