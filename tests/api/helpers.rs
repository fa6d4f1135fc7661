//! `spawn_app(store)`: tacho on port 0 with a fresh store, plus typed request helpers.
//!
//! Contract tests run once per store ([`contract!`](crate::contract)): `sqlite` (the embedded
//! default: a fresh SQLite file and, for MQTT tests, an in-process rumqttd broker) and `postgres`
//! (a fresh PostgreSQL database and, for MQTT tests, the real Mosquitto). Without those servers the
//! `postgres` variants print SKIPPED and pass; with `CI=true` they fail.

use reqwest::{Client, Method, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use std::sync::atomic::{AtomicU32, Ordering};
use tacho::adapters::mqtt::broker::BrokerUrl;
use tacho::app::Running;
use tacho::auth::{AuthKeys, Role};
use tacho::config::Config;
use tacho::store::Db;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const VIN: &str = "1HGCM82633A004352";
pub const VIN2: &str = "WVWZZZ1JZXW000001";
pub const THUMB: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The server all tests share: `TACHO_TEST_DATABASE_URL`, default the local PostgreSQL.
pub fn server_url() -> String {
    std::env::var("TACHO_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Drops the databases of earlier test runs whose process is gone (names carry the pid).
async fn drop_abandoned_databases(admin: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'tacho_test_%'")
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    for name in names {
        let pid = name.trim_start_matches("tacho_test_").split('_').next().unwrap_or_default();
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut *admin).await;
        }
    }
}

/// Says on the terminal (past the test harness's capture, so a passing run shows it too) that the
/// running test did not run, and why.
fn skipped(why: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why} (with CI=true this fails)");
}

/// A fresh, empty database; `None` (with a note on stderr) when PostgreSQL is not reachable outside CI.
pub async fn fresh_database() -> Option<String> {
    let server = server_url();
    let mut admin = match PgConnection::connect(&format!("{server}/postgres")).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            skipped(&format!("PostgreSQL is not reachable at {server} ({e}); start it or set TACHO_TEST_DATABASE_URL"));
            return None;
        }
        Err(e) => panic!("CI=true and PostgreSQL is not reachable at {server}: {e}"),
    };
    CLEANED.get_or_init(|| drop_abandoned_databases(&mut admin)).await;
    let name = format!("tacho_test_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await.expect("drop old test database");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
    Some(format!("{server}/{name}"))
}

/// Which store a contract test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The embedded default: SQLite, and the in-process broker for MQTT tests.
    Sqlite,
    /// PostgreSQL, and Mosquitto for MQTT tests.
    Postgres,
}

/// Declares the two runs of contract test `$name` (an `async fn $name(store: Store)`):
/// `$name::sqlite` and `$name::postgres`, with the given `#[tokio::test(...)]` arguments.
#[macro_export]
macro_rules! contract {
    ($name:ident $(, $($flavor:tt)*)?) => {
        mod $name {
            #[tokio::test$(($($flavor)*))?]
            async fn sqlite() {
                super::$name($crate::helpers::Store::Sqlite).await
            }
            #[tokio::test$(($($flavor)*))?]
            async fn postgres() {
                super::$name($crate::helpers::Store::Postgres).await
            }
        }
    };
}

