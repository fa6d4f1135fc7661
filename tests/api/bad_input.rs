//! Malformed, unknown, oversized and mistyped input: a clear problem+json and nothing changed.

use crate::contract;
use crate::helpers::*;
use reqwest::StatusCode;

async fn raw(app: &TestApp, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/vehicles", app.base))
        .bearer_auth(app.factory())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

contract!(bad_bodies_get_stable_codes_and_change_nothing);
async fn bad_bodies_get_stable_codes_and_change_nothing(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    assert_problem(raw(&app, "application/json", "{\"vin\": ").await, StatusCode::BAD_REQUEST, "invalid_json").await;
    let unknown = r#"{"vin":"1HGCM82633A004352","model":"A","model_year":2026,"market":"EU","colour":"red"}"#;
    let problem =
        assert_problem(raw(&app, "application/json", unknown).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
            .await;
    assert!(problem["detail"].as_str().unwrap().contains("colour"));
    let mistyped = r#"{"vin":"1HGCM82633A004352","model":"A","model_year":"new","market":"EU"}"#;
    assert_problem(raw(&app, "application/json", mistyped).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    let missing = r#"{"vin":"1HGCM82633A004352"}"#;
    assert_problem(raw(&app, "application/json", missing).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    assert_problem(
        raw(&app, "text/plain", "hello").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let huge =
        format!(r#"{{"vin":"1HGCM82633A004352","model":"{}","model_year":2026,"market":"EU"}}"#, "x".repeat(100_000));
    assert_problem(raw(&app, "application/json", huge).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let old = r#"{"vin":"1HGCM82633A004352","model":"A","model_year":1800,"market":"EU"}"#;
    assert_problem(raw(&app, "application/json", old).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
        .await;
    let events: i64 = app.scalar("SELECT count(*) FROM events").await;
    assert_eq!(events, 0);
}

contract!(unknown_routes_query_parameters_and_ids_are_problems_too);
async fn unknown_routes_query_parameters_and_ids_are_problems_too(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    assert_problem(app.get("/v1/nothing", &app.dealer()).await, StatusCode::NOT_FOUND, "not_found").await;
    let delete = app.call(reqwest::Method::DELETE, "/v1/vehicles", &app.dealer(), None).await;
    assert_problem(delete, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    assert_problem(app.get("/v1/vehicles?colour=red", &app.dealer()).await, StatusCode::BAD_REQUEST, "invalid_query")
        .await;
    assert_problem(
        app.get("/v1/vehicles?model_year=soon", &app.dealer()).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    assert_problem(
        app.get("/v1/commands/not-a-uuid", &app.owner("alice", &[VIN])).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
