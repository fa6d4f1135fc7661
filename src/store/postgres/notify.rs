//! LISTEN on a PostgreSQL channel for as long as tacho runs, reconnecting after a failure.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Calls `on_payload` with each notification on `channel` until `shutdown`; after a lost connection
/// it waits a second and listens again (callers poll meanwhile, so nothing depends on every wake).
pub async fn listen(pool: PgPool, channel: &'static str, on_payload: impl Fn(&str), shutdown: CancellationToken) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(channel).await {
                Ok(()) => {
                    // Whatever was notified while not listening is lost: the listener reads once now.
                    on_payload("");
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            received = listener.recv() => match received {
                                Ok(notification) => on_payload(notification.payload()),
                                Err(e) => { tracing::warn!(channel, error = %e, "LISTEN connection lost"); break; }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(channel, error = %e, "LISTEN failed"),
            },
            Err(e) => tracing::warn!(channel, error = %e, "LISTEN connection failed; polling meanwhile"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
