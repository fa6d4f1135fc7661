//! The bearer-token extractor: the authenticated [`Principal`] of a request, its roles and VIN
//! scope (the tokens themselves are [`crate::auth`]'s).

use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::auth::{Claims, Role, TokenError};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use std::collections::HashMap;

/// The authenticated caller of a request, with its request id for the log's metadata.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Verified claims.
    pub claims: Claims,
    /// The request id (`x-request-id`).
    pub request_id: String,
}

impl Principal {
    /// The subject.
    pub fn sub(&self) -> &str {
        &self.claims.sub
    }

    /// Whether the token holds `role` (admin holds every role).
    pub fn has(&self, role: Role) -> bool {
        self.claims.roles.iter().any(|r| *r == role || *r == Role::Admin)
    }

    /// Refuses (403) unless the token holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.has(*r)) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, format!("this route needs one of the roles {roles:?}")))
        }
    }

    /// Whether the caller may see `vin`: owners and dealers only in their `vins` (a fleet dealer: all).
    pub fn sees(&self, vin: &str) -> bool {
        self.unscoped() || self.claims.vins.as_ref().is_some_and(|v| v.iter().any(|x| x == vin))
    }

    /// Refuses with 404, not 403, when `vin` is outside the caller's scope: existence is not leaked.
    pub fn scope(&self, vin: &str) -> Result<(), ApiError> {
        if self.sees(vin) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::VehicleNotFound, format!("vehicle {vin} not found")))
        }
    }

    /// The VIN filter for list queries: `None` when unscoped.
    pub fn vin_filter(&self) -> Option<Vec<String>> {
        if self.unscoped() {
            None
        } else {
            Some(self.claims.vins.clone().unwrap_or_default())
        }
    }

    /// Roles that see every vehicle: factory, service, auditor, admin, and a dealer granted the
    /// `fleet` claim (and no owner role: an owner's rights stay with its own vehicles). A dealer
    /// without it sees its `vins`, and none when it has none: being fleet-wide is never the default
    /// of a claim left out.
    fn unscoped(&self) -> bool {
        [Role::Factory, Role::Service, Role::Auditor, Role::Admin].iter().any(|r| self.has(*r))
            || (self.claims.fleet
                && self.claims.roles.contains(&Role::Dealer)
                && !self.claims.roles.contains(&Role::Owner))
    }

    /// Metadata written with every event this caller causes.
    pub fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("actor".to_owned(), self.claims.sub.clone()),
            ("request_id".to_owned(), self.request_id.clone()),
            ("roles".to_owned(), serde_json::to_string(&self.claims.roles).unwrap_or_default()),
        ])
    }
}

/// A request id tacho records: 1 to 128 of `A-Z a-z 0-9 . _ -`.
fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "send a bearer token: Authorization: Bearer <jwt>")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the Authorization header is not 'Bearer <jwt>'"))?;
        let claims = state.auth.verify(token.trim()).map_err(|e| match e {
            TokenError::Expired => ApiError::new(ErrorCode::TokenExpired, e.to_string()),
            TokenError::Invalid | TokenError::ReservedSubject => ApiError::new(ErrorCode::Unauthorized, e.to_string()),
        })?;
        // What a client sends is kept only when it is a plain id; anything else gets tacho's own.
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| valid_request_id(id))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        Ok(Self { claims, request_id })
    }
}