/// A fresh SQLite file in a folder of its own (removed with the temp dir).
pub fn fresh_sqlite() -> String {
    let dir = std::env::temp_dir().join(format!(
        "tacho-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    format!("sqlite://{}/tacho.db", dir.display())
}

/// A fresh store of `store`; `None` when PostgreSQL is absent outside CI.
pub async fn fresh_store(store: Store) -> Option<String> {
    match store {
        Store::Sqlite => Some(fresh_sqlite()),
        Store::Postgres => fresh_database().await,
    }
}

pub fn config(database_url: &str) -> Config {
    Config {
        database_url: SecretString::from(database_url.to_owned()),
        http_addr: "127.0.0.1:0".parse().expect("valid address"),
        auth_secret: Some(SecretString::from(SECRET)),
        auth_issuer: None,
        public_mqtt_url: None,
        embedded_mqtt_addr: "127.0.0.1:0".parse().expect("valid address"),
        database_max_connections: 10,
        max_signals_per_report: 200,
        max_signals_per_vehicle: 2000,
        max_clock_skew_s: 300,
        dead_letter_retention_days: 30,
        idempotency_key_hours: 24,
        http_max_connections: 1024,
        http_header_timeout_s: 10,
        http_request_timeout_s: 30,
        ready_max_lag_s: 60,
        http_max_streams: 1000,
        http_max_streams_per_caller: 10,
        mqtt_url: "none".to_owned(),
        mqtt_ca_file: None,
        mqtt_cert_file: None,
        mqtt_key_file: None,
        broker_rights: tacho::config::BrokerRights::None,
        instance: Some(format!("tacho-test-{}", uuid::Uuid::new_v4().simple())),
        mqtt_shared_group: None,
        mqtt_session_expiry_s: 60,
        mqtt_publish_lanes: 2,
        history_retention_hours: 168,
        // The tests' receivers listen on loopback (refused with PostgreSQL unless allowed).
        webhook_allow: tacho::webhooks::address::LOOPBACK.to_vec(),
        webhook_pause_after: 15,
        webhook_first_backoff_ms: 50,
    }
}

pub struct TestApp {
    pub base: String,
    /// What it was started with (to restart it on the same store).
    pub config: Config,
    pub client: Client,
    pub running: Running,
    keys: AuthKeys,
}

/// Starts tacho on port 0 with a fresh store and no MQTT. `None` when PostgreSQL is absent outside
/// CI.
pub async fn spawn_app(store: Store) -> Option<TestApp> {
    let database_url = fresh_store(store).await?;
    Some(start(config(&database_url)).await)
}

/// The broker of the MQTT tests: for SQLite, an embedded broker of its own (it outlives tacho
/// restarts, as an external broker would); for PostgreSQL, `TACHO_TEST_MQTT_URL`, default the local
/// Mosquitto, `None` (with a note) when it is not reachable outside CI.
pub async fn test_broker(store: Store) -> Option<BrokerUrl> {
    if store == Store::Sqlite {
        let addr = free_port();
        let addr = tokio::task::spawn_blocking(move || tacho::adapters::mqtt::embedded::start(addr))
            .await
            .expect("broker start-up")
            .expect("embedded broker starts");
        return Some(BrokerUrl::local(addr));
    }
    let url = std::env::var("TACHO_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned());
    let broker = BrokerUrl::parse(&url).expect("TACHO_TEST_MQTT_URL is an mqtt:// URL");
    match tokio::net::TcpStream::connect((broker.host.as_str(), broker.port)).await {
        Ok(_) => Some(broker),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            skipped(&format!("no MQTT broker at {url} ({e}); start Mosquitto or set TACHO_TEST_MQTT_URL"));
            None
        }
        Err(e) => panic!("CI=true and no MQTT broker at {url}: {e}"),
    }
}

/// Starts tacho with a fresh database on the test broker; returns it with its configuration (to
/// restart it on the same database and MQTT session).
pub async fn spawn_app_with_mqtt(store: Store) -> Option<(TestApp, Config, BrokerUrl)> {
    let database_url = fresh_store(store).await?;
    let broker = test_broker(store).await?;
    let mut config = config(&database_url);
    config.mqtt_url = broker.to_string();
    Some((start(config.clone()).await, config, broker))
}

/// Starts tacho with `config` on port 0.
pub async fn start(config: Config) -> TestApp {
    // RUST_LOG=tacho=debug shows what tacho logs during a test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let running = tacho::app::start(&config, listener).await.expect("tacho starts");
    TestApp {
        config,
        base: format!("http://{}", running.addr),
        client: Client::new(),
        running,
        keys: AuthKeys::new(&SecretString::from(SECRET)),
    }
}

/// A VIN no other test uses (tests share the broker).
pub fn unique_vin() -> String {
    tacho::sim::sim_vin(u64::from(rand_u32()) * 10 + u64::from(COUNTER.fetch_add(1, Ordering::Relaxed) % 10))
}

fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

/// A port nothing listens on now.
pub fn free_port() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    probe.local_addr().expect("bound address")
}

impl TestApp {
    /// The store.
    pub fn db(&self) -> &Db {
        &self.running.state.db
    }

    /// The single number `sql` selects (portable SQL).
    /// The reasons of the dead letters whose topic names `vin`, oldest first.
    pub async fn dead_letters(&self, vin: &str) -> Vec<String> {
        let sql = "SELECT reason FROM dead_letters WHERE topic LIKE '%' || $1 || '%' ORDER BY id";
        on_db!(self.db(), |p| sqlx::query_scalar(sql).bind(vin).fetch_all(p).await).unwrap()
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        on_db!(self.db(), |p| sqlx::query_scalar(sql).fetch_one(p).await).expect("scalar query")
    }

    pub fn token(&self, sub: &str, roles: &[Role], vins: Option<&[&str]>) -> String {
        let now = chrono::Utc::now().timestamp();
        self.keys.mint(sub, roles.to_vec(), vins.map(|v| v.iter().map(|s| (*s).to_owned()).collect()), now, 600)
    }

    pub fn factory(&self) -> String {
        self.token("plant-1", &[Role::Factory], None)
    }

    pub fn owner(&self, sub: &str, vins: &[&str]) -> String {
        self.token(sub, &[Role::Owner], Some(vins))
    }

    pub fn dealer(&self) -> String {
        self.keys.mint_fleet("dealer-1", vec![Role::Dealer], chrono::Utc::now().timestamp(), 600)
    }

    pub fn auditor(&self) -> String {
        self.token("auditor-1", &[Role::Auditor], None)
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Response {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request reaches tacho")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Registers `vin` (status registered).
    pub async fn register(&self, vin: &str) -> Response {
        let body = json!({"vin": vin, "model": "Model A", "model_year": 2026, "market": "EU"});
        self.post("/v1/vehicles", &self.factory(), body).await
    }

    /// Stops this instance and waits for its tasks.
    pub async fn stop(self) {
        self.running.shutdown.cancel();
        self.running.join().await.expect("clean shutdown");
    }

    /// Grants `purpose` on `vin` as `owner`.
    pub async fn grant(&self, vin: &str, owner: &str, purpose: &str) {
        let path = format!("/v1/vehicles/{vin}/consents/{purpose}");
        let granted = self.call(Method::PUT, &path, &self.owner(owner, &[vin]), Some(json!({}))).await;
        assert_eq!(granted.status(), StatusCode::OK);
    }

    /// Waits until the registry shows `vin` as `connected`.
    pub async fn wait_connected(&self, vin: &str, connected: bool) {
        for _ in 0..200 {
            let vehicle: Value = self.get(&format!("/v1/vehicles/{vin}"), &self.dealer()).await.json().await.unwrap();
            if vehicle["connection"]["connected"] == connected {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{vin} never became connected={connected}");
    }

    /// Alice's command `body` to `vin`, accepted: its id.
    pub async fn request(&self, vin: &str, body: Value) -> String {
        let response = self.command(vin, "alice", body).await;
        let status = response.status();
        let created: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::ACCEPTED, "{created}");
        created["command_id"].as_str().unwrap().to_owned()
    }

    /// A new vehicle, ready for alice's commands, online at `broker` as a simulated vehicle.
    pub async fn online(&self, broker: &BrokerUrl, behaviour: tacho::sim::Behaviour) -> tacho::sim::SimVehicle {
        let vin = unique_vin();
        self.ready_vehicle(&vin, "alice").await;
        let sim = tacho::sim::SimVehicle::connect(broker, &vin, behaviour).await.expect("simulated vehicle connects");
        self.wait_connected(&vin, true).await;
        sim
    }

    /// Alice asks `vin` to do `name`, and it succeeds.
    pub async fn succeeds(&self, vin: &str, name: &str) {
        let id = self.request(vin, json!({ "name": name })).await;
        let done =
            self.wait_command(&id, "alice", vin, |s| !matches!(s, "requested" | "dispatched" | "accepted")).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }

    /// Polls command `id` until `done` holds for its status (at most 20 s); returns the command.
    pub async fn wait_command(&self, id: &str, owner: &str, vin: &str, done: impl Fn(&str) -> bool) -> Value {
        let token = self.owner(owner, &[vin]);
        let mut last = Value::Null;
        for _ in 0..40 {
            last = self.get(&format!("/v1/commands/{id}?wait=1"), &token).await.json().await.unwrap();
            if done(last["status"].as_str().unwrap_or_default()) {
                return last;
            }
        }
        panic!("command {id} stuck: {last}");
    }

    /// Registers and activates `vin`, and grants `owner` the remote_commands consent.
    pub async fn ready_vehicle(&self, vin: &str, owner: &str) {
        assert_eq!(self.register(vin).await.status(), StatusCode::CREATED);
        let activated = self.call(Method::POST, &format!("/v1/vehicles/{vin}/activate"), &self.factory(), None).await;
        assert_eq!(activated.status(), StatusCode::OK);
        let granted = self
            .call(
                Method::PUT,
                &format!("/v1/vehicles/{vin}/consents/remote_commands"),
                &self.owner(owner, &[vin]),
                Some(json!({})),
            )
            .await;
        assert_eq!(granted.status(), StatusCode::OK);
    }

    /// Requests `name` on `vin` as `owner`; returns the response.
    pub async fn command(&self, vin: &str, owner: &str, body: Value) -> Response {
        self.post(&format!("/v1/vehicles/{vin}/commands"), &self.owner(owner, &[vin]), body).await
    }
}

/// Asserts a problem+json answer with `status` and `code`; returns the body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status of {}", response.url());
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    body
}

/// The rows of a read-model table as JSON, in a stable order.
pub async fn snapshot(db: &Db, table: &str, order: &str) -> Vec<Value> {
    match db {
        Db::Postgres(pool) => {
            let sql = format!("SELECT to_jsonb(t) AS row FROM {table} t ORDER BY {order}");
            sqlx::query_scalar(&sql).fetch_all(pool).await.expect("snapshot query")
        }
        Db::Sqlite(embedded) => {
            let columns: Vec<(String, String)> = sqlx::query_as("SELECT name, type FROM pragma_table_info($1)")
                .bind(table)
                .fetch_all(&embedded.pool)
                .await
                .expect("table columns");
            let fields: Vec<String> = columns
                .iter()
                .map(|(name, kind)| match kind.to_ascii_lowercase().as_str() {
                    // UUIDs are 16-byte blobs: show them as PostgreSQL does.
                    "blob" => format!(
                        "'{name}', lower(substr(hex({name}), 1, 8) || '-' || substr(hex({name}), 9, 4) || '-' || \
                         substr(hex({name}), 13, 4) || '-' || substr(hex({name}), 17, 4) || '-' || substr(hex({name}), 21))"
                    ),
                    // JSON columns are text: nest them as JSON, as PostgreSQL's jsonb would be.
                    "text" => format!("'{name}', CASE WHEN json_valid({name}) THEN json({name}) ELSE {name} END"),
                    _ => format!("'{name}', {name}"),
                })
                .collect();
            let sql = format!("SELECT json_object({}) FROM {table} ORDER BY {order}", fields.join(", "));
            let rows: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&embedded.pool).await.expect("snapshot query");
            rows.iter().map(|r| serde_json::from_str(r).expect("json_object gives JSON")).collect()
        }
    }
}
