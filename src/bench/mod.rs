//! `tacho bench`: measures tacho end to end on this machine, next to the floors it cannot beat,
//! and prints a table. A benchmark, never a test: nothing here asserts on time.
//!
//! (a) [`commands`]: command round trips at a fixed rate (p50/p99), then sustained.
//! (b) [`ingestion`]: state reports from 1,000 simulated vehicles; appended per second, read-model lag.
//! (c) [`replay`]: audit verify of the whole log, rebuilds into fresh tables.
//! The floors ([`floors`]): a raw MQTT round trip, raw inserts and reads of the same store.

mod commands;
mod cost;
mod fleet;
mod floors;
mod ingestion;
mod replay;

use commands::{wait_connected, Commands};
use ingestion::{ingest, OFFERED};

use crate::auth::{AuthKeys, Role};
use crate::config::Config;
use crate::config::Mqtt;
use crate::domain::consent::{ConsentCommand, Purpose};
use crate::domain::vehicle::VehicleCommand;
use crate::domain::Vin;
use crate::sim::{sim_vin, Behaviour, SimVehicle};
use crate::store::Frameworks;
use anyhow::Context;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
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
    /// Vehicles of the simulated fleet (memory).
    pub fleet: u64,
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

/// Seconds the idle cost is measured over.
const IDLE_SECONDS: u64 = 20;

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Where a run keeps its data: a throw-away database on the PostgreSQL server of `config`, or a
/// throw-away SQLite file; removed at the end.
enum Scratch {
    Postgres { server: String, database: String },
    Sqlite { dir: std::path::PathBuf },
}

impl Scratch {
    fn of(config: &Config) -> anyhow::Result<Self> {
        let run = std::process::id();
        Ok(match config.sqlite_path()? {
            Some(_) => Scratch::Sqlite { dir: std::env::temp_dir().join(format!("tacho-bench-{run}")) },
            None => {
                let url = config.database_url.expose_secret();
                let server = url.rsplit_once('/').map(|(s, _)| s.to_owned()).context("bad database URL")?;
                Scratch::Postgres { server, database: format!("tacho_bench_{run}") }
            }
        })
    }

    fn url(&self) -> anyhow::Result<String> {
        Ok(match self {
            Scratch::Postgres { server, database } => format!("{server}/{database}"),
            Scratch::Sqlite { dir } => {
                std::fs::create_dir_all(dir)?;
                format!("sqlite://{}", dir.join("tacho.db").display())
            }
        })
    }

