//! Who may do what: roles, the claims of a bearer JWT (HS256), and the keys that sign and check
//! them (`tacho token`, the demo, the bench and the HTTP extractor use them).

use jsonwebtoken::{decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It was valid, and has expired.
    #[error("the bearer token has expired")]
    Expired,
    /// It is not signed with tacho's secret, or is malformed.
    #[error("the bearer token is not valid")]
    Invalid,
}

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

    /// The claims of `token`, when it is signed with this secret and not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })
    }
}
