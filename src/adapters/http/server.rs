//! Serving the router (HTTP/1.1) with bounds on what one client can hold: a cap on open
//! connections (the next waits in the listen backlog), a deadline for a request's headers (a client
//! trickling them, or idling between requests, holds nothing for long), a deadline for a whole
//! request (long polls get theirs plus a margin), no NUL in a URI (PostgreSQL refuses it in text),
//! and a graceful stop that lets requests in flight finish.

use super::error::{ApiError, ErrorCode};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How much the HTTP server gives its clients.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time for a request's headers to arrive.
    pub header_timeout: Duration,
    /// Time for a whole request (a long poll: its `wait` plus this).
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then waits up to `drain` for requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: the header deadline bounds every idle or slow connection there, while an
    // HTTP/2 connection (cleartext, prior knowledge) could sit idle on its permit for good. A
    // proxy in front may speak HTTP/2 to clients.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP connections still open after {drain:?}; closing them");
    }
    Ok(())
}

/// Refuses a URI holding an encoded NUL before any handler sees it: in the path as `404 not_found`,
/// in the query as `400 invalid_query`.
pub async fn no_nul(request: Request, next: Next) -> Response {
    let has_nul = |text: &str| text.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(b"%00"));
    if has_nul(request.uri().path()) {
        return ApiError::new(ErrorCode::NotFound, "no such route or resource (NUL in the path)").into_response();
    }
    if request.uri().query().is_some_and(has_nul) {
        return ApiError::new(ErrorCode::InvalidQuery, "the query holds a NUL character").into_response();
    }
    next.run(request).await
}

/// Ends a request that outlives its deadline with a problem: the server's limit, or for a long poll
/// (`?wait=S`, at most 60) S seconds more. Server-sent events are answered before the deadline and
/// stream on, bounded by [`super::capacity::Capacity`] instead.
pub async fn deadline(limit: Duration, request: Request, next: Next) -> Response {
    let wait = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("wait=")))
        .and_then(|w| w.parse::<u64>().ok())
        .map_or(Duration::ZERO, |w| Duration::from_secs(w.min(60)));
    let limit = limit.saturating_add(wait);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(ErrorCode::RequestTimeout, format!("the request took longer than {limit:?}")).into_response()
        }
    }
}
