//! The OpenAPI document: built from the handlers' annotations, served at `/openapi.json`, browsable
//! at `/docs` (Swagger UI with its assets compiled in: works offline), committed as `openapi/openapi.json`.

use super::state::AppState;
use super::{audit, commands, consents, devices, health, vehicles};
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "tacho", description = "Event-sourced command and vehicle-state service for connected vehicles. \
        Every route but the health and documentation routes needs `Authorization: Bearer <jwt>` (HS256; claims \
        `sub`, `roles`, optional `vins`). Errors are RFC 9457 `application/problem+json` with a stable `code`."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "vehicles", description = "Registry and lifecycle"), (name = "devices", description = "Devices fitted to vehicles"),
         (name = "consents", description = "Consents per subject and purpose"), (name = "commands", description = "Remote commands"),
         (name = "audit", description = "The raw log"), (name = "health", description = "Probes"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// Every API route, with its documentation.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(vehicles::router())
        .merge(devices::router())
        .merge(consents::router())
        .merge(commands::router())
        .merge(audit::router())
        .merge(health::router())
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn spec_json() -> String {
    let (_, spec) = api_router().split_for_parts();
    let mut json = serde_json::to_string_pretty(&spec).unwrap_or_default();
    json.push('\n');
    json
}

/// `/openapi.json` and `/docs`.
pub fn docs_router(spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    SwaggerUi::new("/docs").url("/openapi.json", spec).into()
}
