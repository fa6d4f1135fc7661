//! End to end over the real Mosquitto and PostgreSQL: commands reach simulated vehicles, their
//! answers, state, events and Last Will come back as events.

use crate::contract;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tacho::domain::command::AnswerStatus;
use tacho::sim::{Behaviour, SimVehicle};
use tacho::store::leases::Lease;

const TERMINAL: [&str; 7] = ["succeeded", "failed", "rejected", "timed_out", "expired", "interrupted", "canceled"];

fn terminal(status: &str) -> bool {
    TERMINAL.contains(&status)
}

fn statuses(command: &Value) -> Vec<String> {
    command["transitions"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap().to_owned()).collect()
}

fn silent() -> Behaviour {
    Behaviour { silence_rate: 1.0, ..Behaviour::default() }
}

contract!(a_command_reaches_the_vehicle_and_succeeds);
async fn a_command_reaches_the_vehicle_and_succeeds(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, Behaviour::default()).await;
    let id =
        app.request(sim.vin(), json!({"name": "set_climate", "params": {"temperature_c": 21.5, "on": true}})).await;
    let done = app.wait_command(&id, "alice", sim.vin(), terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(statuses(&done), ["requested", "dispatched", "accepted", "succeeded"]);
    assert_eq!(done["result"], json!({"simulated": true}));
    let received = sim.requests();
    assert_eq!(received.len(), 1);
    let request = &received[0].request;
    assert_eq!(request.command_id.to_string(), id);
    assert_eq!(request.name, "set_climate");
    assert_eq!(request.params, json!({"temperature_c": 21.5, "on": true}));
    assert_eq!((request.expires_at - request.issued_at).num_seconds(), 30);
    assert_eq!(received[0].correlation_data.as_deref(), Some(id.as_bytes()), "v5 correlation data = command id");
    let response_topic = format!("vehicles/{}/commands/set_climate/response", sim.vin());
    assert_eq!(received[0].response_topic.as_deref(), Some(response_topic.as_str()));
    assert_eq!(received[0].message_expiry, Some(30));
}

contract!(the_vehicle_fails_or_rejects_a_command_with_its_code);
async fn the_vehicle_fails_or_rejects_a_command_with_its_code(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let failing = app.online(&broker, Behaviour { fail_rate: 1.0, ..Behaviour::default() }).await;
    let id = app.request(failing.vin(), json!({"name": "start_charging"})).await;
    let failed = app.wait_command(&id, "alice", failing.vin(), terminal).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], json!({"code": "simulated_failure", "message": null, "by": "vehicle"}));

    let refusing = app.online(&broker, Behaviour { reject_rate: 1.0, ..Behaviour::default() }).await;
    let id = app.request(refusing.vin(), json!({"name": "unlock_doors"})).await;
    let rejected = app.wait_command(&id, "alice", refusing.vin(), terminal).await;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["error"]["by"], "vehicle");
    assert_eq!(statuses(&rejected), ["requested", "dispatched", "rejected"]);
}

