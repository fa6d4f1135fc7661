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
    /// It is not signed with tacho's secret, not of the configured issuer, or is malformed.
    #[error("the bearer token is not valid")]
    Invalid,
    /// Its subject is empty, too long, or one of tacho's own actors (`tacho:...`, `vehicle:...`).
    #[error("the bearer token's subject is not allowed (empty, over 256 characters, or reserved: tacho:, vehicle:)")]
    ReservedSubject,
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
    /// VIN scope of an owner or dealer: the vehicles it may see (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vins: Option<Vec<String>>,
    /// A dealer that sees the whole fleet: granted on purpose, never by leaving `vins` out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fleet: bool,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Issuer, when tacho is configured with one (`TACHO_AUTH_ISSUER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Subjects starting with these name tacho's own actors (`tacho:dispatcher`, `vehicle:<VIN>`) in the
/// log's metadata: a token cannot claim them.
pub const RESERVED_SUBJECTS: [&str; 2] = ["tacho:", "vehicle:"];

/// Whether `sub` may be a token's subject: 1 to 256 printable characters, not a reserved prefix.
pub fn valid_subject(sub: &str) -> bool {
    !sub.is_empty()
        && sub.len() <= 256
        && !sub.chars().any(char::is_control)
        && !RESERVED_SUBJECTS.iter().any(|prefix| sub.to_ascii_lowercase().starts_with(prefix))
}

/// The longest lifetime of a token `tacho token` mints, in seconds (7 days).
pub const MAX_TOKEN_TTL_S: i64 = 7 * 24 * 3600;

/// Signs and checks tokens with one HS256 secret (and, when set, one issuer).
pub struct AuthKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
}

impl AuthKeys {
    /// Keys from the shared secret.
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let (encoding, decoding) = (EncodingKey::from_secret(bytes), DecodingKey::from_secret(bytes));
        Self { encoding, decoding, validation, issuer: None }
    }

    /// Requires tokens of `issuer` (the `iss` claim), and mints them so.
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        if let Some(issuer) = &issuer {
            self.validation.set_issuer(&[issuer]);
            self.validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        }
        self.issuer = issuer;
        self
    }

    /// Mints a token valid for `ttl_s` seconds from `now` (unix seconds).
    pub fn mint(&self, sub: &str, roles: Vec<Role>, vins: Option<Vec<String>>, now: i64, ttl_s: i64) -> String {
        let claims = Claims {
            sub: sub.to_owned(),
            roles,
            vins,
            fleet: false,
            exp: now + ttl_s,
            iat: now,
            iss: self.issuer.clone(),
        };
        self.sign(&claims)
    }

    /// Mints a fleet-wide token (the `fleet` claim: a dealer then sees every vehicle).
    pub fn mint_fleet(&self, sub: &str, roles: Vec<Role>, now: i64, ttl_s: i64) -> String {
        let claims = Claims {
            sub: sub.to_owned(),
            roles,
            vins: None,
            fleet: true,
            exp: now + ttl_s,
            iat: now,
            iss: self.issuer.clone(),
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &Claims) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// The claims of `token`, when it is signed with this secret, of the issuer, not expired, and its
    /// subject is not reserved.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims =
            decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        match valid_subject(&claims.sub) {
            true => Ok(claims),
            false => Err(TokenError::ReservedSubject),
        }
    }
}
