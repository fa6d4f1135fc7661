//! Bearer JWT (HS256) authentication: claims, roles, VIN scope, and minting for `tacho token`.

use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registers vehicles and devices.
    Factory,
    /// Queries the fleet, replaces parts.
    Dealer,
    /// A vehicle owner's companion app.
    Owner,
    /// A digital service (commands, broadcasts).
    Service,
    /// Reads the raw log.
    Auditor,
    /// Everything.
    Admin,
}

/// The claims tacho reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: user or service id.
    pub sub: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// VIN scope of an owner or dealer; absent = unscoped (dealers), nothing (owners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vins: Option<Vec<String>>,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
}

/// Signs and checks tokens with one HS256 secret.
pub struct AuthKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl AuthKeys {
    /// Keys from the shared secret.
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { encoding: EncodingKey::from_secret(bytes), decoding: DecodingKey::from_secret(bytes), validation }
    }

    /// Mints a token valid for `ttl_s` seconds from `now` (unix seconds).
    pub fn mint(&self, sub: &str, roles: Vec<Role>, vins: Option<Vec<String>>, now: i64, ttl_s: i64) -> String {
        let claims = Claims { sub: sub.to_owned(), roles, vins, exp: now + ttl_s, iat: now };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::new(ErrorCode::TokenExpired, "the bearer token has expired"),
            _ => ApiError::new(ErrorCode::Unauthorized, "the bearer token is not valid"),
        })
    }
}

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

    /// Whether the caller may see `vin`: owners only in their `vins`, dealers in theirs when scoped.
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

    /// Roles that see every vehicle: factory, service, auditor, admin, and a dealer without `vins`.
    fn unscoped(&self) -> bool {
        [Role::Factory, Role::Service, Role::Auditor, Role::Admin].iter().any(|r| self.has(*r))
            || (self.claims.roles.contains(&Role::Dealer) && self.claims.vins.is_none())
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
        let claims = state.auth.verify(token.trim())?;
        let request_id =
            parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned).unwrap_or_default();
        Ok(Self { claims, request_id })
    }
}