contract!(a_silent_vehicle_times_out_and_its_late_answer_is_recorded_not_applied);
async fn a_silent_vehicle_times_out_and_its_late_answer_is_recorded_not_applied(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, silent()).await;
    let id = app.request(sim.vin(), json!({"name": "honk", "timeout_s": 1})).await;
    let timed_out = app.wait_command(&id, "alice", sim.vin(), terminal).await;
    assert_eq!(timed_out["status"], "timed_out");
    sim.respond("honk", id.parse().unwrap(), AnswerStatus::Succeeded, None).await.unwrap();
    for _ in 0..100 {
        let command = app.wait_command(&id, "alice", sim.vin(), terminal).await;
        if !command["late_answers"].as_array().unwrap().is_empty() {
            assert_eq!(command["status"], "timed_out");
            assert_eq!(command["late_answers"][0]["status"], "succeeded");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the late answer was not recorded");
}

contract!(an_offline_vehicle_fails_fast_or_queues_until_it_comes_online);
async fn an_offline_vehicle_fails_fast_or_queues_until_it_comes_online(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    let fast = app.request(&vin, json!({"name": "flash_lights"})).await;
    let failed = app.wait_command(&fast, "alice", &vin, terminal).await;
    assert_eq!(failed["error"]["code"], "vehicle_offline");

    let queued = app.request(&vin, json!({"name": "lock_doors", "store_and_forward": true})).await;
    app.wait_command(&queued, "alice", &vin, |s| s == "queued").await;
    let sim = SimVehicle::connect(&broker, &vin, Behaviour::default()).await.unwrap();
    let done = app.wait_command(&queued, "alice", &vin, terminal).await;
    assert_eq!(statuses(&done), ["requested", "queued", "dispatched", "accepted", "succeeded"]);
    assert_eq!(sim.requests().len(), 1);
}

contract!(a_queued_command_expires_when_its_ttl_runs_out);
async fn a_queued_command_expires_when_its_ttl_runs_out(store: Store) {
    let Some((app, _, _)) = spawn_app_with_mqtt(store).await else { return };
    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    let id = app.request(&vin, json!({"name": "lock_doors", "store_and_forward": true, "ttl_s": 1})).await;
    let expired = app.wait_command(&id, "alice", &vin, terminal).await;
    assert_eq!(statuses(&expired), ["requested", "queued", "expired"]);
}

contract!(the_last_will_of_a_dropped_vehicle_interrupts_its_command);
async fn the_last_will_of_a_dropped_vehicle_interrupts_its_command(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, silent()).await;
    let vin = sim.vin().to_owned();
    let id = app.request(&vin, json!({"name": "unlock_doors"})).await;
    app.wait_command(&id, "alice", &vin, |s| s == "dispatched").await;
    sim.drop_abruptly();
    let interrupted = app.wait_command(&id, "alice", &vin, terminal).await;
    assert_eq!(interrupted["status"], "interrupted");
    app.wait_connected(&vin, false).await;
}

contract!(a_dispatched_command_is_not_cancelable_a_queued_one_is_and_revoking_consent_cancels_queued_ones);
async fn a_dispatched_command_is_not_cancelable_a_queued_one_is_and_revoking_consent_cancels_queued_ones(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, silent()).await;
    let vin = sim.vin().to_owned();
    let owner = app.owner("alice", &[&vin]);
    let id = app.request(&vin, json!({"name": "honk"})).await;
    app.wait_command(&id, "alice", &vin, |s| s == "dispatched").await;
    let refused = app.post(&format!("/v1/commands/{id}/cancel"), &owner, json!({})).await;
    assert_problem(refused, StatusCode::CONFLICT, "command_not_cancelable").await;
    let still: Value = app.get(&format!("/v1/commands/{id}"), &owner).await.json().await.unwrap();
    assert_eq!(still["status"], "dispatched", "the vehicle has it: it is not said to be canceled");

    sim.drop_abruptly();
    app.wait_connected(&vin, false).await;
    let waiting = app.request(&vin, json!({"name": "honk", "store_and_forward": true})).await;
    app.wait_command(&waiting, "alice", &vin, |s| s == "queued").await;
    let canceled: Value =
        app.post(&format!("/v1/commands/{waiting}/cancel"), &owner, json!({})).await.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled", "queued: the vehicle never got it");

    let queued = app.request(&vin, json!({"name": "lock_doors", "store_and_forward": true})).await;
    app.wait_command(&queued, "alice", &vin, |s| s == "queued").await;
    let revoke = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/vehicles/{vin}/consents/remote_commands"),
            &app.owner("alice", &[&vin]),
            None,
        )
        .await;
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let done = app.wait_command(&queued, "alice", &vin, terminal).await;
    assert_eq!(done["status"], "canceled");
}

contract!(duplicate_and_out_of_order_answers_are_idempotent);
async fn duplicate_and_out_of_order_answers_are_idempotent(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, silent()).await;
    let vin = sim.vin().to_owned();
    let id = app.request(&vin, json!({"name": "lock_doors"})).await;
    app.wait_command(&id, "alice", &vin, |s| s == "dispatched").await;
    let command_id = id.parse().unwrap();
    sim.respond("lock_doors", command_id, AnswerStatus::Succeeded, None).await.unwrap();
    sim.respond("lock_doors", command_id, AnswerStatus::Accepted, None).await.unwrap();
    sim.respond("lock_doors", command_id, AnswerStatus::Succeeded, None).await.unwrap();
    sim.respond("lock_doors", command_id, AnswerStatus::InProgress, None).await.unwrap();
    let done = app.wait_command(&id, "alice", &vin, terminal).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Value = app.get(&format!("/v1/commands/{id}"), &app.owner("alice", &[&vin])).await.json().await.unwrap();
    assert_eq!(statuses(&after), ["requested", "dispatched", "succeeded"], "{done}");
    assert_eq!(after["late_answers"], json!([]));
}

