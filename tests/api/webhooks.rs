//! `/v1/subscriptions`: a partner subscribes, sees its own subscriptions only, pauses, resumes,
//! rotates its secret and deletes; bad input is refused with problem+json and nothing stored.

use crate::contract;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tacho::auth::Role;

fn insurer(app: &TestApp) -> String {
    app.token("insurer", &[Role::Service], None)
}

fn subscription() -> Value {
    json!({"endpoint": "https://insurer.example/hooks/tacho", "event_types": ["vehicle.event", "command"],
           "vins": [VIN], "purpose": "data_sharing:insurer"})
}

contract!(a_partner_subscribes_and_gets_its_secret_once);
async fn a_partner_subscribes_and_gets_its_secret_once(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let token = insurer(&app);
    let created = app.post("/v1/subscriptions", &token, subscription()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = created.json().await.unwrap();
    let secret = body["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");
    let view = &body["subscription"];
    assert_eq!(location, format!("/v1/subscriptions/{}", view["subscription_id"].as_str().unwrap()));
    assert_eq!(view["principal"], "insurer");
    assert_eq!(view["status"], "active");
    assert_eq!(view["event_types"], json!(["command", "vehicle.event"]));
    assert_eq!(view["purpose"], "data_sharing:insurer");
    let fingerprint = view["secret_fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16);

    let read: Value = app.get(&location, &token).await.json().await.unwrap();
    assert_eq!(read["subscription_id"], view["subscription_id"]);
    assert!(read.get("secret").is_none(), "the secret is shown once: {read}");
    let text = app.get(&location, &token).await.text().await.unwrap();
    assert!(!text.contains(&secret[6..]), "the secret never comes back");

    // The log records the fingerprint, never the secret.
    let audit: Value = app.get("/v1/audit/events?after=0", &app.auditor()).await.json().await.unwrap();
    let log = audit.to_string();
    assert!(log.contains("WebhookCreated") && log.contains(fingerprint), "{log}");
    assert!(!log.contains(&secret[6..]));
}

contract!(a_partner_sees_and_changes_only_its_own_subscriptions);
async fn a_partner_sees_and_changes_only_its_own_subscriptions(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let token = insurer(&app);
    let body: Value = app.post("/v1/subscriptions", &token, subscription()).await.json().await.unwrap();
    let path = format!("/v1/subscriptions/{}", body["subscription"]["subscription_id"].as_str().unwrap());
    let other = app.token("charger", &[Role::Service], None);
    assert_problem(app.get(&path, &other).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(app.post(&format!("{path}/pause"), &other, json!({})).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    assert_problem(app.call(Method::DELETE, &path, &other, None).await, StatusCode::NOT_FOUND, "not_found").await;
    let theirs: Value = app.get("/v1/subscriptions", &other).await.json().await.unwrap();
    assert_eq!(theirs, json!([]));
    assert_problem(app.get("/v1/subscriptions", &app.owner("alice", &[VIN])).await, StatusCode::FORBIDDEN, "forbidden")
        .await;

    let admin = app.token("ops", &[Role::Admin], None);
    let all: Value = app.get("/v1/subscriptions", &admin).await.json().await.unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    let mine: Value = app.get("/v1/subscriptions", &token).await.json().await.unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1);
}

contract!(pause_resume_rotate_and_delete);
async fn pause_resume_rotate_and_delete(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let token = insurer(&app);
    let body: Value = app.post("/v1/subscriptions", &token, subscription()).await.json().await.unwrap();
    let first = body["subscription"]["secret_fingerprint"].as_str().unwrap().to_owned();
    let path = format!("/v1/subscriptions/{}", body["subscription"]["subscription_id"].as_str().unwrap());

    let paused: Value = app.post(&format!("{path}/pause"), &token, json!({})).await.json().await.unwrap();
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["pause"], json!({"reason": "requested", "by": "insurer"}));
    let resumed: Value = app.post(&format!("{path}/resume"), &token, json!({})).await.json().await.unwrap();
    assert_eq!(resumed["status"], "active");
    assert_eq!(resumed["pause"], Value::Null);

    let rotated = app.post(&format!("{path}/rotate-secret"), &token, json!({"grace_s": 3600})).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    assert_ne!(rotated["secret"], body["secret"]);
    assert_ne!(rotated["subscription"]["secret_fingerprint"], first);
    assert!(rotated["subscription"]["previous_secret_until"].is_string());
    let held = app.scalar("SELECT count(*) FROM webhook_secrets").await;
    assert_eq!(held, 2, "old and new secret both sign during the grace period");
    let again = app.post(&format!("{path}/rotate-secret"), &token, json!({"grace_s": 3600})).await;
    assert_eq!(again.status(), StatusCode::OK);
    let held = app.scalar("SELECT count(*) FROM webhook_secrets").await;
    assert_eq!(held, 2, "the secret rotated out twice is erased: only the new and the previous one are kept");
    let too_long = app.post(&format!("{path}/rotate-secret"), &token, json!({"grace_s": 999_999_999})).await;
    assert_problem(too_long, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    assert_eq!(app.call(Method::DELETE, &path, &token, None).await.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&path, &token).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        app.scalar("SELECT count(*) FROM webhook_secrets").await,
        0,
        "a deleted subscription's secrets are erased"
    );
    let listed: Value = app.get("/v1/subscriptions", &token).await.json().await.unwrap();
    assert_eq!(listed, json!([]));
}

contract!(bad_subscriptions_are_refused_and_nothing_is_stored);
async fn bad_subscriptions_are_refused_and_nothing_is_stored(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let token = insurer(&app);
    let with = |key: &str, value: Value| {
        let mut body = subscription();
        body[key] = value;
        body
    };
    let cases = [
        (with("endpoint", json!("http://insurer.example/hooks")), "validation_failed"),
        (with("endpoint", json!("https://169.254.169.254/latest/meta-data")), "validation_failed"),
        (with("endpoint", json!("https://10.0.0.7/hook")), "validation_failed"),
        (with("endpoint", json!("https://[fd00::1]/hook")), "validation_failed"),
        (with("endpoint", json!("https://user:pw@insurer.example/")), "validation_failed"),
        (with("endpoint", json!(format!("https://insurer.example/{}", "a".repeat(3000)))), "validation_failed"),
        (with("event_types", json!(["vehicle.everything"])), "validation_failed"),
        (with("event_types", json!([])), "validation_failed"),
        (with("vins", json!(["NOT-A-VIN"])), "validation_failed"),
        (with("purpose", json!("spying")), "unknown_purpose"),
        (with("purpose", json!("remote_commands")), "validation_failed"),
        (with("purpose", Value::Null), "validation_failed"),
        (with("surprise", json!(1)), "invalid_body"),
    ];
    for (body, code) in cases {
        let response = app.post("/v1/subscriptions", &token, body.clone()).await;
        let status = response.status();
        assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST, "{body}: {status}");
        assert_problem(response, status, code).await;
    }
    assert_eq!(app.scalar("SELECT count(*) FROM rm_webhooks").await, 0);
    assert_eq!(app.scalar("SELECT count(*) FROM webhook_secrets").await, 0, "a refused subscription keeps no secret");
}

/// A webhook receiver on a free loopback port: keeps what it is sent, answers `status`.
struct Receiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Milliseconds it waits before answering.
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Most events per request it takes (413 beyond); 0: any number.
    max_batch: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    async fn start() -> Self {
        let got: std::sync::Arc<std::sync::Mutex<Vec<_>>> = Default::default();
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let max_batch = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (keep, answer, delay, most) = (got.clone(), status.clone(), delay_ms.clone(), max_batch.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let (keep, answer, delay, most) = (keep.clone(), answer.clone(), delay.clone(), most.clone());
                async move {
                    let wait = delay.load(std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    let most = most.load(std::sync::atomic::Ordering::SeqCst);
                    let events = serde_json::from_slice::<Vec<Value>>(&body).map(|b| b.len()).unwrap_or(0);
                    if most > 0 && events > most {
                        return axum::http::StatusCode::PAYLOAD_TOO_LARGE;
                    }
                    let status = answer.load(std::sync::atomic::Ordering::SeqCst);
                    if status == 200 {
                        keep.lock().unwrap().push((headers, body));
                    }
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, got, status, delay_ms, max_batch }
    }

    /// Every event received, in order, after checking each request's signature with `secret`.
    fn events(&self, secret: &str) -> Vec<Value> {
        let got = self.got.lock().unwrap();
        let mut events = Vec::new();
        for (headers, body) in got.iter() {
            let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
            assert_eq!(header("content-type"), "application/cloudevents-batch+json");
            verify(secret, &header("webhook-id"), &header("webhook-timestamp"), body, &header("webhook-signature"));
            let batch: Vec<Value> = serde_json::from_slice(body).unwrap();
            events.extend(batch);
        }
        events
    }
}

/// The Standard Webhooks check as a receiver writes it: HMAC-SHA256 with the secret's bytes over
/// `id.timestamp.body`, base64, one of the space-separated `v1,` signatures.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], signatures: &str) {
    use base64::Engine;
    use hmac::Mac;
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert!(signatures.split(' ').any(|s| s == expected), "no signature of {id} verifies: {signatures}");
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "timestamp {timestamp} is {age} s old");
}

