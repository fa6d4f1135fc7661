//! Hostile input, on both stores: every edge refuses what is too deep, too big or malformed before
//! anything is written, a row of the log that does not parse stops no reader, and after each the
//! next ordinary command still succeeds end to end.

use crate::contract;
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tacho::auth::Role;
use tacho::domain::budget::MAX_VALUE_BYTES;
use tacho::sim::{Behaviour, SimVehicle};

/// `levels` nested arrays around a number.
fn nested(levels: usize) -> Value {
    serde_json::from_str(&format!("{}1{}", "[".repeat(levels), "]".repeat(levels))).unwrap()
}

/// `levels` nested arrays as text (serde_json would refuse to build more than 128).
fn nested_text(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

async fn raw_post(app: &TestApp, path: &str, token: &str, body: String) -> reqwest::Response {
    let url = format!("{}{path}", app.base);
    let request = app.client.post(url).bearer_auth(token).header("content-type", "application/json");
    request.body(body).send().await.unwrap()
}

/// A vehicle with alice's consents, online as a simulated vehicle.
async fn online(app: &TestApp, broker: &tacho::adapters::mqtt::broker::BrokerUrl, behaviour: Behaviour) -> SimVehicle {
    let sim = app.online(broker, behaviour).await;
    app.grant(sim.vin(), "alice", "telemetry").await;
    sim
}

contract!(too_deep_or_too_big_values_are_refused_at_every_http_edge_and_nothing_is_written);
async fn too_deep_or_too_big_values_are_refused_at_every_http_edge_and_nothing_is_written(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = online(&app, &broker, Behaviour::default()).await;
    let vin = sim.vin().to_owned();
    let before = app.scalar("SELECT count(*) FROM events").await;
    let owner = app.owner("alice", &[&vin]);
    let commands = format!("/v1/vehicles/{vin}/commands");

    // The reported request: 125 levels inside params (it used to stop every reader of the log).
    let body = format!(r#"{{"name":"configure","params":{{"key":"k","value":{}}}}}"#, nested_text(125));
    assert_problem(raw_post(&app, &commands, &owner, body).await, StatusCode::UNPROCESSABLE_ENTITY, "too_deep").await;
    // Deeper than serde_json reads at all: refused the same way, before parsing.
    let body = format!(r#"{{"name":"configure","params":{{"key":"k","value":{}}}}}"#, nested_text(5000));
    assert_problem(raw_post(&app, &commands, &owner, body).await, StatusCode::UNPROCESSABLE_ENTITY, "too_deep").await;
    // Within the body's depth, over the value's size budget.
    let big = json!({"name": "configure", "params": {"key": "k", "value": "x".repeat(MAX_VALUE_BYTES)}});
    let response = app.post(&commands, &owner, big).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters").await;

    let register = json!({"vin": unique_vin(), "model": "A", "model_year": 2026, "market": "EU",
                          "data_collection": {"a": nested(40)}});
    let response = raw_post(&app, "/v1/vehicles", &app.factory(), register.to_string()).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "too_deep").await;
    let register = json!({"vin": unique_vin(), "model": "A", "model_year": 2026, "market": "EU",
                          "data_collection": {"a": nested(20), "b": "x".repeat(MAX_VALUE_BYTES)}});
    let response = app.post("/v1/vehicles", &app.factory(), register).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let service = app.token("svc", &[Role::Service], None);
    let broadcast = json!({"topic": "weather/warning", "payload": nested(40)}).to_string();
    let response = raw_post(&app, "/v1/broadcasts", &service, broadcast).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "too_deep").await;
    let broadcast = json!({"topic": "weather/warning", "payload": {"text": "x".repeat(MAX_VALUE_BYTES)}});
    let response = app.post("/v1/broadcasts", &service, broadcast).await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    assert_eq!(app.scalar("SELECT count(*) FROM events").await, before, "nothing refused reaches the log");
    app.succeeds(&vin, "lock_doors").await;
}

contract!(hostile_vehicle_messages_become_dead_letters_and_commands_keep_flowing);
async fn hostile_vehicle_messages_become_dead_letters_and_commands_keep_flowing(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let quiet = online(&app, &broker, Behaviour { silence_rate: 1.0, ..Behaviour::default() }).await;
    let vin = quiet.vin().to_owned();
    let response = app.command(&vin, "alice", json!({"name": "honk", "timeout_s": 60})).await;
    let id = response.json::<Value>().await.unwrap()["command_id"].as_str().unwrap().to_owned();
    app.wait_command(&id, "alice", &vin, |s| s == "dispatched").await;

    let response_topic = format!("vehicles/{vin}/commands/honk/response");
    let deep_result = format!(
        r#"{{"command_id":"{id}","status":"succeeded","ts":"{}","result":{}}}"#,
        chrono::Utc::now().to_rfc3339(),
        nested_text(100)
    );
    quiet.publish_raw(&response_topic, deep_result.as_bytes()).await.unwrap();
    let now = chrono::Utc::now();
    let state = format!("vehicles/{vin}/state");
    let report = |signals: Value, ts: chrono::DateTime<chrono::Utc>| {
        json!({"msg_id": uuid::Uuid::new_v4().to_string(), "ts": ts, "signals": signals}).to_string()
    };
    quiet.publish_raw(&state, report(json!({"speed": 1}), now).as_bytes()).await.unwrap();
    let many: serde_json::Map<String, Value> = (0..201).map(|i| (format!("Vehicle.S{i}"), json!(i))).collect();
    quiet.publish_raw(&state, report(Value::Object(many), now).as_bytes()).await.unwrap();
    let future = now + chrono::Duration::hours(1);
    quiet.publish_raw(&state, report(json!({"Vehicle.Speed": 300}), future).as_bytes()).await.unwrap();
    let event = format!(r#"{{"msg_id":"e1","ts":"{}","data":{}}}"#, now.to_rfc3339(), nested_text(60));
    quiet.publish_raw(&format!("vehicles/{vin}/events/breakdown"), event.as_bytes()).await.unwrap();

    let expected = ["too_deep", "invalid_signal", "too_many_signals", "clock_skew", "too_deep"];
    for _ in 0..200 {
        if app.dead_letters(&vin).await.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reasons = app.dead_letters(&vin).await;
    reasons.sort();
    let mut wanted: Vec<String> = expected.iter().map(|r| r.to_string()).collect();
    wanted.sort();
    assert_eq!(reasons, wanted);
    let signals: i64 = on_db!(app.db(), |p| sqlx::query_scalar("SELECT count(*) FROM rm_vehicle_state WHERE vin = $1")
        .bind(&vin)
        .fetch_one(p)
        .await)
    .unwrap();
    assert_eq!(signals, 0, "no refused report reached the state");

    // The refused answer changed nothing; a proper one still completes the command.
    let command = app.wait_command(&id, "alice", &vin, |s| s == "dispatched").await;
    assert_eq!(command["status"], "dispatched");
    quiet.respond("honk", id.parse().unwrap(), tacho::domain::command::AnswerStatus::Succeeded, None).await.unwrap();
    let done = app.wait_command(&id, "alice", &vin, |s| s == "succeeded").await;
    assert_eq!(done["status"], "succeeded");
    let other = online(&app, &broker, Behaviour::default()).await;
    app.succeeds(other.vin(), "lock_doors").await;
}

contract!(a_log_row_that_does_not_parse_stops_no_reader);
async fn a_log_row_that_does_not_parse_stops_no_reader(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = online(&app, &broker, Behaviour::default()).await;
    // As an older version, a restore or a hand edit could have left it: 130 levels, beyond what
    // serde_json reads back.
    let poisoned = uuid::Uuid::new_v4();
    let payload = format!(r#"{{"CommandRequested":{{"params":{}}}}}"#, nested_text(130));
    let sql =
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
               VALUES ('Command', $1, 1, 'CommandRequested', '1', $2, '{}')";
    match app.db() {
        tacho::store::Db::Postgres(pool) => {
            let sql = sql.replace("$2,", "$2::json,");
            sqlx::query(&sql).bind(poisoned.to_string()).bind(&payload).execute(pool).await.unwrap();
        }
        tacho::store::Db::Sqlite(embedded) => {
            sqlx::query(sql).bind(poisoned.to_string()).bind(&payload).execute(&embedded.pool).await.unwrap();
        }
    }
    app.succeeds(sim.vin(), "lock_doors").await;

    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    for subscriber in ["commands", "dispatcher"] {
        let line = format!("tacho_events_passed_over_total{{subscriber=\"{subscriber}\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    // Its stream answers a problem, not a closed connection.
    let response = app.get(&format!("/v1/audit/streams/Command/{poisoned}"), &app.auditor()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let events: Value = response.json().await.unwrap();
    assert!(events[0]["unreadable"]["reason"].as_str().unwrap().contains("recursion"), "{events}");
    let report: Value = app.post("/v1/audit/verify", &app.auditor(), json!({})).await.json().await.unwrap();
    let mismatches = report["mismatches"].as_array().unwrap();
    assert!(
        mismatches.iter().any(|m| m["aggregate_id"] == poisoned.to_string()),
        "audit verify names the row: {report}"
    );
}

contract!(dead_letters_and_idempotency_keys_expire_after_their_documented_periods);
async fn dead_letters_and_idempotency_keys_expire_after_their_documented_periods(store: Store) {
    use tacho::store::facts::{self, DeadLetter};
    let Some(app) = spawn_app(store).await else { return };
    let letter = |topic: &str| DeadLetter {
        topic: topic.into(),
        payload: b"{".to_vec(),
        reason: "malformed",
        detail: "x".into(),
    };
    facts::store(app.db(), &[], &[], &[letter("vehicles/old/state"), letter("vehicles/new/state")]).await.unwrap();
    let long_ago = chrono::Utc::now() - chrono::Duration::days(31);
    let sql = "UPDATE dead_letters SET received_at = $1 WHERE topic = 'vehicles/old/state'";
    on_db!(app.db(), |p| sqlx::query(sql).bind(long_ago).execute(p).await.map(|_| ())).unwrap();

    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    let post = || async {
        let response = app
            .client
            .post(format!("{}/v1/vehicles/{vin}/commands", app.base))
            .bearer_auth(app.owner("alice", &[&vin]))
            .header("idempotency-key", "retry-1")
            .json(&json!({"name": "honk"}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap()["command_id"].as_str().unwrap().to_owned())
    };
    let (first_status, first) = post().await;
    assert_eq!(first_status, StatusCode::ACCEPTED);
    let (replay_status, replayed) = post().await;
    assert_eq!(
        (replay_status, replayed.as_str()),
        (StatusCode::OK, first.as_str()),
        "within its period the key replays"
    );
    let yesterday = chrono::Utc::now() - chrono::Duration::hours(25);
    let sql = "UPDATE command_idempotency SET created_at = $1";
    on_db!(app.db(), |p| sqlx::query(sql).bind(yesterday).execute(p).await.map(|_| ())).unwrap();
    let (status, second) = post().await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(second, first, "an expired key names a new command");

    let retention = tacho::processes::sweep::Retention {
        history: chrono::Duration::hours(168),
        dead_letters: chrono::Duration::days(30),
        idempotency_keys: chrono::Duration::hours(24),
    };
    tacho::processes::sweep::prune(app.db(), retention).await.unwrap();
    let topics: Vec<String> =
        on_db!(app.db(), |p| sqlx::query_scalar("SELECT topic FROM dead_letters").fetch_all(p).await).unwrap();
    assert_eq!(topics, ["vehicles/new/state"]);
    assert_eq!(app.scalar("SELECT count(*) FROM command_idempotency").await, 1, "the key claimed anew is kept");
}

contract!(nul_characters_are_refused_at_every_http_edge);
async fn nul_characters_are_refused_at_every_http_edge(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    let before = app.scalar("SELECT count(*) FROM events").await;
    let body = r#"{"vin":"1HGCM82633A004352","model":"A\u0000B","model_year":2026,"market":"EU"}"#.to_owned();
    assert_problem(
        raw_post(&app, "/v1/vehicles", &app.factory(), body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    let admin = app.token("root", &[Role::Admin], None);
    let suspend = format!("/v1/vehicles/{VIN}/suspend?reason=a%00b");
    assert_problem(app.post(&suspend, &admin, json!({})).await, StatusCode::BAD_REQUEST, "invalid_query").await;
    assert_problem(app.get("/v1/devices/tcu%00", &admin).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.scalar("SELECT count(*) FROM events").await, before);
}

contract!(a_dead_letter_stores_whatever_its_sender_put_in_the_topic);
async fn a_dead_letter_stores_whatever_its_sender_put_in_the_topic(store: Store) {
    use tacho::store::facts::{self, DeadLetter};
    let Some(app) = spawn_app(store).await else { return };
    // rumqttd passes NUL in topics; PostgreSQL refuses NUL in text: storing must not fail the batch.
    let topic = "vehicles/a\0b/state".to_owned();
    let letter = DeadLetter { topic, payload: vec![0, 1, 2], reason: "unknown_topic", detail: "x\0".repeat(40_000) };
    facts::store(app.db(), &[], &[], &[letter]).await.expect("a hostile dead letter is stored");
    let sql = "SELECT topic, detail FROM dead_letters";
    let stored: Vec<(String, String)> = on_db!(app.db(), |p| sqlx::query_as(sql).fetch_all(p).await).unwrap();
    assert_eq!(stored.len(), 1);
    let (topic, detail) = &stored[0];
    assert_eq!(topic, "vehicles/a\u{fffd}b/state");
    assert!(!detail.contains('\0') && detail.chars().count() == 1024, "{}", detail.len());
}