contract!(tacho_restarted_mid_command_takes_the_answer_sent_while_it_was_down);
async fn tacho_restarted_mid_command_takes_the_answer_sent_while_it_was_down(store: Store) {
    let Some((app, config, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, silent()).await;
    let vin = sim.vin().to_owned();
    let id = app.request(&vin, json!({"name": "lock_doors", "timeout_s": 60})).await;
    app.wait_command(&id, "alice", &vin, |s| s == "dispatched").await;
    app.stop().await;
    // The broker keeps the answer for tacho's persistent session.
    sim.respond("lock_doors", id.parse().unwrap(), AnswerStatus::Succeeded, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = start(config).await;
    let done = restarted.wait_command(&id, "alice", &vin, terminal).await;
    assert_eq!(done["status"], "succeeded");
}

contract!(a_deadline_that_passed_while_tacho_was_down_times_out_right_after_start);
async fn a_deadline_that_passed_while_tacho_was_down_times_out_right_after_start(store: Store) {
    let Some((app, config, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, silent()).await;
    let vin = sim.vin().to_owned();
    let id = app.request(&vin, json!({"name": "honk", "timeout_s": 2})).await;
    app.wait_command(&id, "alice", &vin, |s| s == "dispatched").await;
    app.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = chrono::Utc::now();
    let restarted = start(config).await;
    let done = restarted.wait_command(&id, "alice", &vin, terminal).await;
    assert_eq!(done["status"], "timed_out");
    let timed_out = done["transitions"].as_array().unwrap().last().unwrap().clone();
    let at: chrono::DateTime<chrono::Utc> = timed_out["at"].as_str().unwrap().parse().unwrap();
    assert!(at >= started, "recorded by the restarted tacho: {timed_out}");
}

contract!(state_reports_and_events_are_visible_through_the_api_with_consent);
async fn state_reports_and_events_are_visible_through_the_api_with_consent(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, Behaviour::default()).await;
    let vin = sim.vin().to_owned();
    let owner = app.owner("alice", &[&vin]);
    let signals = |speed: i64| {
        let Value::Object(map) = json!({"Vehicle.Speed": speed, "Vehicle.CurrentLocation.Latitude": 48.1,
            "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": speed > 10, "Vehicle.Cabin.Infotainment.Media.Played.Source": "FM"})
        else {
            unreachable!()
        };
        map
    };
    sim.report("before-consent", signals(5)).await.unwrap();
    // Refused for lack of consent once it came in (a publish returns before it is even sent).
    for _ in 0..100 {
        if app.dead_letters(&vin).await.contains(&"consent_missing".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.dead_letters(&vin).await, ["consent_missing"]);
    let kept = app
        .scalar(&format!("SELECT count(*) FROM dead_letters WHERE topic LIKE '%{vin}%' AND length(payload) > 0"))
        .await;
    assert_eq!(kept, 0, "what no consent lets in is not kept, not even as a dead letter");
    app.grant(&vin, "alice", "telemetry").await;
    sim.report("m-1", signals(10)).await.unwrap();
    sim.report("m-2", signals(20)).await.unwrap();
    sim.report("m-2", signals(99)).await.unwrap();
    sim.report_event("breakdown", "e-1", json!({"dtc": "P0300"})).await.unwrap();
    let mut state = Value::Null;
    for _ in 0..100 {
        state = app.get(&format!("/v1/vehicles/{vin}/state"), &owner).await.json().await.unwrap();
        if state["signals"]["Vehicle.Speed"]["value"] == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["signals"]["Vehicle.Speed"]["value"], 20, "{state}");
    assert!(state["signals"].get("Vehicle.CurrentLocation.Latitude").is_none(), "no location consent: dropped");
    assert_eq!(state["connection"]["connected"], true);
    let history: Value =
        app.get(&format!("/v1/vehicles/{vin}/state/history?signal=Vehicle.Speed"), &owner).await.json().await.unwrap();
    let history = history.as_array().unwrap_or_else(|| panic!("history: {history}"));
    let speeds: Vec<i64> = history.iter().map(|h| h["value"].as_i64().unwrap()).collect();
    assert_eq!(speeds, [20, 10], "the duplicate m-2 and the report before consent are not stored");
    let all: Value = app.get(&format!("/v1/vehicles/{vin}/state/history"), &owner).await.json().await.unwrap();
    let all = all.as_array().unwrap_or_else(|| panic!("history: {all}"));
    let value = |signal: &str| all.iter().find(|h| h["signal"] == signal).map(|h| h["value"].clone());
    assert_eq!(value("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"), Some(json!(true)), "booleans stay booleans");
    assert_eq!(value("Vehicle.Cabin.Infotainment.Media.Played.Source"), Some(json!("FM")), "strings stay strings");
    let events: Value = app.get(&format!("/v1/vehicles/{vin}/events"), &owner).await.json().await.unwrap();
    assert_eq!(events["items"][0]["kind"], "breakdown");
    assert_eq!(events["items"][0]["data"], json!({"dtc": "P0300"}));
    assert_eq!(app.dead_letters(&vin).await, ["consent_missing"]);
}

contract!(where_a_vehicle_is_is_read_only_while_its_location_consent_is_in_force);
async fn where_a_vehicle_is_is_read_only_while_its_location_consent_is_in_force(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, Behaviour::default()).await;
    let vin = sim.vin().to_owned();
    let owner = app.owner("alice", &[&vin]);
    app.grant(&vin, "alice", "telemetry").await;
    app.grant(&vin, "alice", "location").await;
    // Names in another case, and a location nested in another signal's value.
    let Value::Object(signals) = json!({"Vehicle.Speed": 30, "vehicle.currentlocation.latitude": 48.1,
        "Vehicle.Cabin.Note": {"at": {"Longitude": 11.5}}})
    else {
        unreachable!()
    };
    sim.report("m-1", signals).await.unwrap();
    sim.report_event("breakdown", "e-1", json!({"dtc": "P0300", "where": {"Latitude": 48.1, "road": "A9"}}))
        .await
        .unwrap();
    let read = |path: String| {
        let (app, owner) = (&app, owner.clone());
        async move { app.get(&path, &owner).await.json::<Value>().await.unwrap() }
    };
    let mut state = Value::Null;
    for _ in 0..100 {
        state = read(format!("/v1/vehicles/{vin}/state")).await;
        if state["signals"]["Vehicle.Speed"]["value"] == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["signals"]["vehicle.currentlocation.latitude"]["value"], 48.1, "with consent: {state}");
    assert_eq!(state["signals"]["Vehicle.Cabin.Note"]["value"], json!({"at": {"Longitude": 11.5}}));
    for _ in 0..100 {
        if read(format!("/v1/vehicles/{vin}/events")).await["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The consent revoked: what was admitted under it is no longer shown, to the owner or a dealer.
    let revoked = app.call(Method::DELETE, &format!("/v1/vehicles/{vin}/consents/location"), &owner, None).await;
    assert!(revoked.status().is_success(), "{}", revoked.status());
    for token in [owner.clone(), app.dealer()] {
        let state: Value = app.get(&format!("/v1/vehicles/{vin}/state"), &token).await.json().await.unwrap();
        let shown: Vec<&String> = state["signals"].as_object().unwrap().keys().collect();
        assert_eq!(shown, ["Vehicle.Speed"], "{state}");
        let history: Value = app.get(&format!("/v1/vehicles/{vin}/state/history"), &token).await.json().await.unwrap();
        let signals: Vec<&str> = history.as_array().unwrap().iter().map(|h| h["signal"].as_str().unwrap()).collect();
        assert_eq!(signals, ["Vehicle.Speed"], "{history}");
        let asked = format!("/v1/vehicles/{vin}/state/history?signal=vehicle.currentlocation.latitude");
        let history: Value = app.get(&asked, &token).await.json().await.unwrap();
        assert_eq!(history, json!([]), "asking for it by name does not show it either");
        let events: Value = app.get(&format!("/v1/vehicles/{vin}/events"), &token).await.json().await.unwrap();
        assert_eq!(events["items"][0]["data"], json!({"dtc": "P0300", "where": {"road": "A9"}}), "{events}");
    }
}

contract!(bad_messages_go_to_dead_letters_with_a_reason_and_are_counted);
async fn bad_messages_go_to_dead_letters_with_a_reason_and_are_counted(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, silent()).await;
    let vin = sim.vin().to_owned();
    let stranger = unique_vin();
    app.grant(&vin, "alice", "telemetry").await;
    sim.publish_raw(&format!("vehicles/{vin}/state"), b"{not json").await.unwrap();
    sim.publish_raw(&format!("vehicles/{vin}/state"), &vec![b' '; 70_000]).await.unwrap();
    sim.publish_raw(
        &format!("vehicles/{stranger}/state"),
        br#"{"msg_id":"x","ts":"2026-01-01T00:00:00Z","signals":{"Vehicle.Speed":1}}"#,
    )
    .await
    .unwrap();
    let unknown = json!({"command_id": uuid::Uuid::new_v4(), "status": "succeeded", "ts": "2026-01-01T00:00:00Z"});
    sim.publish_raw(&format!("vehicles/{vin}/commands/honk/response"), unknown.to_string().as_bytes()).await.unwrap();
    // An answer for this vehicle's command sent on another vehicle's topic.
    let id = app.request(&vin, json!({"name": "honk"})).await;
    app.wait_command(&id, "alice", &vin, |s| s == "dispatched").await;
    let foreign = json!({"command_id": id, "status": "succeeded", "ts": "2026-01-01T00:00:00Z"});
    sim.publish_raw(&format!("vehicles/{stranger}/commands/honk/response"), foreign.to_string().as_bytes())
        .await
        .unwrap();
    let mut reasons = Vec::new();
    for _ in 0..100 {
        let mut found = app.dead_letters(&vin).await;
        found.extend(app.dead_letters(&stranger).await);
        found.sort();
        reasons = found;
        if reasons.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reasons, ["malformed", "oversized", "unknown_command", "unregistered_vehicle", "wrong_vehicle"]);
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tacho_dead_letters_total{reason=\"wrong_vehicle\"} 1"), "{metrics}");
    assert!(metrics.contains("tacho_answers_wrong_vehicle_total 1"), "{metrics}");
    let command: Value =
        app.get(&format!("/v1/commands/{id}"), &app.owner("alice", &[&vin])).await.json().await.unwrap();
    assert_eq!(command["status"], "dispatched", "the foreign answer changed nothing");
}

contract!(a_broadcast_is_published_and_recorded);
async fn a_broadcast_is_published_and_recorded(store: Store) {
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, silent()).await;
    let service = app.token("weather-service", &[tacho::auth::Role::Service], None);
    let body = json!({"topic": "weather/warning", "payload": {"level": "storm"}, "expiry_s": 600});
    let response = app.post("/v1/broadcasts", &service, body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let sent: Value = response.json().await.unwrap();
    assert_eq!(sent["mqtt_topic"], "broadcast/weather/warning");
    let id = sent["broadcast_id"].as_str().unwrap();
    let stream: Vec<Value> =
        app.get(&format!("/v1/audit/streams/Broadcast/{id}"), &app.auditor()).await.json().await.unwrap();
    assert_eq!(stream[0]["event_type"], "BroadcastSent");
    assert_eq!(stream[0]["metadata"]["actor"], "weather-service");
    assert_problem(
        app.post("/v1/broadcasts", &service, json!({"topic": "weather/#", "payload": {}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    drop(sim);
}

contract!(a_command_whose_publish_is_not_acknowledged_stays_requested_and_is_sent_later_with_its_id);
async fn a_command_whose_publish_is_not_acknowledged_stays_requested_and_is_sent_later_with_its_id(store: Store) {
    use std::sync::Arc;
    use tacho::adapters::mqtt::broker::BrokerUrl;
    use tacho::adapters::mqtt::link::MqttLink;
    use tacho::adapters::mqtt::publisher::Publisher;
    use tacho::domain::command::{Command, CommandCommand, CommandStatus, RequestCommand};
    use tacho::domain::observation::VehicleFact;
    use tacho::processes::dispatcher::Dispatcher;
    use tacho::store::facts::{self, Observed};
    // No MQTT in the app: the dispatchers under test are the only ones.
    let Some(broker) = test_broker(store).await else { return };
    let Some(app) = spawn_app(store).await else { return };
    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    let online = Observed {
        vin: vin.clone(),
        fact: VehicleFact::ConnectionChanged { online: true, vehicle_ts: None, received_at: chrono::Utc::now() },
    };
    facts::store(app.db(), &[online], &[], &[]).await.unwrap();
    app.wait_connected(&vin, true).await;
    let sim = SimVehicle::connect(&broker, &vin, silent()).await.unwrap();

    let frameworks = &app.running.state.frameworks;
    let id = uuid::Uuid::new_v4();
    let request = CommandCommand::Request(RequestCommand {
        command_id: id,
        vin: vin.clone(),
        name: "honk".into(),
        params: Value::Null,
        timeout_s: 60,
        store_and_forward: false,
        ttl_s: 3600,
        requester: "alice".into(),
        idempotency_key: None,
        at: chrono::Utc::now(),
    });
    frameworks.execute(&frameworks.commands, &id.to_string(), request, &Default::default()).await.unwrap();

    let shutdown = tokio_util::sync::CancellationToken::new();
    let dispatcher = |broker: &BrokerUrl, name: &str| {
        let link = MqttLink {
            publisher: Publisher::start(broker, &format!("test-{name}-{id}"), 1, shutdown.clone()),
            metrics: Arc::default(),
        };
        Dispatcher::new(app.db().clone(), Arc::clone(frameworks), Arc::new(link))
    };
    let broken = dispatcher(&BrokerUrl::parse("mqtt://127.0.0.1:9").unwrap(), "broken");
    assert!(
        broken.dispatch(&id.to_string(), &vin, &Lease::exclusive("dispatcher")).await.is_err(),
        "no PUBACK, no success"
    );
    let command = frameworks.stores.load::<Command>(&id.to_string()).await.unwrap();
    assert_eq!(command.status, CommandStatus::Requested, "an unpublished command is never marked dispatched");

    dispatcher(&broker, "working").dispatch(&id.to_string(), &vin, &Lease::exclusive("dispatcher")).await.unwrap();
    let command = frameworks.stores.load::<Command>(&id.to_string()).await.unwrap();
    assert_eq!(command.status, CommandStatus::Dispatched);
    for _ in 0..100 {
        if let Some(sent) = sim.requests().into_iter().find(|r| r.request.command_id == id) {
            assert_eq!(sent.correlation_data.as_deref(), Some(id.to_string().as_bytes()));
            shutdown.cancel();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the vehicle never received command {id}");
}

contract!(state_history_older_than_the_retention_is_pruned);
async fn state_history_older_than_the_retention_is_pruned(store: Store) {
    use tacho::domain::observation::VehicleFact;
    use tacho::store::facts::{self, Observed};
    let Some(app) = spawn_app(store).await else { return };
    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    let report = |msg_id: &str, age_hours: i64, speed: i64| {
        let Value::Object(signals) = json!({"Vehicle.Speed": speed}) else { unreachable!() };
        let at = chrono::Utc::now() - chrono::Duration::hours(age_hours);
        Observed {
            vin: vin.clone(),
            fact: VehicleFact::StateReported {
                msg_id: msg_id.into(),
                signals,
                vehicle_ts: at,
                received_at: at,
                consent_version: 1,
            },
        }
    };
    facts::store(app.db(), &[report("old", 48, 1), report("new", 1, 2)], &[], &[]).await.unwrap();
    app.running.state.subscriptions.catch_up("vehicle_state").await.unwrap();
    let owner = app.owner("alice", &[&vin]);
    let before: Vec<Value> = app.get(&format!("/v1/vehicles/{vin}/state/history"), &owner).await.json().await.unwrap();
    assert_eq!(before.len(), 2);
    let retention = tacho::processes::sweep::Retention {
        history: chrono::Duration::hours(24),
        dead_letters: chrono::Duration::days(30),
        idempotency_keys: chrono::Duration::hours(24),
    };
    tacho::processes::sweep::prune(app.db(), retention).await.unwrap();
    let after: Vec<Value> = app.get(&format!("/v1/vehicles/{vin}/state/history"), &owner).await.json().await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["value"], 2);
    let state: Value = app.get(&format!("/v1/vehicles/{vin}/state"), &owner).await.json().await.unwrap();
    assert_eq!(state["signals"]["Vehicle.Speed"]["value"], 2, "the last-known state is not history: it stays");
}

/// PostgreSQL only: the embedded store takes one instance.
#[tokio::test]
async fn two_instances_share_the_vehicles_messages_and_dispatch_each_command_once() {
    let store = Store::Postgres;
    let Some((first, config, broker)) = spawn_app_with_mqtt(store).await else { return };
    first.stop().await;
    let group = format!("tacho-{}", uuid::Uuid::new_v4().simple());
    let instance = |n: u32| {
        let mut config = config.clone();
        config.mqtt_shared_group = Some(group.clone());
        config.instance = Some(format!("{group}-{n}"));
        config
    };
    let a = start(instance(1)).await;
    let b = start(instance(2)).await;
    let sim = a.online(&broker, Behaviour::default()).await;
    let vin = sim.vin().to_owned();
    let mut ids = Vec::new();
    for n in 0..10 {
        let app = if n % 2 == 0 { &a } else { &b };
        ids.push(app.request(&vin, json!({"name": "flash_lights"})).await);
    }
    for id in &ids {
        let done = a.wait_command(id, "alice", &vin, terminal).await;
        // The two answers may go to different instances: a stale `accepted` after `succeeded` adds nothing.
        let seen = statuses(&done);
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(&seen[..2], ["requested", "dispatched"], "{done}");
    }
    let received = sim.requests();
    for id in &ids {
        let times = received.iter().filter(|r| r.request.command_id.to_string() == *id).count();
        assert_eq!(times, 1, "command {id} sent {times} times");
    }
    // The vehicle's messages (its online message, 20 or 30 answers) were shared between the two.
    let heard = |app: &TestApp| {
        ["connection", "response"]
            .iter()
            .map(|kind| app.running.state.metrics.get("tacho_mqtt_messages_total", &[("kind", kind)]))
            .sum::<u64>()
    };
    let (by_a, by_b) = (heard(&a), heard(&b));
    assert!(by_a > 0 && by_b > 0, "both instances took vehicle messages: {by_a} and {by_b}");
    // And one instance ran the dispatcher.
    let holders = a.scalar("SELECT count(DISTINCT holder) FROM process_leases WHERE name = 'dispatcher'").await;
    assert_eq!(holders, 1);
    a.stop().await;
    b.stop().await;
}

contract!(a_report_after_another_writer_appended_to_the_vehicles_stream_is_stored_in_sequence);
/// The consumer remembers the last sequence of each vehicle's facts stream it committed; another
/// writer appending meanwhile (another instance) makes its next append collide: it must read the
/// stream's head again and store the report, with the stream's sequences still 1, 2, 3 ...
async fn a_report_after_another_writer_appended_to_the_vehicles_stream_is_stored_in_sequence(store: Store) {
    use tacho::domain::observation::VehicleFact;
    use tacho::store::facts::{self, Observed};
    let Some((app, _, broker)) = spawn_app_with_mqtt(store).await else { return };
    let sim = app.online(&broker, Behaviour::default()).await;
    let vin = sim.vin().to_owned();
    app.grant(&vin, "alice", "telemetry").await;
    let signals = |speed: i64| {
        let Value::Object(map) = json!({"Vehicle.Speed": speed}) else { unreachable!() };
        map
    };
    let stored = |msg_id: &'static str| {
        let app = &app;
        let vin = vin.clone();
        async move {
            for _ in 0..200 {
                let sql = format!(
                    "SELECT count(*) FROM events WHERE aggregate_id = '{vin}' AND CAST(payload AS TEXT) LIKE '%\"{msg_id}\"%'"
                );
                if app.scalar(&sql).await == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("report {msg_id} was not stored");
        }
    };
    sim.report("by-mqtt-1", signals(10)).await.unwrap();
    stored("by-mqtt-1").await;
    // Another writer, not the consumer: its append is not in what the consumer remembers.
    let now = chrono::Utc::now();
    let beside = Observed {
        vin: vin.clone(),
        fact: VehicleFact::StateReported {
            msg_id: "beside".into(),
            signals: signals(20),
            vehicle_ts: now,
            received_at: now,
            consent_version: 1,
        },
    };
    facts::store(app.db(), &[beside], &[], &[]).await.unwrap();
    sim.report("by-mqtt-2", signals(30)).await.unwrap();
    stored("by-mqtt-2").await;
    let sequences =
        format!("SELECT count(*) FROM events WHERE aggregate_type = 'VehicleState' AND aggregate_id = '{vin}'");
    let last =
        format!("SELECT max(sequence) FROM events WHERE aggregate_type = 'VehicleState' AND aggregate_id = '{vin}'");
    let (count, max) = (app.scalar(&sequences).await, app.scalar(&last).await);
    assert!(count >= 3, "the two reports, the one beside them and the connection change: {count}");
    assert_eq!(count, max, "the stream's sequences have no gap");
    assert!(app.dead_letters(&vin).await.is_empty(), "nothing refused: {:?}", app.dead_letters(&vin).await);
}
