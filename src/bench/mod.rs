//! `tacho bench`: measures tacho end to end on this machine, next to the floors it cannot beat,
//! and prints a table. A benchmark, never a test: nothing here asserts on time.
//!
//! (a) command round trip: HTTP request → terminal state readable over HTTP, with simulated vehicles
//!     answering at once; p50/p99 at a fixed rate, then the sustained maximum with many in flight.
//! (b) state ingestion: 1,000 simulated vehicles publish reports as fast as the broker takes them;
//!     reports appended per second and how far the read model lags.

mod floors;

use crate::adapters::mqtt::broker::BrokerUrl;
use crate::auth::{AuthKeys, Role};
use crate::config::Config;
use crate::config::Mqtt;
use crate::domain::consent::{ConsentCommand, Purpose};
use crate::domain::vehicle::VehicleCommand;
use crate::domain::Vin;
use crate::sim::{sim_vin, Behaviour, SimVehicle};
use crate::store::Db;
use crate::store::Frameworks;
use anyhow::Context;
use futures::StreamExt;
use rumqttc::v5::mqttbytes::QoS;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of a run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds each load phase lasts.
    pub seconds: u64,
    /// Fixed request rate of the latency phase.
    pub rate: u64,
    /// Commands in flight in the throughput phase.
    pub concurrency: usize,
    /// Vehicles publishing state.
    pub vehicles: u64,
}

