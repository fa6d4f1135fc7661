//! The OpenAPI document: built from the handlers' annotations, served at `/openapi.json`, browsable
//! at `/docs` (Swagger UI with its assets compiled in: works offline), committed as `openapi/openapi.json`.

use super::state::AppState;
use super::{audit, broadcasts, commands, consents, devices, health, vehicle_data, vehicles, webhooks};
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "tacho", description = "Event-sourced command and vehicle-state service for connected vehicles. \
        Every route but the health and documentation routes needs `Authorization: Bearer <jwt>` (HS256; claims \
        `sub`, `roles`, optional `vins`: the vehicles an owner or dealer sees; optional `fleet`: a dealer that sees \
        every vehicle). Errors are RFC 9457 `application/problem+json` with a stable `code`."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "vehicles", description = "Registry and lifecycle"), (name = "devices", description = "Devices fitted to vehicles"),
         (name = "consents", description = "Consents per subject and purpose"), (name = "commands", description = "Remote commands"),
         (name = "vehicle data", description = "State, history and events vehicles report"),
         (name = "broadcasts", description = "Messages to many vehicles"), (name = "subscriptions", description = "Webhooks to partners and services, under the owners' consent"), (name = "audit", description = "The raw log"), (name = "health", description = "Probes"))
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

/// Documents the errors every `/v1` route can answer (401 and 403 for the token; 400, 413, 415 and
/// 422 for a body; 400 for a query; 404 for a path; 408, 500 and 503 for any), the constraints the
/// server checks on VINs and device ids, the links from a created resource to where it is read,
/// and serves every 4xx/5xx as `application/problem+json`, as the server does.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::extensions::Extensions;
        use utoipa::openapi::link::LinkBuilder;
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Schema};
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
                let has = |place: ParameterIn| {
                    operation
                        .parameters
                        .iter()
                        .flatten()
                        .any(|p| std::mem::discriminant(&p.parameter_in) == std::mem::discriminant(&place))
                };
                if has(ParameterIn::Query) {
                    responses
                        .entry("400".into())
                        .or_insert_with(|| problem("An unknown or malformed query parameter (`invalid_query`)"));
                }
                if has(ParameterIn::Path) {
                    responses
                        .entry("404".into())
                        .or_insert_with(|| problem("No such resource, or a malformed id (`not_found`)"));
                }
                responses
                    .entry("408".into())
                    .or_insert_with(|| problem("The request took longer than the server allows (`request_timeout`)"));
                responses.entry("500".into()).or_insert_with(|| problem("An unexpected error, logged (`internal`)"));
                responses
                    .entry("503".into())
                    .or_insert_with(|| problem("The database is unavailable or the server is full (`unavailable`)"));
                let id = operation.operation_id.clone().unwrap_or_default();
                for parameter in operation.parameters.iter_mut().flatten() {
                    let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() else { continue };
                    if let Some(pattern) = PATTERNS.iter().find(|(name, _)| *name == parameter.name).map(|(_, p)| *p) {
                        object.pattern = Some(pattern.to_owned());
                    }
                    if let Some((_, _, values)) =
                        enums().into_iter().find(|(op, name, _)| *op == id && *name == parameter.name)
                    {
                        object.enum_values = Some(values.into_iter().map(serde_json::Value::from).collect());
                    }
                }
                if operation.request_body.is_some() {
                    responses.entry("400".into()).or_insert_with(|| problem("The body is not JSON (`invalid_json`)"));
                    responses
                        .entry("413".into())
                        .or_insert_with(|| problem("The body exceeds 64 KiB (`payload_too_large`)"));
                    responses
                        .entry("415".into())
                        .or_insert_with(|| problem("The body is not `application/json` (`unsupported_media_type`)"));
                    responses.entry("422".into()).or_insert_with(|| {
                        problem("The body does not match the schema (`invalid_body`) or is nested deeper than 32 levels (`too_deep`)")
                    });
                }
            }
        }
        if let Some(components) = openapi.components.as_mut() {
            for (schema_name, values) in enums().into_iter().map(|(schema, field, values)| ((schema, field), values)) {
                let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema_name.0) else {
                    continue;
                };
                if let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(schema_name.1) {
                    field.enum_values = Some(values.into_iter().map(serde_json::Value::from).collect());
                }
            }
            for schema in components.schemas.values_mut() {
                if let RefOr::T(Schema::Object(object)) = schema {
                    for (name, pattern) in PATTERNS {
                        if let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(name) {
                            field.pattern = Some(pattern.to_owned());
                        }
                    }
                }
            }
        }
        for (path, method, status, name, operation_id, parameters) in LINKS {
            let Some(item) = openapi.paths.paths.get_mut(path) else { continue };
            let operation = match method {
                "post" => item.post.as_mut(),
                _ => item.put.as_mut(),
            };
            let Some(RefOr::T(response)) = operation.and_then(|o| o.responses.responses.get_mut(status)) else {
                continue;
            };
            // utoipa 5.5 writes `operation_id` (snake case) for a link's operation: the spec's name,
            // `operationId`, goes in by hand.
            let mut target = Extensions::default();
            target.insert("operationId".to_owned(), serde_json::Value::from(operation_id));
            let link = parameters
                .iter()
                .fold(LinkBuilder::new().extensions(Some(target)), |link, (name, value)| link.parameter(*name, *value));
            response.links.insert(name.to_owned(), RefOr::T(link.build()));
        }
    }
}