    fn store(&self) -> &'static str {
        match self {
            Scratch::Postgres { .. } => "PostgreSQL",
            Scratch::Sqlite { .. } => "SQLite",
        }
    }

    async fn remove(&self) {
        match self {
            Scratch::Postgres { server, database } => drop_database(server, database).await,
            Scratch::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Runs the benchmark on the store and broker of `config`: PostgreSQL (a throw-away database on its
/// server) or SQLite (a throw-away file), an external broker or the embedded one (on a free port).
pub async fn run(config: &Config, options: BenchOptions) -> anyhow::Result<()> {
    let scratch = Scratch::of(config)?;
    let mut bench_config = config.clone();
    bench_config.database_url = SecretString::from(scratch.url()?);
    bench_config.auth_secret = Some(SecretString::from(uuid::Uuid::new_v4().to_string()));
    bench_config.instance = Some(format!("tacho-bench-{}", std::process::id()));
    bench_config.mqtt_session_expiry_s = 60;
    if let Mqtt::Embedded(_) = config.mqtt()? {
        bench_config.embedded_mqtt_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    }
    // One owner keeps `concurrency` long polls open at once.
    bench_config.http_max_streams_per_caller = bench_config.http_max_streams_per_caller.max(options.concurrency * 2);
    bench_config.http_max_streams = bench_config.http_max_streams.max(options.concurrency * 4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = crate::app::start(&bench_config, listener).await?;
    let rss_at_start = cost::rss_bytes(std::process::id()).unwrap_or(0);
    let broker = running.broker.clone().context("tacho bench needs MQTT: TACHO_MQTT_URL must not be none")?;
    let db = running.state.db.clone();
    let store = scratch.store();
    eprintln!("floors: raw MQTT round trips and a raw {store} insert ...");
    let (mqtt_p50, mqtt_p99) = floors::mqtt_round_trip(&broker, 2000).await?;
    let insert_rate = floors::insert(&db, 200_000).await?;
    let keys = AuthKeys::new(bench_config.auth_secret.as_ref().context("secret set above")?);
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();

    let clock = Instant::now();
    eprintln!("(a) command round trips ...");
    let commanded: Vec<String> = (1..=20).map(|n| sim_vin(9_000_000_000 + n)).collect();
    setup(&running.state.frameworks, &commanded, false).await?;
    let mut sims = Vec::new();
    for vin in &commanded {
        sims.push(SimVehicle::connect(&broker, vin, Behaviour::default()).await?);
    }
    wait_connected(&db, &commanded).await?;
    let token = keys.mint("bench", vec![Role::Owner], Some(commanded.clone()), chrono::Utc::now().timestamp(), 3600);
    eprintln!("    idle: {} s without load ...", IDLE_SECONDS + 2 * cost::SETTLE.as_secs());
    // Twice the settling time: the set-up's last counters (idle backends report within 10 s) must
    // not fall into the idle window.
    tokio::time::sleep(2 * cost::SETTLE).await;
    let quiet = cost::read(&db).await?;
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let idle = cost::read(&db).await?.since(&quiet);
    let client = Commands { http: http.clone(), base: base.clone(), token, fleet: commanded.clone() };
    let (mut fixed, fixed_failed) = client.fixed_rate(options.rate, options.seconds).await;
    let (p50, p99) = (percentile(&mut fixed, 0.50), percentile(&mut fixed, 0.99));
    tokio::time::sleep(cost::SETTLE).await;
    let before = cost::read(&db).await?;
    let (done, sustained, sustained_failed) = client.closed_loop(options.concurrency, options.seconds).await;
    tokio::time::sleep(cost::SETTLE).await;
    let spent = cost::read(&db).await?.since(&before);
    let per_command = spent.less_idle(&idle, cost::SETTLE.as_secs_f64()).per(done as f64);
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
    tokio::time::sleep(cost::SETTLE).await;
    let before = cost::read(&db).await?;
    let ingestion = ingest(&broker, &db, &vehicles, options.seconds).await?;
    tokio::time::sleep(cost::SETTLE).await;
    let spent = cost::read(&db).await?.since(&before);
    // Idle costs of the time around the load (the settling, the drain) are not the reports'.
    let per_report = spent.less_idle(&idle, cost::SETTLE.as_secs_f64()).per(ingestion.appended as f64);
    eprintln!("    done in {:.0?}", clock.elapsed());

    eprintln!("(c) replay: audit verify and rebuilds of the whole log ...");
    let replay = replay::measure(&running.state).await?;
    eprintln!("    done in {:.0?}", clock.elapsed());

    eprintln!("(d) a fleet of {} simulated vehicles in a process of their own ...", options.fleet);
    let first = 7_000_000_000;
    let fleet_vins: Vec<String> = (first..first + options.fleet).map(sim_vin).collect();
    setup(&running.state.frameworks, &fleet_vins, true).await?;
    eprintln!("    {} vehicles registered in {:.0?}", fleet_vins.len(), clock.elapsed());
    let fleet = fleet::measure(&broker, &db, first, &fleet_vins).await?;
    eprintln!("    done in {:.0?}", clock.elapsed());

    running.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.join()).await;
    scratch.remove().await;

    println!();
    println!(
        "tacho bench — {} cores, {} build, {store}, MQTT {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        match config.mqtt()? {
            Mqtt::Embedded(_) => "embedded broker",
            _ => "external broker",
        }
    );
    // SQLite counts no transactions: those rows say so.
    let counted = |cost: &cost::Cost, figure: String| if cost.counted { figure } else { "n/a (SQLite)".to_owned() };
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
        "| commands not completed at {}/s | {} of {} {} | | |",
        options.rate,
        fixed_failed.total(),
        fixed.len() + fixed_failed.total(),
        if fixed_failed.total() > 0 { format!("({fixed_failed})") } else { String::new() }
    );
    println!(
        "| sustained commands/s ({} in flight) | {:.0}/s ({} not completed{}) | 1 / MQTT p50 = {:.0}/s per flow | |",
        options.concurrency,
        sustained,
        sustained_failed.total(),
        if sustained_failed.total() > 0 { format!(": {sustained_failed}") } else { String::new() },
        1.0 / mqtt_p50.as_secs_f64()
    );
    println!(
        "| {store} transactions per command, requested → succeeded (sustained phase, all included) | {} | 1 | {} |",
        counted(&per_command, format!("{:.1}", per_command.transactions)),
        counted(&per_command, format!("{:.1}x", per_command.transactions))
    );
    println!(
        "| {store} rows read / written per command | {} | | |",
        counted(&per_command, format!("{:.0} / {:.0}", per_command.rows_read, per_command.rows_written))
    );
    println!(
        "| CPU seconds per 1,000 commands: bench process (tacho, vehicles, HTTP client) / PostgreSQL | {:.2} / {} | | |",
        per_command.cpu_self * 1000.0,
        counted(&per_command, format!("{:.2}", per_command.cpu_db * 1000.0))
    );
    println!(
        "| {store} transactions per second while idle ({} vehicles online) | {} | | |",
        commanded.len(),
        counted(&idle, format!("{:.1}/s", idle.transactions / idle.seconds.max(1.0)))
    );
    println!(
        "| state reports/s appended ({} vehicles) | {:.0}/s | {store} insert {:.0} rows/s | {} |",
        options.vehicles,
        ingestion.appended_per_s,
        insert_rate,
        ratio(ingestion.appended_per_s, insert_rate)
    );
    println!(
        "| state reports/s appended, generator stopped | {:.0}/s | {store} insert {:.0} rows/s | {} |",
        ingestion.draining_per_s,
        insert_rate,
        ratio(ingestion.draining_per_s, insert_rate)
    );
    println!(
        "| state reports acknowledged by the broker / appended (offered at most {OFFERED:.0}/s) | {} / {} | | |",
        ingestion.published, ingestion.appended
    );
    println!(
        "| {store} transactions / rows read / rows written per state report | {} | | |",
        counted(
            &per_report,
            format!("{:.3} / {:.1} / {:.1}", per_report.transactions, per_report.rows_read, per_report.rows_written)
        )
    );
    println!("| read model lag at the end of the load | {} | | |", ms(ingestion.drain));
    println!("| largest read model backlog during the load | {} events | | |", ingestion.max_backlog);
    println!(
        "| replay: audit verify of the whole log ({} events: read, seals, upcast, fold, compare) | {:.0} events/s | {store} read {:.0} rows/s ({} rows) | {} |",
        replay.verified,
        replay.verify_rate,
        replay.log_read_rate,
        replay.log_rows,
        ratio(replay.verify_rate, replay.log_read_rate)
    );
    println!(
        "| rebuild vehicle_state into fresh tables + swap ({} events) | {:.0} events/s | | |",
        replay.state.events,
        replay.state.rate()
    );
    println!(
        "| rebuild commands into fresh tables + swap ({} events) | {:.0} events/s | | |",
        replay.commands.events,
        replay.commands.rate()
    );
    let mb = |bytes: u64| format!("{:.0} MB", bytes as f64 / 1_000_000.0);
    println!(
        "| simulated vehicles online (registry shows them connected) | {} of {} in {:.1} s | | |",
        fleet.connected,
        fleet.vehicles,
        fleet.online_after.as_secs_f64()
    );
    println!(
        "| memory of the simulator with {} vehicles online, state every {} s | {} | | |",
        fleet.vehicles,
        fleet::REPORT_EVERY_S,
        mb(fleet.sim_rss)
    );
    println!(
        "| memory of tacho (the bench process: tacho, its HTTP client, the earlier phases' leftovers) with {} vehicles online | {} ({} before they connected; {} at the start) | | |",
        fleet.vehicles,
        mb(fleet.tacho_rss.1),
        mb(fleet.tacho_rss.0),
        mb(rss_at_start)
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

async fn drop_database(server: &str, database: &str) {
    if let Ok(mut admin) = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{server}/postgres")).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).execute(&mut admin).await;
    }
}