/// The `p`-quantile of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the benchmark against the PostgreSQL server and broker of `config`.
pub async fn run(config: &Config, options: BenchOptions) -> anyhow::Result<()> {
    let Some(Mqtt::External(broker)) = Some(config.mqtt()?) else {
        anyhow::bail!(
            "tacho bench measures the production set-up: set TACHO_MQTT_URL=mqtt://host:port and \
             TACHO_DATABASE_URL=postgres://..."
        );
    };
    anyhow::ensure!(
        config.sqlite_path()?.is_none(),
        "tacho bench measures the production set-up: set TACHO_DATABASE_URL=postgres://..."
    );
    let server =
        config.database_url.expose_secret().rsplit_once('/').map(|(s, _)| s.to_owned()).context("bad database URL")?;
    let database = format!("tacho_bench_{}", std::process::id());
    let mut bench_config = config.clone();
    bench_config.database_url = SecretString::from(format!("{server}/{database}"));
    bench_config.auth_secret = Some(SecretString::from(uuid::Uuid::new_v4().to_string()));
    bench_config.mqtt_client_id = format!("tacho-bench-{}", std::process::id());
    bench_config.mqtt_session_expiry_s = 60;
    eprintln!("floors: raw MQTT round trips and a raw PostgreSQL insert ...");
    let (mqtt_p50, mqtt_p99) = floors::mqtt_round_trip(&broker, 2000).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = crate::app::start(&bench_config, listener).await?;
    let Db::Postgres(pool) = running.state.db.clone() else { anyhow::bail!("tacho bench needs PostgreSQL") };
    let pg_rate = floors::postgres_insert(&pool, 200_000).await?;
    let keys = AuthKeys::new(bench_config.auth_secret.as_ref().context("secret set above")?);
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();

    let clock = Instant::now();
    eprintln!("(a) command round trips ...");
    let fleet: Vec<String> = (1..=20).map(|n| sim_vin(9_000_000_000 + n)).collect();
    setup(&running.state.frameworks, &fleet, false).await?;
    let mut sims = Vec::new();
    for vin in &fleet {
        sims.push(SimVehicle::connect(&broker, vin, Behaviour::default()).await?);
    }
    wait_connected(&pool, &fleet).await?;
    let token = keys.mint("bench", vec![Role::Owner], Some(fleet.clone()), chrono::Utc::now().timestamp(), 3600);
    let client = Commands { http: http.clone(), base: base.clone(), token, fleet: fleet.clone() };
    let (mut fixed, fixed_failed) = client.fixed_rate(options.rate, options.seconds).await;
    let (p50, p99) = (percentile(&mut fixed, 0.50), percentile(&mut fixed, 0.99));
    let (sustained, sustained_failed) = client.closed_loop(options.concurrency, options.seconds).await;
    drop(sims);

    eprintln!("    done in {:.0?}", clock.elapsed());
    eprintln!("(b) state ingestion from {} vehicles ...", options.vehicles);
    let vehicles: Vec<String> = (1..=options.vehicles).map(|n| sim_vin(8_000_000_000 + n)).collect();
    setup(&running.state.frameworks, &vehicles, true).await?;
    // Reports are admitted by the registry and consent read models: let them catch up first, or the
    // first reports are refused (consent_missing) and the count below is off.
    for vin in &vehicles {
        running.state.settle_admission(vin).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    eprintln!("    {} vehicles registered in {:.0?}", vehicles.len(), clock.elapsed());
    let ingestion = ingest(&broker, &pool, &vehicles, options.seconds).await?;
    eprintln!("    done in {:.0?}", clock.elapsed());

    eprintln!("(c) replay: audit verify and rebuilds of the whole log ...");
    let subscriptions = &running.state.subscriptions;
    subscriptions.catch_up("seals").await?;
    let (log_rows, log_read_rate) = floors::log_read(&pool).await?;
    let started = Instant::now();
    let verified = crate::audit::verify(&running.state.db, None, None, &|_| {}).await?;
    let verify_rate = verified.events as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(verified.mismatches.is_empty(), "the bench log does not verify: {:?}", verified.mismatches);
    let rebuilt_state = subscriptions.rebuild("vehicle_state").await?;
    let rebuilt_commands = subscriptions.rebuild("commands").await?;
    eprintln!("    done in {:.0?}", clock.elapsed());

    running.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.join()).await;
    drop_database(&server, &database).await;

    println!();
    println!(
        "tacho bench — {} cores, {} build",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!();
    println!("| measure | tacho | floor | tacho / floor |");
    println!("|---|---|---|---|");
    let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.1}x", a / b) } else { "-".into() };
    println!(
        "| command round trip p50 at {}/s | {} | MQTT round trip p50 {} | {} |",
        options.rate,
        ms(p50),
        ms(mqtt_p50),
        ratio(p50.as_secs_f64(), mqtt_p50.as_secs_f64())
    );
    println!(
        "| command round trip p99 at {}/s | {} | MQTT round trip p99 {} | {} |",
        options.rate,
        ms(p99),
        ms(mqtt_p99),
        ratio(p99.as_secs_f64(), mqtt_p99.as_secs_f64())
    );
    println!(
        "| commands not completed at {}/s | {} of {} | | |",
        options.rate,
        fixed_failed,
        fixed.len() + fixed_failed
    );
    println!(
        "| sustained commands/s ({} in flight) | {:.0}/s ({} not completed) | 1 / MQTT p50 = {:.0}/s per flow | |",
        options.concurrency,
        sustained,
        sustained_failed,
        1.0 / mqtt_p50.as_secs_f64()
    );
    println!(
        "| state reports/s appended ({} vehicles) | {:.0}/s | PostgreSQL insert {:.0} rows/s | {} |",
        options.vehicles,
        ingestion.appended_per_s,
        pg_rate,
        ratio(ingestion.appended_per_s, pg_rate)
    );
    println!(
        "| state reports/s appended, generator stopped | {:.0}/s | PostgreSQL insert {:.0} rows/s | {} |",
        ingestion.draining_per_s,
        pg_rate,
        ratio(ingestion.draining_per_s, pg_rate)
    );
    println!(
        "| state reports acknowledged by the broker / appended (offered at most {OFFERED:.0}/s) | {} / {} | | |",
        ingestion.published, ingestion.appended
    );
    println!("| read model lag at the end of the load | {} | | |", ms(ingestion.drain));
    println!("| largest read model backlog during the load | {} events | | |", ingestion.max_backlog);
    println!(
        "| replay: audit verify of the whole log ({} events: read, seals, upcast, fold, compare) | {:.0} events/s | PostgreSQL read {:.0} rows/s ({} rows) | {} |",
        verified.events,
        verify_rate,
        log_read_rate,
        log_rows,
        ratio(verify_rate, log_read_rate)
    );
    println!(
        "| rebuild vehicle_state into fresh tables + swap ({} events) | {:.0} events/s | | |",
        rebuilt_state.events,
        rebuilt_state.rate()
    );
    println!(
        "| rebuild commands into fresh tables + swap ({} events) | {:.0} events/s | | |",
        rebuilt_commands.events,
        rebuilt_commands.rate()
    );
    println!();
    println!(
        "Targets on a 2-core machine: round trip p50 ≤ 5 ms and p99 ≤ 25 ms at 100/s; ≥ 1,000 commands/s; \
         ≥ 20,000 reports/s; replay ≥ 100,000 events/s."
    );
    Ok(())
}

