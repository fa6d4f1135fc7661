//! Requesting, reading, waiting for, streaming, canceling and listing commands.

use crate::contract;
use crate::helpers::*;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tacho::domain::command::{AnswerStatus, CommandCommand, VehicleAnswer};
use uuid::Uuid;

async fn answer(app: &TestApp, id: &str, status: AnswerStatus) {
    let answer = CommandCommand::RecordAnswer(VehicleAnswer {
        topic_vin: VIN.into(),
        status,
        code: None,
        message: None,
        result: Some(json!({"ok": true})),
        vehicle_ts: None,
        at: chrono::Utc::now(),
    });
    let frameworks = &app.running.state.frameworks;
    frameworks.execute(&frameworks.commands, id, answer, &Default::default()).await.expect("answer recorded");
}

contract!(a_command_is_accepted_with_a_location_and_read_back);
async fn a_command_is_accepted_with_a_location_and_read_back(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let response =
        app.command(VIN, "alice", json!({"name": "set_climate", "params": {"temperature_c": 21.5, "on": true}})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["status"], "requested");
    assert_eq!(location, format!("/v1/commands/{}", created["command_id"].as_str().unwrap()));

    let read: Value = app.get(&location, &app.owner("alice", &[VIN])).await.json().await.unwrap();
    assert_eq!(read["name"], "set_climate");
    assert_eq!(read["params"], json!({"temperature_c": 21.5, "on": true}));
    assert_eq!(read["consent_version"], 1);
    assert_eq!(read["timeout_s"], 30);
    assert_eq!(read["transitions"][0]["status"], "requested");
    assert_problem(app.get(&location, &app.owner("bob", &[VIN])).await, StatusCode::NOT_FOUND, "command_not_found")
        .await;
}

contract!(a_command_without_consent_is_403_and_its_rejection_is_recorded);
async fn a_command_without_consent_is_403_and_its_rejection_is_recorded(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let problem = assert_problem(
        app.command(VIN, "bob", json!({"name": "unlock_doors"})).await,
        StatusCode::FORBIDDEN,
        "consent_missing",
    )
    .await;
    let id = problem["command_id"].as_str().unwrap();
    let read: Value = app.get(&format!("/v1/commands/{id}"), &app.owner("bob", &[VIN])).await.json().await.unwrap();
    assert_eq!(read["status"], "rejected");
    assert_eq!(read["error"]["code"], "consent_missing");
    assert_eq!(read["error"]["by"], "tacho");
    assert_eq!(read["consent_version"], Value::Null);
}

contract!(a_command_for_a_suspended_vehicle_is_409_and_recorded);
async fn a_command_for_a_suspended_vehicle_is_409_and_recorded(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    app.call(Method::POST, &format!("/v1/vehicles/{VIN}/suspend"), &app.factory(), None).await;
    let problem = assert_problem(
        app.command(VIN, "alice", json!({"name": "lock_doors"})).await,
        StatusCode::CONFLICT,
        "vehicle_not_active",
    )
    .await;
    let id = problem["command_id"].as_str().unwrap();
    let read: Value = app.get(&format!("/v1/commands/{id}"), &app.owner("alice", &[VIN])).await.json().await.unwrap();
    assert_eq!(read["error"]["code"], "vehicle_not_active");
}