/// Constraints the server checks on values of these names, wherever they are a path parameter or a
/// body field.
const PATTERNS: [(&str, &str); 3] = [
    ("vin", crate::domain::vin::PATTERN),
    ("device_id", "^[A-Za-z0-9._-]{1,64}$"),
    ("purpose", crate::domain::consent::Purpose::PATTERN),
];

/// The values the server accepts for a body field (schema, field) or a query parameter (operation,
/// parameter).
fn enums() -> [(&'static str, &'static str, Vec<&'static str>); 2] {
    use crate::domain::command::{catalogue, status};
    [
        ("RequestBody", "name", catalogue::NAMES.to_vec()),
        ("list_vehicle_commands", "status", status::ALL.iter().map(|s| s.as_str()).collect()),
    ]
}

/// Where a created resource is read: (path, method, status, link name, operation, parameters).
type LinkSpec =
    (&'static str, &'static str, &'static str, &'static str, &'static str, &'static [(&'static str, &'static str)]);

const LINKS: [LinkSpec; 7] = [
    ("/v1/vehicles", "post", "201", "GetVehicle", "get_vehicle", &[("vin", "$response.body#/vin")]),
    (
        "/v1/vehicles/{vin}/commands",
        "post",
        "202",
        "GetCommand",
        "get_command",
        &[("id", "$response.body#/command_id")],
    ),
    (
        "/v1/vehicles/{vin}/commands",
        "post",
        "202",
        "CommandEvents",
        "command_events",
        &[("id", "$response.body#/command_id")],
    ),
    ("/v1/vehicles/{vin}/commands", "post", "202", "CancelCommand", "cancel", &[("id", "$response.body#/command_id")]),
    (
        "/v1/vehicles/{vin}/commands",
        "post",
        "200",
        "GetCommand",
        "get_command",
        &[("id", "$response.body#/command_id")],
    ),
    (
        "/v1/vehicles/{vin}/devices",
        "post",
        "201",
        "GetDevice",
        "get_device",
        &[("device_id", "$response.body#/device_id")],
    ),
    (
        "/v1/vehicles/{vin}/consents/{purpose}",
        "put",
        "200",
        "ListConsents",
        "list_consents",
        &[("vin", "$request.path.vin")],
    ),
];

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
        .merge(webhooks::router())
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
