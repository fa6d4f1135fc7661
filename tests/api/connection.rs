//! Connection state converges: connection messages are compared by their times, and any message
//! from a vehicle shows it connected, also after a broker lost every session.

use crate::contract;
use crate::helpers::*;
use crate::servers::{mosquitto_pub, tacho_on, OwnMosquitto};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tacho::sim::{Behaviour, SimVehicle};

contract!(after_a_broker_restart_without_sessions_reporting_vehicles_are_online_and_commands_succeed);
async fn after_a_broker_restart_without_sessions_reporting_vehicles_are_online_and_commands_succeed(store: Store) {
    let Some(mut broker) = OwnMosquitto::start("allow_anonymous true", &[]) else { return };
    let Some(app) = tacho_on(&broker, store).await else { return };
    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    app.grant(&vin, "alice", "telemetry").await;
    let reporting = Behaviour { state_every: Some(Duration::from_millis(200)), ..Behaviour::default() };
    let _sim = SimVehicle::connect(&broker.url(), &vin, reporting).await.unwrap();
    app.wait_connected(&vin, true).await;
    app.succeeds(&vin, "flash_lights").await;

    // Mosquitto stops (publishing every Last Will) and comes back without any session: what the
    // vehicle sends before tacho subscribes again, its `online` message among it, is gone.
    broker.restart();
    let (restarted, since) = (Instant::now(), chrono::Utc::now());
    // The vehicle is back once it reports again; from then on it must show connected.
    loop {
        let vehicle: Value = app.get(&format!("/v1/vehicles/{vin}"), &app.dealer()).await.json().await.unwrap();
        let connection = &vehicle["connection"];
        let last_seen = connection["last_seen"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
        if last_seen.is_some_and(|t| t > since) && connection["connected"] == true {
            break;
        }
        assert!(restarted.elapsed() < Duration::from_secs(15), "not shown connected: {vehicle}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("reporting and connected again {:?} after the broker restarted", restarted.elapsed());
    app.succeeds(&vin, "flash_lights").await;
    let changes = crate::log::connection_changes(app.db(), &vin).await;
    eprintln!("connection changes: {changes:?}");
    assert_eq!(changes.last().map(|(online, _)| *online), Some(true));
}

contract!(a_last_will_of_an_older_session_read_late_does_not_take_the_vehicle_offline);
async fn a_last_will_of_an_older_session_read_late_does_not_take_the_vehicle_offline(store: Store) {
    let Some(broker) = OwnMosquitto::start("allow_anonymous true", &[]) else { return };
    let Some(app) = tacho_on(&broker, store).await else { return };
    let sim = app.online(&broker.url(), Behaviour::default()).await;
    let vin = sim.vin().to_owned();

    // The Last Will of a session an hour older, as a broker that kept it would deliver it late.
    let topic = format!("vehicles/{vin}/connection");
    let old = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    mosquitto_pub(broker.port, &topic, &json!({"state": "offline", "ts": old}).to_string());
    // And a repeat of the current session's `online`: nothing new either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let vehicle: Value = app.get(&format!("/v1/vehicles/{vin}"), &app.dealer()).await.json().await.unwrap();
    assert_eq!(vehicle["connection"]["connected"], true, "{vehicle}");
    app.succeeds(&vin, "flash_lights").await;
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("tacho_connection_messages_ignored_total{reason=\"stale\"} 1")),
        "the stale Last Will is counted:\n{metrics}"
    );
    let changes = app
        .scalar(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{vin}' AND event_type = 'ConnectionChanged'"
        ))
        .await;
    assert_eq!(changes, 1, "only the one real change is in the log");
}

contract!(a_connection_message_dated_beyond_the_allowed_skew_is_refused);
async fn a_connection_message_dated_beyond_the_allowed_skew_is_refused(store: Store) {
    let Some(broker) = OwnMosquitto::start("allow_anonymous true", &[]) else { return };
    let Some(app) = tacho_on(&broker, store).await else { return };
    let sim = app.online(&broker.url(), Behaviour::default()).await;
    let vin = sim.vin().to_owned();
    // An `online` dated in 9999 would make every real Last Will look stale: refused, not applied.
    let topic = format!("vehicles/{vin}/connection");
    mosquitto_pub(broker.port, &topic, r#"{"state":"online","ts":"9999-01-01T00:00:00Z"}"#);
    for _ in 0..100 {
        if !app.dead_letters(&vin).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.dead_letters(&vin).await, ["clock_skew"]);
    let changes = crate::log::connection_changes(app.db(), &vin).await;
    assert_eq!(changes.len(), 1, "only the real online: {changes:?}");
}
