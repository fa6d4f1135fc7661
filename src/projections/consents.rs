//! The consents read model (`rm_consents`): one row per (vin, subject, purpose), granted or revoked.

use super::{Projection, ProjectionError};
use crate::domain::consent::ConsentEvent;
use crate::domain::streams;
use crate::store::log::StoredEvent;
use crate::store::Conn;
use crate::store::Sql;

/// Keeps `rm_consents`.
pub struct ConsentsProjection;

impl ConsentsProjection {
    /// Subscriber name.
    pub const NAME: &'static str = "consents";
}

#[async_trait::async_trait]
impl Projection for ConsentsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[streams::CONSENT]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_consents"]
    }

    async fn apply(&self, conn: &mut Conn<'_>, event: &StoredEvent) -> Result<(), ProjectionError> {
        match event.decode::<ConsentEvent>()? {
            ConsentEvent::ConsentGranted {
                vin,
                subject,
                purpose,
                version,
                legal_basis,
                expires_at,
                granted_by,
                at,
            } => {
                // Where the grant in force began in the log: a renewal of a grant still in force
                // keeps it (webhooks deliver a vehicle's data recorded from there on).
                let sql = "INSERT INTO rm_consents (vin, subject, purpose, status, version, legal_basis, expires_at, \
                     granted_at, granted_by, granted_tx, granted_position) \
                     VALUES ($1, $2, $3, 'granted', $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (vin, subject, purpose) DO UPDATE SET status = 'granted', version = $4, \
                     legal_basis = $5, expires_at = $6, granted_at = $7, granted_by = $8, revoked_at = NULL, \
                     granted_tx = CASE WHEN rm_consents.status = 'granted' AND \
                         (rm_consents.expires_at IS NULL OR rm_consents.expires_at > $7) \
                         THEN rm_consents.granted_tx ELSE $9 END, \
                     granted_position = CASE WHEN rm_consents.status = 'granted' AND \
                         (rm_consents.expires_at IS NULL OR rm_consents.expires_at > $7) \
                         THEN rm_consents.granted_position ELSE $10 END";
                let version = i64::from(version);
                Sql::new(sql)
                    .bind(vin)
                    .bind(subject)
                    .bind(purpose.as_str())
                    .bind(version)
                    .bind(legal_basis)
                    .bind(expires_at)
                    .bind(at)
                    .bind(granted_by)
                    .bind(event.tx_id)
                    .bind(event.position)
                    .execute(&mut *conn)
                    .await?;
            }
            ConsentEvent::ConsentRevoked { subject, purpose, version, at } => {
                let sql = "UPDATE rm_consents SET status = 'revoked', version = $4, revoked_at = $5 \
                     WHERE vin = $1 AND subject = $2 AND purpose = $3";
                Sql::new(sql)
                    .bind(&event.aggregate_id)
                    .bind(subject)
                    .bind(purpose.as_str())
                    .bind(i64::from(version))
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }
}
