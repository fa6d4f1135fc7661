//! The consents read model (`rm_consents`): one row per (vin, subject, purpose), granted or revoked.

use super::{Projection, ProjectionError};
use crate::domain::consent::ConsentEvent;
use crate::store::execute;
use crate::store::log::StoredEvent;
use crate::store::Conn;

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
        &["Consent"]
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
                let sql = "INSERT INTO rm_consents (vin, subject, purpose, status, version, legal_basis, expires_at, \
                     granted_at, granted_by) VALUES ($1, $2, $3, 'granted', $4, $5, $6, $7, $8) \
                     ON CONFLICT (vin, subject, purpose) DO UPDATE SET status = 'granted', version = $4, \
                     legal_basis = $5, expires_at = $6, granted_at = $7, granted_by = $8, revoked_at = NULL";
                let version = i64::from(version);
                execute!(conn, sql, vin, subject, purpose.as_str(), version, legal_basis, expires_at, at, granted_by)?;
            }
            ConsentEvent::ConsentRevoked { subject, purpose, version, at } => {
                let sql = "UPDATE rm_consents SET status = 'revoked', version = $4, revoked_at = $5 \
                     WHERE vin = $1 AND subject = $2 AND purpose = $3";
                execute!(conn, sql, &event.aggregate_id, subject, purpose.as_str(), i64::from(version), at)?;
            }
        }
        Ok(())
    }
}
