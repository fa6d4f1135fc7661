//! Signatures of the Standard Webhooks scheme (<https://www.standardwebhooks.com>): HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}` with the secret's bytes, sent as `v1,<base64>`; while a
//! rotated secret is in its grace period both sign, space-separated, so a receiver holding either
//! verifies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of a secret as shown to its owner.
const PREFIX: &str = "whsec_";

/// A signing secret: random bytes, shown once as `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

impl Secret {
    /// 32 random bytes.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Reads `whsec_<base64>` (or bare base64) as written by [`Self::reveal`].
    pub fn parse(raw: &str) -> Option<Self> {
        let bytes = STANDARD.decode(raw.strip_prefix(PREFIX).unwrap_or(raw)).ok()?;
        (bytes.len() >= 24 && bytes.len() <= 64).then_some(Self(bytes))
    }

    /// The secret as its owner copies it.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// What the log and the API say of it: the first 16 hex digits of its SHA-256, never the secret.
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(&self.0)[..8])
    }

    /// `v1,<base64 HMAC-SHA256>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret in force, space-separated.
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme's published example (standard-webhooks, `spec/standard-webhooks.md`).
    #[test]
    fn the_published_example_signs_as_published() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid secret");
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_generated_secret_reads_back_and_its_fingerprint_is_not_the_secret() {
        let secret = Secret::generate();
        let shown = secret.reveal();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(Secret::parse(&shown), Some(secret.clone()));
        assert_eq!(secret.fingerprint().len(), 16);
        assert!(!shown.contains(&secret.fingerprint()));
        assert!(!format!("{secret:?}").contains(&shown[6..]));
    }

    #[test]
    fn two_secrets_in_force_both_sign() {
        let (a, b) = (Secret::generate(), Secret::generate());
        let header = signature_header(&[a.clone(), b.clone()], "id", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [a.sign("id", 1, b"{}"), b.sign("id", 1, b"{}")]);
    }

    #[test]
    fn short_or_malformed_secrets_are_refused() {
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), None);
        assert_eq!(Secret::parse("whsec_***"), None);
    }
}
