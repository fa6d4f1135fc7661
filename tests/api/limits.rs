//! What one client can hold: long-lived requests per caller and in all, connections, the time to
//! send headers; and a stop by SIGTERM like Ctrl-C.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;
use tacho::auth::Role;

/// An owner's command that stays `requested` (no MQTT), and the owner's token.
async fn a_pending_command(app: &TestApp) -> (String, String) {
    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    let response = app.command(&vin, "alice", json!({"name": "honk"})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["command_id"].as_str().unwrap().to_owned();
    (id, app.owner("alice", &[&vin]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_and_long_polls_are_capped_per_caller_and_in_all() {
    let mut config = config(&fresh_sqlite());
    config.http_max_streams = 3;
    config.http_max_streams_per_caller = 2;
    let app = start(config).await;
    let (id, alice) = a_pending_command(&app).await;
    let stream = |token: String| {
        let request = app.client.get(format!("{}/v1/commands/{id}/events", app.base)).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let first = stream(alice.clone()).await;
    let second = stream(alice.clone()).await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    assert_problem(stream(alice.clone()).await, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    let auditor = app.token("audit-1", &[Role::Auditor], None);
    let third = stream(auditor).await;
    assert_eq!(third.status(), StatusCode::OK);
    let other = app.token("audit-2", &[Role::Auditor], None);
    assert_problem(stream(other.clone()).await, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    // A long poll counts apart from the streams, with the same bounds.
    let poll = app.get(&format!("/v1/commands/{id}?wait=1"), &alice).await;
    assert_eq!(poll.status(), StatusCode::OK, "a long poll outlives the request deadline by its wait");
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        let response = stream(other.clone()).await;
        if response.status() == StatusCode::OK {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "a closed stream gives its place back");
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tacho_http_refused_total{full=\"per_caller\"} 1"), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_cut_off_and_connections_are_capped() {
    let mut config = config(&fresh_sqlite());
    config.http_header_timeout_s = 1;
    config.http_max_connections = 2;
    let app = start(config).await;
    let addr = app.running.addr;
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: tacho\r\n").unwrap();
    let idle = std::net::TcpStream::connect(addr).unwrap();
    // Both places are taken: a third client waits.
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    assert!(client.get(format!("{}/healthz", app.base)).send().await.is_err(), "the third connection waits");
    // After the header deadline the trickling client is cut off, and its place is free again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    slow.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let response = client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(idle);
    app.stop().await;
}

#[test]
fn sigterm_stops_tacho_like_ctrl_c() {
    let dir = std::env::temp_dir().join(format!("tacho-sigterm-{}-{}", std::process::id(), unique_vin()));
    std::fs::create_dir_all(&dir).unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tacho"))
        .current_dir(&dir)
        .env("TACHO_HTTP_ADDR", http.to_string())
        .env("TACHO_EMBEDDED_MQTT_ADDR", mqtt.to_string())
        .env_remove("TACHO_DATABASE_URL")
        .env_remove("TACHO_MQTT_URL")
        .env_remove("TACHO_AUTH_SECRET")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(http).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "tacho listens");
    let killed = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..200 {
        if let Some(exited) = child.try_wait().unwrap() {
            status = Some(exited);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("tacho did not stop within 10 s of SIGTERM");
    };
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    child.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(status.success(), "{status}: {logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    let _ = std::fs::remove_dir_all(dir);
}