async fn subscribe(app: &TestApp, receiver: &Receiver, event_types: Value) -> (String, String) {
    let body = json!({"endpoint": receiver.url, "event_types": event_types, "purpose": "data_sharing:insurer"});
    let created = app.post("/v1/subscriptions", &insurer(app), body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    (
        created["subscription"]["subscription_id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// The log's last position now.
async fn head(app: &TestApp) -> i64 {
    app.scalar("SELECT coalesce(max(global_position), 0) FROM events").await
}

/// Waits until subscription `id` has gone past `position` (a replay's place on PostgreSQL,
/// "before transaction t" with the greatest position, has not).
async fn delivered_past(app: &TestApp, id: &str, position: i64) {
    let key = match app.db() {
        tacho::store::Db::Postgres(_) => format!("'{id}'"),
        tacho::store::Db::Sqlite(_) => format!("x'{}'", id.replace('-', "")),
    };
    let sql = format!(
        "SELECT coalesce(max(position), 0) FROM webhook_cursors WHERE webhook_id = {key} AND position < {}",
        i64::MAX
    );
    for _ in 0..400 {
        if app.scalar(&sql).await >= position {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("subscription {id} never went past position {position}");
}

async fn vehicle_move(app: &TestApp, action: &str) -> i64 {
    let response = app.post(&format!("/v1/vehicles/{VIN}/{action}"), &app.factory(), json!({})).await;
    assert!(response.status().is_success(), "{action}: {}", response.status());
    head(app).await
}

contract!(a_partner_receives_a_vehicles_events_only_while_its_owner_consents);
async fn a_partner_receives_a_vehicles_events_only_while_its_owner_consents(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let receiver = Receiver::start().await;
    app.register(VIN).await;
    let (id, secret) = subscribe(&app, &receiver, json!(["vehicle.registry"])).await;

    let before_consent = vehicle_move(&app, "activate").await;
    delivered_past(&app, &id, before_consent).await;
    let path = format!("/v1/vehicles/{VIN}/consents/data_sharing:insurer");
    let granted = app.call(Method::PUT, &path, &app.owner("alice", &[VIN]), Some(json!({"subject": "insurer"}))).await;
    assert_eq!(granted.status(), StatusCode::OK);
    let version = granted.json::<Value>().await.unwrap()["version"].as_i64().unwrap();
    let consented = vehicle_move(&app, "suspend").await;
    delivered_past(&app, &id, consented).await;
    let revoked = app.call(Method::DELETE, &format!("{path}?subject=insurer"), &app.owner("alice", &[VIN]), None).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let after_revocation = vehicle_move(&app, "activate").await;
    delivered_past(&app, &id, after_revocation).await;

    let events = receiver.events(&secret);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["io.tacho.VehicleSuspended"], "only what was appended while the consent was in force");
    let event = &events[0];
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["subject"], VIN);
    assert_eq!(event["tachoconsentversion"], version);
    assert_eq!(event["id"], format!("Vehicle:{VIN}:3"));
}

contract!(a_receiver_down_for_a_while_gets_everything_after_in_order);
async fn a_receiver_down_for_a_while_gets_everything_after_in_order(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let receiver = Receiver::start().await;
    app.register(VIN).await;
    let (id, secret) = subscribe(&app, &receiver, json!(["vehicle.registry"])).await;
    app.call(
        Method::PUT,
        &format!("/v1/vehicles/{VIN}/consents/data_sharing:insurer"),
        &app.owner("alice", &[VIN]),
        Some(json!({"subject": "insurer"})),
    )
    .await;
    receiver.status.store(503, std::sync::atomic::Ordering::SeqCst);
    let mut last = 0;
    for action in ["activate", "suspend", "activate", "suspend"] {
        last = vehicle_move(&app, action).await;
    }
    // Failing attempts are recorded; then the receiver comes back.
    let failures = || app.scalar("SELECT count(*) FROM webhook_deliveries WHERE NOT ok");
    for _ in 0..200 {
        if failures().await >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(failures().await >= 2, "attempts while the receiver is down are recorded");
    receiver.status.store(200, std::sync::atomic::Ordering::SeqCst);
    delivered_past(&app, &id, last).await;

    let events = receiver.events(&secret);
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.dedup();
    let expected: Vec<String> = (2..=5).map(|n| format!("Vehicle:{VIN}:{n}")).collect();
    assert_eq!(ids, expected, "every event, in log order, once per id");
}

contract!(a_failing_endpoint_is_paused_and_its_owner_sees_why);
async fn a_failing_endpoint_is_paused_and_its_owner_sees_why(store: Store) {
    let Some(database_url) = fresh_store(store).await else { return };
    let mut config = config(&database_url);
    config.webhook_pause_after = 4;
    config.webhook_first_backoff_ms = 10;
    let app = start(config.clone()).await;
    let receiver = Receiver::start().await;
    receiver.status.store(500, std::sync::atomic::Ordering::SeqCst);
    let body = json!({"endpoint": receiver.url, "event_types": ["command"]});
    let created: Value =
        app.post("/v1/subscriptions", &app.token("alice", &[Role::Service], None), body).await.json().await.unwrap();
    let id = created["subscription"]["subscription_id"].as_str().unwrap().to_owned();
    let token = app.token("alice", &[Role::Service], None);
    app.ready_vehicle(VIN, "alice").await;
    app.command(VIN, "alice", json!({"name": "honk"})).await;
    // Two failures, then a restart: the run of failures goes on where it was.
    let failures = || app.scalar("SELECT count(*) FROM webhook_deliveries WHERE NOT ok");
    for _ in 0..400 {
        if failures().await >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    app.stop().await;
    let app = start(config).await;
    let path = format!("/v1/subscriptions/{id}");
    let mut paused = Value::Null;
    for _ in 0..400 {
        paused = app.get(&path, &token).await.json().await.unwrap();
        if paused["status"] == "paused" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(paused["status"], "paused", "{paused}");
    assert_eq!(paused["pause"]["reason"], "failing");
    assert_eq!(paused["pause"]["failures"], 4);
    assert!(paused["pause"]["last_error"].as_str().unwrap().contains("500"), "{paused}");
    let attempts: Value = app.get(&format!("{path}/deliveries"), &token).await.json().await.unwrap();
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 4, "paused after 4 failures in a row, a restart among them: {attempts:?}");
    assert!(attempts.iter().all(|a| a["ok"] == false && a["response_status"] == 500), "{attempts:?}");

    // Resumed once the receiver is back: what was waiting arrives.
    receiver.status.store(200, std::sync::atomic::Ordering::SeqCst);
    let resumed: Value = app.post(&format!("{path}/resume"), &token, json!({})).await.json().await.unwrap();
    assert_eq!(resumed["status"], "active");
    delivered_past(&app, &id, head(&app).await).await;
    let events = receiver.events(created["secret"].as_str().unwrap());
    assert!(events.iter().any(|e| e["type"] == "io.tacho.CommandRequested"), "{events:?}");
}

contract!(a_principal_holds_a_bounded_number_of_subscriptions);
async fn a_principal_holds_a_bounded_number_of_subscriptions(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let token = insurer(&app);
    for _ in 0..20 {
        assert_eq!(app.post("/v1/subscriptions", &token, subscription()).await.status(), StatusCode::CREATED);
    }
    assert_problem(app.post("/v1/subscriptions", &token, subscription()).await, StatusCode::CONFLICT, "conflict").await;
    // Thirty at once from another principal: twenty pass, however they interleave.
    let racer = app.token("fleet-operator", &[Role::Service], None);
    let creates = (0..30).map(|_| app.post("/v1/subscriptions", &racer, subscription()));
    let statuses: Vec<StatusCode> = futures::future::join_all(creates).await.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 20, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 10, "{statuses:?}");
    let other = app.token("charger", &[Role::Service], None);
    assert_eq!(app.post("/v1/subscriptions", &other, subscription()).await.status(), StatusCode::CREATED);
}

contract!(a_hanging_receiver_does_not_hold_up_another);
async fn a_hanging_receiver_does_not_hold_up_another(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.delay_ms.store(60_000, std::sync::atomic::Ordering::SeqCst);
    app.register(VIN).await;
    let path = format!("/v1/vehicles/{VIN}/consents/data_sharing:insurer");
    app.call(Method::PUT, &path, &app.owner("alice", &[VIN]), Some(json!({"subject": "insurer"}))).await;
    let (slow_id, _) = subscribe(&app, &slow, json!(["vehicle.registry"])).await;
    let (fast_id, secret) = subscribe(&app, &fast, json!(["vehicle.registry"])).await;
    let mut last = 0;
    for action in ["activate", "suspend", "activate"] {
        last = vehicle_move(&app, action).await;
    }
    delivered_past(&app, &fast_id, last).await;
    assert_eq!(fast.events(&secret).len(), 3, "the fast receiver has everything");
    let past = app.scalar(&format!("SELECT count(*) FROM webhook_cursors WHERE position >= {last}")).await;
    assert_eq!(past, 1, "the hanging receiver's subscription {slow_id} is still at its first batch");
    assert!(slow.got.lock().unwrap().is_empty());
}

contract!(a_replay_delivers_again_what_the_consent_allows_now);
async fn a_replay_delivers_again_what_the_consent_allows_now(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let receiver = Receiver::start().await;
    app.register(VIN).await;
    let path = format!("/v1/vehicles/{VIN}/consents/data_sharing:insurer");
    let owner = app.owner("alice", &[VIN]);
    app.call(Method::PUT, &path, &owner, Some(json!({"subject": "insurer"}))).await;
    let (id, secret) = subscribe(&app, &receiver, json!(["vehicle.registry"])).await;
    let mut last = 0;
    for action in ["activate", "suspend"] {
        last = vehicle_move(&app, action).await;
    }
    delivered_past(&app, &id, last).await;
    let first = receiver.events(&secret);
    assert_eq!(first.len(), 2);
    let from = first[0]["tachoposition"].as_i64().unwrap();

    let token = insurer(&app);
    let replayed = app.post(&format!("/v1/subscriptions/{id}/replay"), &token, json!({"from_position": from})).await;
    assert_eq!(replayed.status(), StatusCode::ACCEPTED);
    for _ in 0..400 {
        if receiver.events(&secret).len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let ids: Vec<String> = receiver.events(&secret).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids[2..], ids[..2], "the same events again, same ids: {ids:?}");

    // From a time: the first event's.
    let time = first[0]["time"].clone();
    let replayed = app.post(&format!("/v1/subscriptions/{id}/replay"), &token, json!({"from_time": time})).await;
    assert_eq!(replayed.status(), StatusCode::ACCEPTED);
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["from_position"], from, "{replayed}");
    for _ in 0..400 {
        if receiver.events(&secret).len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let ids: Vec<String> = receiver.events(&secret).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids[4..], ids[..2], "from a time, the same events again: {ids:?}");
    for bad in [json!({}), json!({"from_position": from, "from_time": time}), json!({"from_time": "yesterday"})] {
        let refused = app.post(&format!("/v1/subscriptions/{id}/replay"), &token, bad.clone()).await;
        let status = refused.status();
        assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST, "{bad}: {status}");
    }

    // Revoked: a replay sends nothing of the vehicle any more.
    app.call(Method::DELETE, &format!("{path}?subject=insurer"), &owner, None).await;
    let before = receiver.events(&secret).len();
    app.post(&format!("/v1/subscriptions/{id}/replay"), &token, json!({"from_position": from})).await;
    let after_revocation = vehicle_move(&app, "activate").await;
    delivered_past(&app, &id, after_revocation).await;
    assert_eq!(receiver.events(&secret).len(), before, "nothing outside the consent");
    let refused = app.post(&format!("/v1/subscriptions/{id}/replay"), &token, json!({"from_position": -1})).await;
    assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

contract!(tacho_stopped_mid_delivery_loses_nothing);
async fn tacho_stopped_mid_delivery_loses_nothing(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let receiver = Receiver::start().await;
    receiver.delay_ms.store(5_000, std::sync::atomic::Ordering::SeqCst);
    app.register(VIN).await;
    let path = format!("/v1/vehicles/{VIN}/consents/data_sharing:insurer");
    app.call(Method::PUT, &path, &app.owner("alice", &[VIN]), Some(json!({"subject": "insurer"}))).await;
    let (id, secret) = subscribe(&app, &receiver, json!(["vehicle.registry"])).await;
    let mut last = 0;
    for action in ["activate", "suspend"] {
        last = vehicle_move(&app, action).await;
    }
    // A batch is on its way to the (slow) receiver when tacho stops.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let config = app.config.clone();
    app.stop().await;
    assert!(receiver.got.lock().unwrap().is_empty(), "nothing was taken before the stop");

    receiver.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let restarted = start(config).await;
    delivered_past(&restarted, &id, last).await;
    let mut ids: Vec<String> = receiver.events(&secret).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    ids.dedup();
    assert_eq!(ids, [format!("Vehicle:{VIN}:2"), format!("Vehicle:{VIN}:3")]);
}

/// Replays subscription `id` from the log's start and waits until it has `events` events and has
/// gone past the log's end.
async fn replay_everything(app: &TestApp, id: &str, secret: &str, receiver: &Receiver, events: usize) {
    let body = json!({"from_position": 0});
    let replayed = app.post(&format!("/v1/subscriptions/{id}/replay"), &insurer(app), body).await;
    assert_eq!(replayed.status(), StatusCode::ACCEPTED);
    for _ in 0..200 {
        if receiver.events(secret).len() >= events {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    delivered_past(app, id, head(app).await).await;
}

contract!(a_grant_opens_a_vehicles_data_from_where_it_begins);
async fn a_grant_opens_a_vehicles_data_from_where_it_begins(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let receiver = Receiver::start().await;
    app.register(VIN).await;
    let (id, secret) = subscribe(&app, &receiver, json!(["vehicle.registry"])).await;
    let path = format!("/v1/vehicles/{VIN}/consents/data_sharing:insurer");
    let owner = app.owner("alice", &[VIN]);
    let grant = |expires: &'static str| {
        let (app, path, owner) = (&app, &path, &owner);
        async move {
            let body = json!({"subject": "insurer", "expires_at": expires});
            let granted = app.call(Method::PUT, path, owner, Some(body)).await;
            assert_eq!(granted.status(), StatusCode::OK);
            granted.json::<Value>().await.unwrap()["version"].as_i64().unwrap()
        }
    };
    let ids = |receiver: &Receiver| -> Vec<String> {
        receiver.events(&secret).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
    };
    vehicle_move(&app, "activate").await; // Vehicle:2, before any grant
    let first = grant("2099-01-01T00:00:00Z").await;
    vehicle_move(&app, "suspend").await; // Vehicle:3
    let renewed = grant("2099-06-01T00:00:00Z").await; // a renewal of the grant in force
    assert!(renewed > first);
    let last = vehicle_move(&app, "activate").await; // Vehicle:4
    delivered_past(&app, &id, last).await;
    let expected = |n: &[u32]| n.iter().map(|n| format!("Vehicle:{VIN}:{n}")).collect::<Vec<_>>();
    assert_eq!(ids(&receiver), expected(&[3, 4]));

    // A replay of the whole log brings what the grant in force covers, from where it began (the
    // renewal kept the beginning): not the registration nor the activation before it.
    replay_everything(&app, &id, &secret, &receiver, 4).await;
    assert_eq!(ids(&receiver), expected(&[3, 4, 3, 4]));
    let versions: Vec<i64> =
        receiver.events(&secret).iter().map(|e| e["tachoconsentversion"].as_i64().unwrap()).collect();
    assert_eq!(versions[2..], [renewed, renewed], "sent under the version in force when sent");

    // Revoked and granted again: what was recorded before the new grant stays out, even replayed.
    let revoked = app.call(Method::DELETE, &format!("{path}?subject=insurer"), &owner, None).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    vehicle_move(&app, "suspend").await; // Vehicle:5, while revoked
    grant("2099-01-01T00:00:00Z").await;
    let after = vehicle_move(&app, "activate").await; // Vehicle:6
    delivered_past(&app, &id, after).await;
    replay_everything(&app, &id, &secret, &receiver, 6).await;
    assert_eq!(ids(&receiver), expected(&[3, 4, 3, 4, 6, 6]));
}

contract!(an_endpoint_that_resolves_to_an_internal_address_gets_nothing);
async fn an_endpoint_that_resolves_to_an_internal_address_gets_nothing(store: Store) {
    let Some(database_url) = fresh_store(store).await else { return };
    let mut config = config(&database_url);
    // An operator allows one internal range; loopback is not in it.
    config.webhook_allow = vec![("10.99.0.0".parse().unwrap(), 16)];
    config.webhook_first_backoff_ms = 10;
    let app = start(config).await;
    let receiver = Receiver::start().await;
    let token = app.token("alice", &[Role::Service], None);
    let literal = json!({"endpoint": receiver.url, "event_types": ["command"]});
    let refused = app.post("/v1/subscriptions", &token, literal).await;
    assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    // A name is taken at creation; it resolves to loopback when tacho delivers, and nothing is sent.
    let named = receiver.url.replace("127.0.0.1", "localhost");
    let body = json!({"endpoint": named, "event_types": ["command"]});
    let created = app.post("/v1/subscriptions", &token, body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["subscription"]["subscription_id"].as_str().unwrap().to_owned();
    app.ready_vehicle(VIN, "alice").await;
    app.command(VIN, "alice", json!({"name": "honk"})).await;
    let path = format!("/v1/subscriptions/{id}/deliveries");
    let mut attempts = Value::Null;
    for _ in 0..400 {
        attempts = app.get(&path, &token).await.json().await.unwrap();
        if !attempts.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let attempt = &attempts[0];
    assert_eq!(attempt["ok"], false, "{attempts}");
    assert_eq!(attempt["response_status"], Value::Null);
    let error = attempt["error"].as_str().unwrap();
    assert!(error.contains("resolves to") && error.contains("loopback"), "{error}");
    assert!(!error.contains("127.0.0.1") && !error.contains("::1"), "the address itself is not shown: {error}");
    assert!(receiver.got.lock().unwrap().is_empty(), "the receiver on loopback was never reached");
}

contract!(a_receiver_taking_only_small_batches_gets_everything_and_a_lost_secret_shows);
async fn a_receiver_taking_only_small_batches_gets_everything_and_a_lost_secret_shows(store: Store) {
    let Some(database_url) = fresh_store(store).await else { return };
    let mut config = config(&database_url);
    config.webhook_first_backoff_ms = 5;
    let app = start(config).await;
    let receiver = Receiver::start().await;
    app.register(VIN).await;
    let path = format!("/v1/vehicles/{VIN}/consents/data_sharing:insurer");
    app.call(Method::PUT, &path, &app.owner("alice", &[VIN]), Some(json!({"subject": "insurer"}))).await;
    let (id, secret) = subscribe(&app, &receiver, json!(["vehicle.registry"])).await;
    let token = insurer(&app);
    // Four events wait while the subscription is paused; the receiver then takes one per request.
    app.post(&format!("/v1/subscriptions/{id}/pause"), &token, json!({})).await;
    let mut last = 0;
    for action in ["activate", "suspend", "activate", "suspend"] {
        last = vehicle_move(&app, action).await;
    }
    receiver.max_batch.store(1, std::sync::atomic::Ordering::SeqCst);
    app.post(&format!("/v1/subscriptions/{id}/resume"), &token, json!({})).await;
    delivered_past(&app, &id, last).await;
    let ids: Vec<String> = receiver.events(&secret).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    let expected: Vec<String> = (2..=5).map(|n| format!("Vehicle:{VIN}:{n}")).collect();
    assert_eq!(ids, expected, "smaller batches after refusals, everything in order");
    let attempts: Value = app.get(&format!("/v1/subscriptions/{id}/deliveries"), &token).await.json().await.unwrap();
    assert!(attempts.as_array().unwrap().iter().any(|a| a["response_status"] == 413), "{attempts}");

    // The signing secret is lost (a restore without it): attempts fail and say so; a new secret
    // lets deliveries go on.
    app.scalar("DELETE FROM webhook_secrets RETURNING CAST(1 AS bigint)").await;
    let lost = vehicle_move(&app, "activate").await;
    let mut attempts = Value::Null;
    for _ in 0..400 {
        attempts = app.get(&format!("/v1/subscriptions/{id}/deliveries"), &token).await.json().await.unwrap();
        if attempts[0]["error"].as_str().is_some_and(|e| e.contains("secret is missing")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(attempts[0]["error"].as_str().unwrap().contains("signing secret is missing"), "{attempts}");
    let rotated: Value =
        app.post(&format!("/v1/subscriptions/{id}/rotate-secret"), &token, json!({})).await.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    delivered_past(&app, &id, lost).await;
    let got = receiver.got.lock().unwrap().len();
    let (headers, body) = receiver.got.lock().unwrap()[got - 1].clone();
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    verify(&new_secret, &header("webhook-id"), &header("webhook-timestamp"), &body, &header("webhook-signature"));
}

/// PostgreSQL only: the embedded store takes one instance.
#[tokio::test]
async fn two_instances_deliver_each_event_in_order_and_the_second_takes_over() {
    let Some(database_url) = fresh_store(Store::Postgres).await else { return };
    let (a, b) = (start(config(&database_url)).await, start(config(&database_url)).await);
    let receiver = Receiver::start().await;
    a.register(VIN).await;
    let path = format!("/v1/vehicles/{VIN}/consents/data_sharing:insurer");
    a.call(Method::PUT, &path, &a.owner("alice", &[VIN]), Some(json!({"subject": "insurer"}))).await;
    let (id, secret) = subscribe(&b, &receiver, json!(["vehicle.registry"])).await;
    let mut last = 0;
    for (n, action) in ["activate", "suspend", "activate", "suspend"].iter().enumerate() {
        last = vehicle_move(if n % 2 == 0 { &a } else { &b }, action).await;
    }
    delivered_past(&a, &id, last).await;
    let holders = a.scalar("SELECT count(DISTINCT holder) FROM process_leases WHERE name = 'webhooks'").await;
    assert_eq!(holders, 1, "one instance delivers");

    // The instance delivering stops; the other takes over from where it stood.
    let holder: String = sqlx::query_scalar("SELECT holder FROM process_leases WHERE name = 'webhooks'")
        .fetch_one(match a.db() {
            tacho::store::Db::Postgres(pool) => pool,
            tacho::store::Db::Sqlite(_) => unreachable!("PostgreSQL only"),
        })
        .await
        .unwrap();
    let a_holds = holder.starts_with(&format!("{}/", a.config.instance_name()));
    let (stopped, left) = if a_holds { (a, b) } else { (b, a) };
    stopped.stop().await;
    for action in ["activate", "suspend"] {
        last = vehicle_move(&left, action).await;
    }
    delivered_past(&left, &id, last).await;
    let mut ids: Vec<String> = receiver.events(&secret).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    ids.dedup();
    let expected: Vec<String> = (2..=7).map(|n| format!("Vehicle:{VIN}:{n}")).collect();
    assert_eq!(ids, expected, "every event once per id, in log order, across the hand-over");
    left.stop().await;
}

contract!(the_sweep_removes_webhook_rows_no_subscription_uses_and_keeps_the_rest);
async fn the_sweep_removes_webhook_rows_no_subscription_uses_and_keeps_the_rest(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let receiver = Receiver::start().await;
    let token = insurer(&app);
    let (live, _) = subscribe(&app, &receiver, json!(["vehicle.registry"])).await;
    let (gone, _) = subscribe(&app, &receiver, json!(["vehicle.registry"])).await;
    let key = |id: &str| match app.db() {
        tacho::store::Db::Postgres(_) => format!("'{id}'"),
        tacho::store::Db::Sqlite(_) => format!("x'{}'", id.replace('-', "")),
    };
    let old = "'2020-01-01T00:00:00+00:00'";
    let stray = uuid::Uuid::new_v4().to_string();
    // Left by a create whose event never came, by a rotation refused after a crash, and by a worker
    // racing the deletion of `gone`.
    for sql in [
        format!("INSERT INTO webhook_secrets VALUES ({}, 'aaaaaaaaaaaaaaaa', 'whsec_x', {old})", key(&stray)),
        format!("INSERT INTO webhook_secrets VALUES ({}, 'bbbbbbbbbbbbbbbb', 'whsec_y', {old})", key(&live)),
    ] {
        app.scalar(&format!("{sql} RETURNING CAST(1 AS bigint)")).await;
    }
    assert_eq!(
        app.call(Method::DELETE, &format!("/v1/subscriptions/{gone}"), &token, None).await.status(),
        StatusCode::NO_CONTENT
    );
    for sql in [
        format!("INSERT INTO webhook_cursors (webhook_id, tx_id, position, generation, updated_at, failures) VALUES ({}, 0, 1, 0, {old}, 0)", key(&gone)),
        format!("INSERT INTO webhook_deliveries (webhook_id, attempted_at, ok, response_status, latency_ms, events, first_position, last_position, error) VALUES ({}, {old}, true, 200, 1, 1, 1, 1, NULL)", key(&gone)),
        format!("INSERT INTO webhook_deliveries (webhook_id, attempted_at, ok, response_status, latency_ms, events, first_position, last_position, error) VALUES ({}, {old}, true, 200, 1, 1, 1, 1, NULL)", key(&live)),
    ] {
        app.scalar(&format!("{sql} RETURNING CAST(1 AS bigint)")).await;
    }
    // Every row is old now: only what a subscription uses stays.
    app.scalar(&format!("UPDATE webhook_secrets SET created_at = {old} RETURNING CAST(1 AS bigint)")).await;
    let retention = tacho::processes::sweep::Retention {
        history: chrono::Duration::hours(24),
        dead_letters: chrono::Duration::days(30),
        idempotency_keys: chrono::Duration::hours(24),
    };
    tacho::processes::sweep::prune(app.db(), retention).await.unwrap();
    let count = |table: &str, id: &str| {
        let sql = format!("SELECT count(*) FROM {table} WHERE webhook_id = {}", key(id));
        let app = &app;
        async move { app.scalar(&sql).await }
    };
    assert_eq!(count("webhook_secrets", &stray).await, 0, "a secret of no subscription goes");
    assert_eq!(
        count("webhook_secrets", &live).await,
        1,
        "the live subscription keeps its own secret, not the stray one"
    );
    assert_eq!(count("webhook_cursors", &gone).await + count("webhook_deliveries", &gone).await, 0);
    assert_eq!(count("webhook_deliveries", &live).await, 1, "a live subscription's attempts stay");
    let rotated = app.post(&format!("/v1/subscriptions/{live}/rotate-secret"), &token, json!({})).await;
    assert_eq!(rotated.status(), StatusCode::OK, "the kept secret is the one in force");
}
