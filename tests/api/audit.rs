//! The raw log for auditors.

use crate::contract;
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

contract!(an_auditor_reads_a_stream_with_actor_and_request_id);
async fn an_auditor_reads_a_stream_with_actor_and_request_id(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let response = app.command(VIN, "alice", json!({"name": "lock_doors"})).await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["command_id"].as_str().unwrap();
    let stream: Vec<Value> =
        app.get(&format!("/v1/audit/streams/Command/{id}"), &app.auditor()).await.json().await.unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0]["event_type"], "CommandRequested");
    assert_eq!(stream[0]["sequence"], 1);
    assert_eq!(stream[0]["metadata"]["actor"], "alice");
    assert_eq!(stream[0]["metadata"]["request_id"], request_id);
    assert_eq!(stream[0]["payload"]["CommandRequested"]["consent_version"], 1);
    assert_problem(app.get("/v1/audit/streams/Command/nope", &app.auditor()).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    assert_problem(app.get("/v1/audit/streams/Bogus/x", &app.auditor()).await, StatusCode::NOT_FOUND, "not_found")
        .await;
}

contract!(the_global_feed_pages_through_every_event_in_commit_order);
async fn the_global_feed_pages_through_every_event_in_commit_order(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    app.register(VIN2).await;
    let total: i64 = app.scalar("SELECT count(*) FROM events").await;
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page: Value =
            app.get(&format!("/v1/audit/events?after={after}&limit=2"), &app.auditor()).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        seen.extend(items.iter().map(|e| e["position"].as_i64().unwrap()));
        after = page["next_after"].as_i64().unwrap();
    }
    assert_eq!(seen.len() as i64, total);
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(seen, sorted, "single writer here: commit order equals position order");
    assert_problem(
        app.get("/v1/audit/events?after=999999", &app.auditor()).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

contract!(verify_finds_nothing_on_a_healthy_log_and_names_a_tampered_read_model);
async fn verify_finds_nothing_on_a_healthy_log_and_names_a_tampered_read_model(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let created: Value = app.command(VIN, "alice", json!({"name": "lock_doors"})).await.json().await.unwrap();
    let id = created["command_id"].as_str().unwrap().to_owned();
    let healthy: Value = app.post("/v1/audit/verify", &app.auditor(), json!({})).await.json().await.unwrap();
    assert_eq!(healthy["streams"], 3);
    assert_eq!(healthy["events"], 4);
    assert_eq!(healthy["mismatches"], json!([]));

    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    let sql = "UPDATE rm_commands SET status = 'succeeded' WHERE command_id = $1";
    on_db!(app.db(), |p| sqlx::query(sql).bind(uuid).execute(p).await.map(|_| ())).unwrap();
    let sql = "UPDATE rm_vehicles SET status = 'suspended'";
    on_db!(app.db(), |p| sqlx::query(sql).execute(p).await.map(|_| ())).unwrap();
    let report: Value = app.post("/v1/audit/verify", &app.auditor(), json!({})).await.json().await.unwrap();
    let mismatches = report["mismatches"].as_array().unwrap();
    assert_eq!(mismatches.len(), 2, "{report}");
    assert!(mismatches
        .iter()
        .any(|m| m["aggregate_id"] == id.as_str() && m["problem"].as_str().unwrap().contains("succeeded")));
    assert!(mismatches.iter().any(|m| m["aggregate_type"] == "Vehicle"));

    let one: Value = app
        .post("/v1/audit/verify", &app.auditor(), json!({"aggregate_type": "Consent", "id": VIN}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["streams"], 1);
    assert_eq!(one["mismatches"], json!([]));
    assert_problem(app.post("/v1/audit/verify", &app.dealer(), json!({})).await, StatusCode::FORBIDDEN, "forbidden")
        .await;
}
