//! The fault suite: tacho under load (commands with Idempotency-Keys retried as real clients retry
//! them, state reports) while it is killed with SIGKILL three times, the broker restarts, PostgreSQL
//! restarts as after a crash, an idle transaction stays open in another database, and of two
//! instances the one running the processes loses its database connections and is killed. tacho
//! runs as child processes of the test; PostgreSQL and Mosquitto are the test's own.
//!
//! Afterwards: every acknowledged command has ended, commands sent then succeed, vehicles received
//! no command id no client was given and nothing canceled or released after a revocation, every
//! state report the broker acknowledged is in the log, `audit verify` is clean, and no checkpoint
//! ever moved backwards. The figures are printed (README quotes them).

use crate::helpers::*;
use crate::servers::{OwnMosquitto, OwnPostgres};
use reqwest::{Client, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tacho::adapters::mqtt::publisher::{Acked, Message, Publisher};
use tacho::auth::{AuthKeys, Role};
use tacho::sim::{Behaviour, SimVehicle};
use tokio_util::sync::CancellationToken;

const VEHICLES: usize = 4;

/// A tacho process.
struct Tacho {
    name: String,
    port: u16,
    child: Option<Child>,
}

impl Tacho {
    fn spawn(name: &str, database: &str, broker: &OwnMosquitto, logs: &Path) -> Self {
        let port = free_port().port();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(logs.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tacho"))
            .arg("serve")
            // Its connections carry its name: the suite cuts them by it.
            .env("TACHO_DATABASE_URL", format!("{database}?application_name={name}"))
            .env("TACHO_MQTT_URL", broker.url().to_string())
            .env("TACHO_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("TACHO_AUTH_SECRET", SECRET)
            .env("TACHO_INSTANCE", name)
            .env("TACHO_MQTT_SHARED_GROUP", "faults")
            .env("RUST_LOG", "tacho=info")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("tacho starts");
        Self { name: name.to_owned(), port, child: Some(child) }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn ready(&self, http: &Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http.get(format!("{}/healthz", self.base())).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("tacho {} did not start within 60 s", self.name);
    }

    /// SIGKILL: no shutdown, no lease released, nothing flushed.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tacho {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A command a client was given an id for.
#[derive(Debug, Clone)]
struct Issued {
    id: String,
    subject: &'static str,
}

/// What the clients were told.
#[derive(Default)]
struct Ledger {
    commands: Mutex<Vec<Issued>>,
    /// Commands whose cancel was acknowledged (200, `canceled`).
    canceled: Mutex<HashSet<String>>,
    /// State reports the broker acknowledged (PUBACK 0): (VIN, message id).
    reports: Mutex<HashSet<(String, String)>>,
    /// Requests retried because no instance answered, or answered 5xx.
    retries: AtomicU64,
}

/// Sends requests to whichever instance answers, as a client behind a load balancer would.
#[derive(Clone)]
struct Clients {
    http: Client,
    bases: Arc<RwLock<Vec<String>>>,
    keys: Arc<AuthKeys>,
    vins: Arc<Vec<String>>,
}

impl Clients {
    fn token(&self, sub: &str, roles: &[Role]) -> String {
        let now = chrono::Utc::now().timestamp();
        self.keys.mint(sub, roles.to_vec(), Some(self.vins.to_vec()), now, 3600)
    }

    /// Sends until an instance gives a definitive answer (not a connection failure, not 5xx),
    /// for at most 120 s; `key` makes a retried command request the same command.
    async fn send(
        &self,
        ledger: &Ledger,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut turn = 0usize;
        loop {
            let bases = self.bases.read().unwrap().clone();
            let base = &bases[turn % bases.len().max(1)];
            turn += 1;
            let mut request = self.http.request(method.clone(), format!("{base}{path}")).bearer_auth(token);
            if let Some(body) = &body {
                request = request.json(body);
            }
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            match request.timeout(Duration::from_secs(15)).send().await {
                Ok(response) if !response.status().is_server_error() => {
                    let status = response.status();
                    return (status, response.json().await.unwrap_or(Value::Null));
                }
                _ => {
                    ledger.retries.fetch_add(1, Ordering::Relaxed);
                    assert!(Instant::now() < deadline, "no instance answered {path} for 120 s");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Requests a command; its id once acknowledged (202, or 200 for a retried key).
    async fn command(&self, ledger: &Ledger, vin: &str, subject: &'static str) -> Option<String> {
        let key = uuid::Uuid::new_v4().to_string();
        let body = json!({"name": "flash_lights", "timeout_s": 10});
        let token = self.token(subject, &[Role::Owner]);
        let path = format!("/v1/vehicles/{vin}/commands");
        let (status, body) = self.send(ledger, reqwest::Method::POST, &path, &token, Some(body), Some(&key)).await;
        let id = body["command_id"].as_str().map(str::to_owned);
        if let Some(id) = &id {
            let issued = Issued { id: id.clone(), subject };
            ledger.commands.lock().unwrap().push(issued);
        }
        match status {
            StatusCode::ACCEPTED | StatusCode::OK => id,
            // Refused with a command id (a revoked consent): the client was given the id all the same.
            _ => None,
        }
    }
}

/// Every checkpoint as seen every 100 ms, and every time one was lower than before.
async fn watch_checkpoints(url: String, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let mut last: HashMap<String, (i64, i64)> = HashMap::new();
    let (mut samples, mut backwards) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        // A connection per look: PostgreSQL restarts under it.
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
            let rows: Vec<(String, i64, i64)> =
                sqlx::query_as("SELECT name, tx_id, position FROM subscription_checkpoints")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default();
            for (name, tx_id, position) in rows {
                samples += 1;
                if let Some(before) = last.get(&name) {
                    if (tx_id, position) < *before {
                        backwards.push(format!("{name}: {before:?} -> {:?}", (tx_id, position)));
                    }
                }
                last.insert(name, (tx_id, position));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (samples, backwards)
}

fn terminal(status: &str) -> bool {
    !matches!(status, "requested" | "queued" | "dispatched" | "accepted" | "in_progress")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_and_nothing_runs_twice_through_kills_and_restarts() {
    let Some(postgres) = OwnPostgres::start() else { return };
    let persistent = "allow_anonymous true\npersistence true\npersistence_location {dir}/\n\
                      max_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true";
    let Some(mut broker) = OwnMosquitto::start(persistent, &[]) else { return };
    let logs: PathBuf = std::env::temp_dir().join(format!("tacho-faults-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    eprintln!("fault suite: tacho logs in {}", logs.display());
    let database = postgres.url("tacho");
    let http = Client::new();
    let mut a = Tacho::spawn("tacho-a", &database, &broker, &logs);
    a.ready(&http).await;

    let vins: Vec<String> = (0..VEHICLES).map(|_| unique_vin()).collect();
    let clients = Clients {
        http: http.clone(),
        bases: Arc::new(RwLock::new(vec![a.base()])),
        keys: Arc::new(AuthKeys::new(&SecretString::from(SECRET))),
        vins: Arc::new(vins.clone()),
    };
    let ledger = Arc::new(Ledger::default());
    let (factory, owner) = (clients.token("plant-1", &[Role::Factory]), clients.token("alice", &[Role::Owner]));
    for vin in &vins {
        let body = json!({"vin": vin, "model": "Model A", "model_year": 2026, "market": "EU"});
        assert_eq!(
            clients.send(&ledger, reqwest::Method::POST, "/v1/vehicles", &factory, Some(body), None).await.0,
            StatusCode::CREATED
        );
        let activate = format!("/v1/vehicles/{vin}/activate");
        assert_eq!(
            clients.send(&ledger, reqwest::Method::POST, &activate, &factory, None, None).await.0,
            StatusCode::OK
        );
        for purpose in ["remote_commands", "telemetry"] {
            let grant = format!("/v1/vehicles/{vin}/consents/{purpose}");
            assert_eq!(
                clients.send(&ledger, reqwest::Method::PUT, &grant, &owner, Some(json!({})), None).await.0,
                StatusCode::OK
            );
        }
    }
    // bob may command the first vehicle, until alice revokes it.
    let bob_grant = format!("/v1/vehicles/{}/consents/remote_commands", vins[0]);
    let for_bob = json!({"subject": "bob"});
    assert_eq!(
        clients.send(&ledger, reqwest::Method::PUT, &bob_grant, &owner, Some(for_bob), None).await.0,
        StatusCode::OK
    );
    let mut sims = Vec::new();
    for vin in &vins {
        sims.push(SimVehicle::connect(&broker.url(), vin, Behaviour::default()).await.unwrap());
    }

    // The load: commands (every seventh canceled at once) and state reports, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let checkpoints = tokio::spawn(watch_checkpoints(postgres.url("tacho"), Arc::clone(&stop)));
    let commander = {
        let (clients, ledger, stop, vins) = (clients.clone(), Arc::clone(&ledger), Arc::clone(&stop), vins.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let vin = &vins[n % vins.len()];
                if let Some(id) = clients.command(&ledger, vin, "alice").await {
                    if n % 7 == 3 {
                        let token = clients.token("alice", &[Role::Owner]);
                        let path = format!("/v1/commands/{id}/cancel");
                        let (status, body) =
                            clients.send(&ledger, reqwest::Method::POST, &path, &token, Some(json!({})), None).await;
                        if status == StatusCode::OK && body["status"] == "canceled" {
                            ledger.canceled.lock().unwrap().insert(id);
                        }
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let reporting = CancellationToken::new();
    let reported = Arc::new(AtomicU64::new(0));
    let reporter = {
        let (ledger, stop, vins, reported) =
            (Arc::clone(&ledger), Arc::clone(&stop), vins.clone(), Arc::clone(&reported));
        let publisher = Publisher::start(&broker.url(), "faults-reporter", 2, reporting.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let vin = vins[n as usize % vins.len()].clone();
                let msg_id = format!("r-{n}");
                let report = json!({"msg_id": msg_id, "ts": chrono::Utc::now(), "signals": {"Vehicle.Speed": n % 200}});
                let message = Message {
                    topic: format!("vehicles/{vin}/state"),
                    payload: report.to_string().into_bytes(),
                    properties: Default::default(),
                };
                // Only a PUBACK 0 is a delivery: 16 says no subscription matched (tacho's shared
                // subscription, which Mosquitto does not restore after a restart, not yet renewed).
                if matches!(publisher.publish(message).await, Ok(Acked::Success)) {
                    ledger.reports.lock().unwrap().insert((vin, msg_id));
                }
                n += 1;
                reported.store(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let at = |what: &str| eprintln!("fault suite: {what} at report {}", reported.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. SIGKILL, three times.
    for _ in 0..3 {
        at("SIGKILL");
        a.kill9();
        *faults.entry("tacho killed with SIGKILL").or_default() += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
        a = Tacho::spawn("tacho-a", &database, &broker, &logs);
        *clients.bases.write().unwrap() = vec![a.base()];
        a.ready(&http).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // 2. The broker restarts (it keeps its sessions on disk).
    at("broker restart");
    broker.restart();
    at("broker restarted");
    *faults.entry("broker restarted").or_default() += 1;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // 3. PostgreSQL restarts as after a crash: every connection cut.
    at("PostgreSQL restart");
    postgres.restart();
    *faults.entry("PostgreSQL crashed and restarted").or_default() += 1;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // 4. A `psql` left idle in a transaction in another database of the server, to the end.
    let mut idle = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres.url("postgres")).await.unwrap();
    sqlx::query("BEGIN").execute(&mut idle).await.unwrap();
    sqlx::query("SELECT txid_current()").execute(&mut idle).await.unwrap();
    *faults.entry("idle transaction in another database").or_default() += 1;
    // 5. alice revokes bob's consent while bob sends commands.
    for _ in 0..5 {
        clients.command(&ledger, &vins[0], "bob").await;
    }
    let revoke = format!("/v1/vehicles/{}/consents/remote_commands?subject=bob", vins[0]);
    let (revoked, _) = clients.send(&ledger, reqwest::Method::DELETE, &revoke, &owner, None, None).await;
    assert_eq!(revoked, StatusCode::NO_CONTENT);
    for _ in 0..3 {
        assert!(clients.command(&ledger, &vins[0], "bob").await.is_none(), "bob's consent is revoked");
    }
    // 6. Two instances; the one running the processes loses its database connections, then dies.
    let b = Tacho::spawn("tacho-b", &database, &broker, &logs);
    b.ready(&http).await;
    *clients.bases.write().unwrap() = vec![a.base(), b.base()];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pool = sqlx::PgPool::connect(&postgres.url("tacho")).await.unwrap();
    let holder: String = sqlx::query_scalar("SELECT holder FROM process_leases WHERE name = 'dispatcher'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (mut holding, survivor) = if holder.starts_with("tacho-a/") { (a, b) } else { (b, a) };
    let cut: i64 =
        sqlx::query_scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&holding.name)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(cut > 0, "the holder's connections were cut");
    *faults.entry("lease holder's connections terminated").or_default() += 1;
    at("cut and SIGKILL");
    holding.kill9();
    *faults.entry("tacho killed with SIGKILL").or_default() += 1;
    let cut_at = Instant::now();
    *clients.bases.write().unwrap() = vec![survivor.base()];
    let probe = clients.command(&ledger, &vins[1], "alice").await.expect("acknowledged by the survivor");
    let token = clients.token("alice", &[Role::Owner]);
    let took_over = loop {
        let (_, command) =
            clients.send(&ledger, reqwest::Method::GET, &format!("/v1/commands/{probe}"), &token, None, None).await;
        if command["status"] != "requested" {
            break cut_at.elapsed();
        }
        assert!(cut_at.elapsed() < Duration::from_secs(30), "no instance dispatched for 30 s: {command}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The killed instance comes back, as its orchestrator would restart it: its persistent session
    // holds what the broker had already handed it (a shared subscription queues for its members).
    let holding_name = holding.name.clone();
    drop(holding);
    let back = Tacho::spawn(&holding_name, &database, &broker, &logs);
    back.ready(&http).await;
    *clients.bases.write().unwrap() = vec![survivor.base(), back.base()];

    // The faults are over: the load stops, everything acknowledged must end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    commander.await.unwrap();
    reporter.await.unwrap();
    reporting.cancel();
    let issued = ledger.commands.lock().unwrap().clone();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut unfinished = Vec::new();
    for command in &issued {
        let path = format!("/v1/commands/{}", command.id);
        let token = clients.token(command.subject, &[Role::Owner]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            let (_, view) = clients.send(&ledger, reqwest::Method::GET, &path, &token, None, None).await;
            let status = view["status"].as_str().unwrap_or_default().to_owned();
            if terminal(&status) {
                break status;
            }
            if Instant::now() > deadline {
                unfinished.push(view);
                break status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        *outcomes.entry(status).or_default() += 1;
    }
    // Commands sent now succeed: every vehicle is connected and shown so.
    for vin in &vins {
        let id = clients.command(&ledger, vin, "alice").await.expect("acknowledged");
        let path = format!("/v1/commands/{id}?wait=5");
        let deadline = Instant::now() + Duration::from_secs(30);
        let done = loop {
            let (_, view) = clients.send(&ledger, reqwest::Method::GET, &path, &token, None, None).await;
            if terminal(view["status"].as_str().unwrap_or_default()) || Instant::now() > deadline {
                break view;
            }
        };
        assert_eq!(done["status"], "succeeded", "after the faults: {done}");
    }

    // What the vehicles received: only ids clients were given, nothing canceled, nothing of bob's
    // released after the revocation, and each command executed once.
    let given: HashSet<String> = ledger.commands.lock().unwrap().iter().map(|c| c.id.clone()).collect();
    let canceled = ledger.canceled.lock().unwrap().clone();
    let (mut received, mut repeats) = (0usize, 0usize);
    let mut executed: HashMap<String, usize> = HashMap::new();
    for sim in &sims {
        for request in sim.requests() {
            let id = request.request.command_id.to_string();
            assert!(given.contains(&id), "a vehicle received command {id} no client was given");
            assert!(!canceled.contains(&id), "a vehicle received command {id} after its cancel was acknowledged");
            received += 1;
            if request.repeat {
                repeats += 1;
            } else {
                *executed.entry(id).or_default() += 1;
            }
        }
    }
    let twice = executed.values().filter(|n| **n > 1).count();
    let late_for_bob: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events r WHERE r.event_type = 'CommandReleased' \
           AND r.aggregate_id IN (SELECT aggregate_id FROM events WHERE event_type = 'CommandRequested' \
                                  AND payload->'CommandRequested'->>'requester' = 'bob') \
           AND r.global_position > (SELECT global_position FROM events WHERE event_type = 'ConsentRevoked' \
                                    AND payload->'ConsentRevoked'->>'subject' = 'bob')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(late_for_bob, 0, "a command of bob's was released after his consent was revoked");

    // Every state report the broker acknowledged is in the log (the last ones may still be on their
    // way through a batch).
    let reports = ledger.reports.lock().unwrap().clone();
    let mut lost_reports = usize::MAX;
    let mut missing: Vec<(String, String)> = Vec::new();
    for _ in 0..100 {
        let stored: HashSet<(String, String)> = sqlx::query_as(
            "SELECT aggregate_id, payload->'StateReported'->>'msg_id' FROM events WHERE event_type = 'StateReported'",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        missing = reports.difference(&stored).cloned().collect();
        lost_reports = missing.len();
        if lost_reports == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The log verifies, and no checkpoint moved backwards.
    let verify = Command::new(env!("CARGO_BIN_EXE_tacho"))
        .args(["audit", "verify"])
        .env("TACHO_DATABASE_URL", &database)
        .env("TACHO_AUTH_SECRET", SECRET)
        .output()
        .expect("tacho audit verify runs");
    stop.store(true, Ordering::Relaxed);
    let (samples, backwards) = checkpoints.await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut idle).await.unwrap();

    let fault_count: u32 = faults.values().sum();
    eprintln!("fault suite figures:");
    eprintln!("  faults injected: {fault_count} ({faults:?})");
    eprintln!("  commands acknowledged: {} ({} canceled at once); outcomes {outcomes:?}", issued.len(), canceled.len());
    eprintln!("  requests retried by clients (no instance answering, 5xx): {}", ledger.retries.load(Ordering::Relaxed));
    eprintln!("  commands lost (acknowledged, never ended): {}", unfinished.len());
    eprintln!(
        "  requests received by vehicles: {received}; delivered again (at-least-once, answered not re-executed): {repeats}; executed twice: {twice}"
    );
    eprintln!("  state reports acknowledged by the broker: {}; missing from the log: {lost_reports}", reports.len());
    eprintln!("  dispatching resumed {:.1} s after the lease holder was cut off and killed", took_over.as_secs_f64());
    eprintln!("  checkpoint samples: {samples}; moved backwards: {}", backwards.len());
    eprintln!("  audit verify: {}", String::from_utf8_lossy(&verify.stdout).lines().last().unwrap_or_default());
    let dead: Vec<(String, String, String)> =
        sqlx::query_as("SELECT topic, reason, detail FROM dead_letters ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(
        lost_reports, 0,
        "state reports the broker acknowledged are missing from the log: {missing:?}; dead letters: {dead:?}"
    );
    assert!(backwards.is_empty(), "checkpoints moved backwards: {backwards:?}");
    assert!(unfinished.is_empty(), "acknowledged commands never ended: {unfinished:?}");
    assert_eq!(twice, 0, "a command was executed twice");
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    drop(survivor);
    drop(back);
    let _ = std::fs::remove_dir_all(&logs);
}
