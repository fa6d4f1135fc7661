//! Webhooks: subscriptions of partners and services to vehicle and command events, delivered to
//! their HTTPS endpoints as signed CloudEvents, a vehicle's data only under its owner's consent.

pub mod address;
pub mod deliver;
pub mod envelope;
pub mod signing;

use crate::store::{Db, Sql};
use chrono::Utc;
use signing::Secret;
use uuid::Uuid;

/// The signing secrets (`webhook_secrets`), kept out of the log: the log is never edited, and a
/// deleted subscription's secrets must be gone. The log records each secret's fingerprint.
pub struct Secrets {
    db: Db,
}

impl Secrets {
    /// Secrets in `db`.
    pub fn new(db: &Db) -> Self {
        Self { db: db.clone() }
    }

    /// Keeps `secret` for subscription `id`.
    pub async fn add(&self, id: Uuid, secret: &Secret) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO webhook_secrets (webhook_id, fingerprint, secret, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (webhook_id, fingerprint) DO NOTHING";
        Sql::new(sql)
            .bind(id)
            .bind(secret.fingerprint())
            .bind(secret.reveal())
            .bind(Utc::now())
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// The secrets of subscription `id` with the given fingerprints (those in force), in that order.
    pub async fn get(&self, id: Uuid, fingerprints: &[&str]) -> Result<Vec<Secret>, sqlx::Error> {
        let mut secrets = Vec::with_capacity(fingerprints.len());
        for fingerprint in fingerprints {
            let sql = "SELECT secret FROM webhook_secrets WHERE webhook_id = $1 AND fingerprint = $2";
            let row: Option<(String,)> = Sql::new(sql).bind(id).bind(*fingerprint).fetch_optional(&self.db).await?;
            secrets.extend(row.and_then(|(secret,)| Secret::parse(&secret)));
        }
        Ok(secrets)
    }

    /// Erases the secret of subscription `id` with `fingerprint` (one its subscription never took).
    /// The read model erases the others: a rotated-out one at the next rotation, all at deletion.
    pub async fn forget(&self, id: Uuid, fingerprint: &str) -> Result<(), sqlx::Error> {
        let sql = "DELETE FROM webhook_secrets WHERE webhook_id = $1 AND fingerprint = $2";
        Sql::new(sql).bind(id).bind(fingerprint).execute(&self.db).await?;
        Ok(())
    }
}
