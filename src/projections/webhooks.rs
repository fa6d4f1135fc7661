//! The webhook subscriptions read model (`rm_webhooks`): one row per subscription, deleted ones
//! included (status `deleted`), for the subscriptions API and the deliverer. In the same
//! transaction it carries out what an event asks of the deliveries, so that a crash never leaves
//! the one without the other: a replay moves the subscription's place back, a resumption starts a
//! new run of failures, a rotation erases the secret that fell out of use, a deletion every secret,
//! the subscription's place in the log and its attempts.

use super::{Projection, ProjectionError};
use crate::domain::streams;
use crate::domain::webhook::{WebhookEvent, WebhookStatus};
use crate::store::log::StoredEvent;
use crate::store::{Conn, Sql};
use crate::webhooks::deliver;
use serde_json::json;
use uuid::Uuid;

/// Keeps `rm_webhooks`.
pub struct WebhooksProjection;

impl WebhooksProjection {
    /// Subscriber name.
    pub const NAME: &'static str = "webhooks";
}

/// The status column of a status.
pub fn status_name(status: &WebhookStatus) -> &'static str {
    match status {
        WebhookStatus::Unknown => "unknown",
        WebhookStatus::Active => "active",
        WebhookStatus::Paused(_) => "paused",
        WebhookStatus::Deleted => "deleted",
    }
}

#[async_trait::async_trait]
impl Projection for WebhooksProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[streams::WEBHOOK]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_webhooks"]
    }

    async fn apply(&self, conn: &mut Conn<'_>, event: &StoredEvent) -> Result<(), ProjectionError> {
        let id = Uuid::parse_str(&event.aggregate_id).map_err(|e| event.undecodable(format!("webhook id: {e}")))?;
        let version = event.sequence;
        match event.decode::<WebhookEvent>()? {
            WebhookEvent::WebhookCreated { principal, endpoint, topics, vins, purpose, secret, at, .. } => {
                let sql = "INSERT INTO rm_webhooks (webhook_id, principal, endpoint, topics, vins, purpose, status, \
                     secret, created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $8, $9) \
                     ON CONFLICT (webhook_id) DO NOTHING";
                Sql::new(sql)
                    .bind(id)
                    .bind(principal)
                    .bind(endpoint.as_str())
                    .bind(json!(topics))
                    .bind(json!(vins))
                    .bind(purpose.map(String::from))
                    .bind(secret)
                    .bind(at)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
            }
            WebhookEvent::WebhookPaused { pause, at } => {
                let sql = "UPDATE rm_webhooks SET status = 'paused', pause = $2, updated_at = $3, version = $4 \
                     WHERE webhook_id = $1";
                Sql::new(sql).bind(id).bind(json!(pause)).bind(at).bind(version).execute(&mut *conn).await?;
            }
            WebhookEvent::WebhookResumed { at, .. } => {
                let sql = "UPDATE rm_webhooks SET status = 'active', pause = NULL, updated_at = $2, version = $3 \
                     WHERE webhook_id = $1";
                Sql::new(sql).bind(id).bind(at).bind(version).execute(&mut *conn).await?;
                deliver::resumed(conn, id, at).await?;
            }
            WebhookEvent::WebhookSecretRotated { secret, previous_until, at } => {
                // The previous secret stops signing now; the one before it is erased.
                let erase =
                    "DELETE FROM webhook_secrets WHERE webhook_id = $1 AND fingerprint <> $2 AND fingerprint = \
                     (SELECT previous_secret FROM rm_webhooks WHERE webhook_id = $1 AND previous_secret <> secret)";
                Sql::new(erase).bind(id).bind(&secret).execute(&mut *conn).await?;
                let sql = "UPDATE rm_webhooks SET previous_secret = secret, previous_until = $3, secret = $2, \
                     updated_at = $4, version = $5 WHERE webhook_id = $1";
                Sql::new(sql)
                    .bind(id)
                    .bind(secret)
                    .bind(previous_until)
                    .bind(at)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
            }
            WebhookEvent::WebhookReplayRequested { from_position, at, .. } => {
                let sql = "UPDATE rm_webhooks SET updated_at = $2, version = $3 WHERE webhook_id = $1";
                Sql::new(sql).bind(id).bind(at).bind(version).execute(&mut *conn).await?;
                deliver::rewind(conn, id, from_position, version).await?;
            }
            WebhookEvent::WebhookDeleted { at, .. } => {
                let sql = "UPDATE rm_webhooks SET status = 'deleted', pause = NULL, updated_at = $2, version = $3 \
                     WHERE webhook_id = $1";
                Sql::new(sql).bind(id).bind(at).bind(version).execute(&mut *conn).await?;
                deliver::deleted(conn, id).await?;
            }
        }
        Ok(())
    }
}
