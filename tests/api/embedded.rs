//! The embedded default: the in-process broker, `serve --demo`, one process per data file, the
//! generated secret, data across restarts.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tacho::config::Config;

/// tacho as `cargo run --release` runs it: SQLite and the embedded broker (on a free port).
fn embedded_config() -> Config {
    let mut config = config(&fresh_sqlite());
    config.auth_secret = None;
    config.mqtt_url = "embedded".to_owned();
    config.embedded_mqtt_addr = free_port();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_prints_a_working_token_and_its_vehicles_answer_commands() {
    let config = embedded_config();
    let app = start(config.clone()).await;
    let demo = tacho::demo::start(&app.running, 2).await.expect("demo vehicles start");
    let banner = tacho::demo::banner(&config, &app.running, Some(&demo)).expect("banner");
    assert!(banner.contains(&format!("http://{}", app.running.addr)), "{banner}");
    assert!(
        banner.contains(&format!(
            "mqtt://{} (embedded broker, MQTT v5; no device authentication",
            config.embedded_mqtt_addr
        )),
        "{banner}"
    );
    assert!(banner.contains("tacho.db (SQLite"), "{banner}");
    let token = banner.lines().find_map(|l| l.trim().strip_prefix("export TOKEN=")).expect("a token line").to_owned();

    let mut explicit = config.clone();
    explicit.auth_secret = Some(secrecy::SecretString::from(SECRET));
    let without = tacho::demo::banner(&explicit, &app.running, Some(&demo)).expect("banner");
    assert!(!without.contains("export TOKEN="), "no token in the log when the secret is the operator's: {without}");

    let vin = demo.vins[0].clone();
    let path = format!("/v1/vehicles/{vin}/commands");
    let response = app.call(reqwest::Method::POST, &path, &token, Some(json!({"name": "lock_doors"}))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let created: Value = response.json().await.unwrap();
    let id = created["command_id"].as_str().unwrap().to_owned();
    let mut status = String::new();
    for _ in 0..100 {
        let view: Value = app.get(&format!("/v1/commands/{id}?wait=1"), &token).await.json().await.unwrap();
        status = view["status"].as_str().unwrap_or_default().to_owned();
        if status == "succeeded" {
            break;
        }
    }
    assert_eq!(status, "succeeded");
    let state: Value = app.get(&format!("/v1/vehicles/{vin}/state"), &token).await.json().await.unwrap();
    assert_eq!(state["connection"]["connected"], true, "{state}");
    demo.stop().await;
    app.stop().await;
}

#[test]
fn a_taken_mqtt_port_is_refused_with_advice() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let error = tacho::adapters::mqtt::embedded::start(addr).expect_err("the port is taken").to_string();
    assert!(error.contains(&format!("port {} is taken", addr.port())), "{error}");
    assert!(error.contains("TACHO_EMBEDDED_MQTT_ADDR="), "{error}");
    assert!(error.contains("TACHO_MQTT_URL="), "{error}");
}

#[tokio::test]
async fn a_second_tacho_on_the_same_data_file_is_refused() {
    let config = config(&fresh_sqlite());
    let first = tacho::app::database(&config).await.expect("first opens");
    let error = tacho::app::database(&config).await.expect_err("second is refused").to_string();
    assert!(error.contains("another tacho is using"), "{error}");
    drop(first);
    tacho::app::database(&config).await.expect("free again once the first is gone");
}

#[test]
fn the_auth_secret_is_generated_once_per_data_folder_and_kept_private() {
    let mut config = config(&fresh_sqlite());
    config.auth_secret = None;
    let first = config.resolve_auth_secret().expect("generated");
    let again = config.resolve_auth_secret().expect("read back");
    use secrecy::ExposeSecret;
    assert_eq!(first.expose_secret(), again.expose_secret());
    assert!(first.expose_secret().len() >= 32);
    let db = config.sqlite_path().unwrap().unwrap();
    let file = db.parent().unwrap().join("auth-secret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);

    let mut postgres = config.clone();
    postgres.database_url = secrecy::SecretString::from("postgres://postgres@127.0.0.1:5432/tacho".to_owned());
    assert!(postgres.resolve_auth_secret().unwrap_err().to_string().contains("required with PostgreSQL"));
}

#[tokio::test]
async fn data_survives_a_restart_of_the_embedded_store() {
    let config = config(&fresh_sqlite());
    let app = start(config.clone()).await;
    app.ready_vehicle(VIN, "alice").await;
    app.stop().await;

    let app = start(config).await;
    let vehicle: Value = app.get(&format!("/v1/vehicles/{VIN}"), &app.factory()).await.json().await.unwrap();
    assert_eq!(vehicle["status"], "active");
    let consents: Value =
        app.get(&format!("/v1/vehicles/{VIN}/consents"), &app.owner("alice", &[VIN])).await.json().await.unwrap();
    assert_eq!(consents.as_array().map(Vec::len), Some(1), "{consents}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vehicles_connected_to_the_last_embedded_broker_are_disconnected_at_the_next_start() {
    let mut config = embedded_config();
    config.auth_secret = Some(secrecy::SecretString::from(SECRET));
    let app = start(config.clone()).await;
    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    let broker = app.running.broker.clone().expect("the embedded broker");
    let sim = tacho::sim::SimVehicle::connect(&broker, &vin, Default::default()).await.unwrap();
    app.wait_connected(&vin, true).await;
    app.stop().await;
    sim.drop_abruptly();

    // rumqttd cannot be stopped inside a process: the restarted tacho gets a broker of its own.
    config.embedded_mqtt_addr = free_port();
    let app = start(config).await;
    app.wait_connected(&vin, false).await;
}
