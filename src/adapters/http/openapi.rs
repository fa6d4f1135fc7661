//! The OpenAPI document: built from the handlers' annotations, served at `/openapi.json`, browsable
//! at `/docs` (Swagger UI with its assets compiled in: works offline), committed as `openapi/openapi.json`.

use super::state::AppState;
use super::{audit, broadcasts, commands, consents, devices, health, vehicle_data, vehicles};
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
         (name = "vehicle data", description = "State, history and events vehicles report"),
         (name = "broadcasts", description = "Messages to many vehicles"), (name = "audit", description = "The raw log"), (name = "health", description = "Probes"))
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

/// Documents the errors every `/v1` route can answer (401 for the token; 400, 413 and 415 for a
/// body) and serves every 4xx/5xx as `application/problem+json`, as the server does.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(PROBLEM, ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build())
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for (status, response) in responses.iter_mut() {
                    if let (true, RefOr::T(response)) = (status.starts_with('4') || status.starts_with('5'), response) {
                        if let Some(content) = response.content.shift_remove("application/json") {
                            response.content.insert(PROBLEM.to_owned(), content);
                        }
                    }
                }
                if !path.starts_with("/v1") {
                    continue;
                }
                responses.entry("401".into()).or_insert_with(|| {
                    problem("Missing, invalid (`unauthorized`) or expired (`token_expired`) bearer token")
                });
                responses
                    .entry("403".into())
                    .or_insert_with(|| problem("The token's roles do not allow this route (`forbidden`)"));
                if operation.request_body.is_some() {
                    responses.entry("400".into()).or_insert_with(|| problem("The body is not JSON (`invalid_json`)"));
                    responses
                        .entry("413".into())
                        .or_insert_with(|| problem("The body exceeds 64 KiB (`payload_too_large`)"));
                    responses
                        .entry("415".into())
                        .or_insert_with(|| problem("The body is not `application/json` (`unsupported_media_type`)"));
                    responses
                        .entry("422".into())
                        .or_insert_with(|| problem("The body does not match the schema (`invalid_body`)"));
                }
            }
        }
    }
}

const PROBLEM: &str = "application/problem+json";

/// Every API route, with its documentation.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(vehicles::router())
        .merge(devices::router())
        .merge(consents::router())
        .merge(commands::router())
        .merge(vehicle_data::router())
        .merge(broadcasts::router())
        .merge(audit::router())
        .merge(health::router())
}

/// The API routes and their finished OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut spec) = api_router().split_for_parts();
    // After the merge: the modifier needs every route's operations.
    ProblemResponses.modify(&mut spec);
    (router, spec)
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn spec_json() -> String {
    let (_, spec) = api();
    let mut json = serde_json::to_string_pretty(&spec).unwrap_or_default();
    json.push('\n');
    json
}

/// `/openapi.json` and `/docs`.
pub fn docs_router(spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    SwaggerUi::new("/docs").url("/openapi.json", spec).into()
}
