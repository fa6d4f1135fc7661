//! HTTP API (axum + utoipa): one file per resource, routes and OpenAPI from one source.

pub mod audit;
pub mod auth;
pub mod broadcasts;
pub mod capacity;
pub mod commands;
pub mod consents;
pub mod devices;
pub mod error;
pub mod health;
pub mod openapi;
pub mod server;
pub mod state;
pub mod vehicle_data;
pub mod vehicles;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use error::{ApiError, ErrorCode};
use state::AppState;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The whole API with its documentation routes.
pub fn router(state: AppState) -> Router {
    let (api, spec) = openapi::api();
    let request_id = HeaderName::from_static("x-request-id");
    let limit = state.request_timeout;
    api.merge(openapi::docs_router(spec))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take this method")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(server::no_nul))
        .layer(axum::middleware::from_fn(move |request, next| server::deadline(limit, request, next)))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