contract!(unknown_commands_and_out_of_range_parameters_change_nothing);
async fn unknown_commands_and_out_of_range_parameters_change_nothing(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let before: i64 = app.scalar("SELECT count(*) FROM events").await;
    assert_problem(
        app.command(VIN, "alice", json!({"name": "self_destruct"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_command",
    )
    .await;
    for body in [
        json!({"name": "set_climate", "params": {"temperature_c": 35.0, "on": true}}),
        json!({"name": "set_charge_limit", "params": {"percent": 101}}),
        json!({"name": "lock_doors", "params": {"force": true}}),
        json!({"name": "lock_doors", "timeout_s": 0}),
        json!({"name": "lock_doors", "ttl_s": 700000}),
    ] {
        assert_problem(app.command(VIN, "alice", body).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters")
            .await;
    }
    assert_problem(
        app.command(VIN2, "alice", json!({"name": "lock_doors"})).await,
        StatusCode::NOT_FOUND,
        "vehicle_not_found",
    )
    .await;
    let after: i64 = app.scalar("SELECT count(*) FROM events").await;
    assert_eq!(before, after);
}

contract!(an_idempotency_key_returns_the_same_command_and_refuses_another_body);
async fn an_idempotency_key_returns_the_same_command_and_refuses_another_body(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let alice = app.owner("alice", &[VIN]);
    let send = |body: Value| {
        let request = app
            .client
            .post(format!("{}/v1/vehicles/{VIN}/commands", app.base))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "key-1")
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let first = send(json!({"name": "lock_doors"})).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let again = send(json!({"name": "lock_doors"})).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["command_id"], again["command_id"]);
    assert_problem(send(json!({"name": "unlock_doors"})).await, StatusCode::CONFLICT, "idempotency_conflict").await;
    let commands: i64 = app.scalar("SELECT count(*) FROM rm_commands").await;
    assert_eq!(commands, 1);
}

contract!(a_long_poll_returns_when_the_status_changes);
async fn a_long_poll_returns_when_the_status_changes(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let created: Value = app.command(VIN, "alice", json!({"name": "honk"})).await.json().await.unwrap();
    let id = created["command_id"].as_str().unwrap().to_owned();
    let alice = app.owner("alice", &[VIN]);
    let poll_path = format!("/v1/commands/{id}?wait=20");
    let poll = app.get(&poll_path, &alice);
    let answer_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        answer(&app, &id, AnswerStatus::Accepted).await;
    };
    let (response, ()) = tokio::join!(poll, answer_later);
    let read: Value = response.json().await.unwrap();
    assert_eq!(read["status"], "accepted");

    let quick: Value = app.get(&format!("/v1/commands/{id}?wait=1"), &alice).await.json().await.unwrap();
    assert_eq!(quick["status"], "accepted", "no change within the wait: the current state");
    assert_problem(
        app.get(&format!("/v1/commands/{id}?wait=61"), &alice).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

contract!(the_event_stream_sends_every_transition_and_ends_at_a_terminal_state);
async fn the_event_stream_sends_every_transition_and_ends_at_a_terminal_state(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let created: Value = app.command(VIN, "alice", json!({"name": "flash_lights"})).await.json().await.unwrap();
    let id = created["command_id"].as_str().unwrap().to_owned();
    let response = app.get(&format!("/v1/commands/{id}/events"), &app.owner("alice", &[VIN])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let collect = async {
        let mut text = String::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        text
    };
    let drive = async {
        answer(&app, &id, AnswerStatus::Accepted).await;
        answer(&app, &id, AnswerStatus::Succeeded).await;
    };
    let (text, ()) = tokio::time::timeout(std::time::Duration::from_secs(20), async { tokio::join!(collect, drive) })
        .await
        .expect("the stream ends after the terminal state");
    // No dispatcher runs here: the vehicle's first answer implies the dispatch.
    let statuses: Vec<&str> = ["requested", "dispatched", "accepted", "succeeded"]
        .into_iter()
        .filter(|s| text.contains(&format!("\"status\":\"{s}\"")))
        .collect();
    assert_eq!(statuses, ["requested", "dispatched", "accepted", "succeeded"], "{text}");
    assert_eq!(text.matches("event: transition").count(), 4, "{text}");
}

contract!(a_command_can_be_canceled_until_the_vehicle_accepts);
async fn a_command_can_be_canceled_until_the_vehicle_accepts(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let alice = app.owner("alice", &[VIN]);
    let first: Value = app.command(VIN, "alice", json!({"name": "lock_doors"})).await.json().await.unwrap();
    let id = first["command_id"].as_str().unwrap();
    assert_problem(
        app.post(&format!("/v1/commands/{id}/cancel"), &app.owner("bob", &[VIN]), json!({})).await,
        StatusCode::NOT_FOUND,
        "command_not_found",
    )
    .await;
    let canceled: Value = app.post(&format!("/v1/commands/{id}/cancel"), &alice, json!({})).await.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");

    let second: Value = app.command(VIN, "alice", json!({"name": "lock_doors"})).await.json().await.unwrap();
    let id = second["command_id"].as_str().unwrap();
    answer(&app, id, AnswerStatus::Accepted).await;
    assert_problem(
        app.post(&format!("/v1/commands/{id}/cancel"), &alice, json!({})).await,
        StatusCode::CONFLICT,
        "command_not_cancelable",
    )
    .await;
    assert_problem(
        app.post(&format!("/v1/commands/{}/cancel", Uuid::new_v4()), &alice, json!({})).await,
        StatusCode::NOT_FOUND,
        "command_not_found",
    )
    .await;
}

contract!(a_vehicles_commands_are_listed_newest_first_with_a_status_filter);
async fn a_vehicles_commands_are_listed_newest_first_with_a_status_filter(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let created: Value = app.command(VIN, "alice", json!({"name": "honk"})).await.json().await.unwrap();
        ids.push(created["command_id"].as_str().unwrap().to_owned());
    }
    let alice = app.owner("alice", &[VIN]);
    app.post(&format!("/v1/commands/{}/cancel", ids[0]), &alice, json!({})).await;
    let page1: Value = app.get(&format!("/v1/vehicles/{VIN}/commands?page_size=3"), &alice).await.json().await.unwrap();
    let token = page1["next_page_token"].as_str().unwrap();
    let page2: Value = app
        .get(&format!("/v1/vehicles/{VIN}/commands?page_size=3&page_token={token}"), &alice)
        .await
        .json()
        .await
        .unwrap();
    let listed: Vec<String> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["items"].as_array().unwrap())
        .map(|c| c["command_id"].as_str().unwrap().to_owned())
        .collect();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    assert_eq!(page2["next_page_token"], Value::Null);
    let canceled: Value =
        app.get(&format!("/v1/vehicles/{VIN}/commands?status=canceled"), &app.dealer()).await.json().await.unwrap();
    assert_eq!(canceled["items"].as_array().unwrap().len(), 1);
    assert_problem(
        app.get(&format!("/v1/vehicles/{VIN}/commands?status=bogus"), &alice).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

contract!(an_owner_can_neither_command_nor_list_a_vehicle_outside_its_scope);
async fn an_owner_can_neither_command_nor_list_a_vehicle_outside_its_scope(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let mallory = app.owner("mallory", &[VIN2]);
    let path = format!("/v1/vehicles/{VIN}/commands");
    assert_problem(
        app.post(&path, &mallory, json!({"name": "unlock_doors"})).await,
        StatusCode::NOT_FOUND,
        "vehicle_not_found",
    )
    .await;
    assert_problem(app.get(&path, &mallory).await, StatusCode::NOT_FOUND, "vehicle_not_found").await;
    let commands: i64 = app.scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Command'").await;
    assert_eq!(commands, 0, "nothing recorded for an out-of-scope request");
}

contract!(concurrent_requests_with_one_idempotency_key_create_one_command);
async fn concurrent_requests_with_one_idempotency_key_create_one_command(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let alice = app.owner("alice", &[VIN]);
    let responses = futures::future::join_all((0..8).map(|_| {
        app.client
            .post(format!("{}/v1/vehicles/{VIN}/commands", app.base))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "same")
            .json(&json!({"name": "honk"}))
            .send()
    }))
    .await;
    let mut ids = std::collections::BTreeSet::new();
    for response in responses {
        let response = response.unwrap();
        assert!(matches!(response.status(), StatusCode::ACCEPTED | StatusCode::OK), "{}", response.status());
        let body: Value = response.json().await.unwrap();
        ids.insert(body["command_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
}