/// Registers and activates `vins` (with consents) straight through the frameworks.
async fn setup(frameworks: &Frameworks, vins: &[String], telemetry: bool) -> anyhow::Result<()> {
    let at = chrono::Utc::now();
    let meta = HashMap::from([("actor".to_owned(), "bench".to_owned())]);
    futures::stream::iter(vins)
        .map(|vin| {
            let meta = &meta;
            async move {
                let register = VehicleCommand::Register {
                    vin: Vin::parse(vin)?,
                    model: "Bench".into(),
                    model_year: 2026,
                    market: "EU".into(),
                    options: vec![],
                    data_collection: Default::default(),
                    at,
                };
                frameworks.execute(&frameworks.vehicles, vin, register, meta).await?;
                frameworks.execute(&frameworks.vehicles, vin, VehicleCommand::Activate { at }, meta).await?;
                for purpose in if telemetry { vec!["telemetry"] } else { vec!["remote_commands"] } {
                    let grant = ConsentCommand::Grant {
                        vin: vin.clone(),
                        subject: "bench".into(),
                        purpose: Purpose::parse(purpose)?,
                        legal_basis: "consent".into(),
                        expires_at: None,
                        granted_by: "bench".into(),
                        at,
                    };
                    frameworks.execute(&frameworks.consents, vin, grant, meta).await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

async fn wait_connected(pool: &sqlx::PgPool, vins: &[String]) -> anyhow::Result<()> {
    for _ in 0..200 {
        let connected: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_vehicles WHERE connected AND vin = ANY($1)")
            .bind(vins)
            .fetch_one(pool)
            .await?;
        if connected as usize == vins.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("simulated vehicles did not come online")
}

#[derive(Clone)]
struct Commands {
    http: reqwest::Client,
    base: String,
    token: String,
    fleet: Vec<String>,
}

impl Commands {
    /// One command: POST, then long-poll until a terminal status; its round trip if it succeeded.
    async fn round_trip(&self, n: usize) -> Option<Duration> {
        let vin = &self.fleet[n % self.fleet.len()];
        let started = Instant::now();
        let created: Value = self
            .http
            .post(format!("{}/v1/vehicles/{vin}/commands", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"name": "lock_doors"}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let id = created["command_id"].as_str()?.to_owned();
        let mut status = created["status"].as_str().unwrap_or_default().to_owned();
        while !matches!(
            status.as_str(),
            "succeeded" | "failed" | "rejected" | "timed_out" | "expired" | "interrupted" | "canceled"
        ) {
            let read: Value = self
                .http
                .get(format!("{}/v1/commands/{id}?wait=10", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            status = read["status"].as_str()?.to_owned();
            if started.elapsed() > Duration::from_secs(30) {
                return None;
            }
        }
        (status == "succeeded").then(|| started.elapsed())
    }

    async fn fixed_rate(&self, rate: u64, seconds: u64) -> (Vec<Duration>, usize) {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        let mut tasks = Vec::new();
        for n in 0..(rate * seconds) as usize {
            tick.tick().await;
            let this = self.clone();
            tasks.push(tokio::spawn(async move { this.round_trip(n).await }));
        }
        let mut samples = Vec::new();
        let mut failed = 0;
        for task in tasks {
            match task.await.ok().flatten() {
                Some(d) => samples.push(d),
                None => failed += 1,
            }
        }
        (samples, failed)
    }

    async fn closed_loop(&self, concurrency: usize, seconds: u64) -> (f64, usize) {
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let workers = (0..concurrency).map(|w| {
            let this = self.clone();
            tokio::spawn(async move {
                let (mut done, mut failed, mut n) = (0usize, 0usize, w);
                while Instant::now() < until {
                    match this.round_trip(n).await {
                        Some(_) => done += 1,
                        None => failed += 1,
                    }
                    n += concurrency;
                }
                (done, failed)
            })
        });
        let results = futures::future::join_all(workers).await;
        let (done, failed) = results.into_iter().flatten().fold((0, 0), |(d, f), (a, b)| (d + a, f + b));
        (done as f64 / started.elapsed().as_secs_f64(), failed)
    }
}

/// Reports per second the load generator offers at most (the target is 20,000).
const OFFERED: f64 = 25_000.0;

struct Ingestion {
    published: u64,
    appended: i64,
    appended_per_s: f64,
    /// Append rate once the load generator stopped (tacho alone draining the broker's queue).
    draining_per_s: f64,
    drain: Duration,
    max_backlog: i64,
}

/// Publishes state reports for `vins` from a few connections for `seconds`, then waits for the log
/// and the read model to take them all.
async fn ingest(broker: &BrokerUrl, pool: &sqlx::PgPool, vins: &[String], seconds: u64) -> anyhow::Result<Ingestion> {
    let connections = 8;
    let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut publishers = Vec::new();
    for c in 0..connections {
        let mut options = broker.options(&format!("bench-load-{c}-{}", uuid::Uuid::new_v4().simple()));
        options.set_outgoing_inflight_upper_limit(1000);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 1000);
        // A report counts as published once the broker acknowledged it: `publish()` only queues.
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (total, mine_acked) = (Arc::clone(&published), Arc::clone(&acked));
        let polling = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)) = event {
                    total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    mine_acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let mine: Vec<String> = vins.iter().skip(c).step_by(connections).cloned().collect();
        let mut queued = 0u64;
        publishers.push(tokio::spawn(async move {
            // Offered load: at most OFFERED reports/s in all, so the run stays bounded.
            let mut n = 0u64;
            let round = Duration::from_secs_f64(mine.len() as f64 * connections as f64 / OFFERED);
            while Instant::now() < until {
                let round_started = Instant::now();
                for vin in &mine {
                    let report = json!({"msg_id": format!("b{n}"), "ts": chrono::Utc::now(),
                        "signals": {"Vehicle.Speed": n % 130, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 50 + n % 50}});
                    if client.publish(crate::adapters::mqtt::topics::state(vin), QoS::AtLeastOnce, false, report.to_string()).await.is_err() {
                        return;
                    }
                    queued += 1;
                }
                n += 1;
                tokio::time::sleep(round.saturating_sub(round_started.elapsed())).await;
            }
            // Let what is queued reach the broker before the connection goes.
            let settle = Instant::now();
            while acked.load(std::sync::atomic::Ordering::Relaxed) < queued && settle.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            polling.abort();
        }));
    }
    let backlog = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce((SELECT max(global_position) FROM events), 0) - \
             coalesce((SELECT position FROM subscription_checkpoints WHERE name = 'vehicle_state'), 0)",
        )
        .fetch_one(pool)
        .await
    };
    let mut max_backlog = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        max_backlog = max_backlog.max(backlog().await?);
    }
    futures::future::join_all(publishers).await;
    let total = published.load(std::sync::atomic::Ordering::Relaxed);
    let load_ended = Instant::now();
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_type = 'VehicleState' AND event_type = 'StateReported'",
        )
        .fetch_one(pool)
        .await
    };
    // Appended: wait until the count stops growing.
    let mut appended = count().await?;
    let at_load_end = appended;
    let mut last_growth = Instant::now();
    let mut finished_appending = Instant::now();
    while last_growth.elapsed() < Duration::from_secs(5)
        && (appended as u64) < total
        && load_ended.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count().await?;
        if now > appended {
            appended = now;
            last_growth = Instant::now();
            finished_appending = Instant::now();
        }
    }
    let appended_per_s = appended as f64 / (finished_appending - started).as_secs_f64();
    let draining = finished_appending.saturating_duration_since(load_ended).as_secs_f64();
    let draining_per_s = if draining > 1.0 { (appended - at_load_end) as f64 / draining } else { appended_per_s };
    let drain_started = Instant::now();
    while backlog().await? > 0 && drain_started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Ingestion {
        published: total,
        appended,
        appended_per_s,
        draining_per_s,
        drain: drain_started.elapsed(),
        max_backlog,
    })
}

async fn drop_database(server: &str, database: &str) {
    if let Ok(mut admin) = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{server}/postgres")).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).execute(&mut admin).await;
    }
}
