//! `tacho bench`: measures tacho end to end on this machine, next to the floors it cannot beat,
//! and prints a table. A benchmark, never a test: nothing here asserts on time.
//!
//! (a) [`commands`]: command round trips at a fixed rate (p50/p99), then sustained.
//! (b) [`ingestion`]: state reports from 1,000 simulated vehicles; appended per second, read-model lag.
//! (c) [`replay`]: audit verify of the whole log, rebuilds into fresh tables.
//! The floors ([`floors`]): a raw MQTT round trip, raw PostgreSQL inserts and reads.

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
use crate::store::Db;
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
    bench_config.instance = Some(format!("tacho-bench-{}", std::process::id()));
    bench_config.mqtt_session_expiry_s = 60;
    // One owner keeps `concurrency` long polls open at once.
    bench_config.http_max_streams_per_caller = bench_config.http_max_streams_per_caller.max(options.concurrency * 2);
    bench_config.http_max_streams = bench_config.http_max_streams.max(options.concurrency * 4);
    eprintln!("floors: raw MQTT round trips and a raw PostgreSQL insert ...");
    let (mqtt_p50, mqtt_p99) = floors::mqtt_round_trip(&broker, 2000).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = crate::app::start(&bench_config, listener).await?;
    let rss_at_start = cost::rss_bytes(std::process::id()).unwrap_or(0);
    let Db::Postgres(pool) = running.state.db.clone() else { anyhow::bail!("tacho bench needs PostgreSQL") };
    let pg_rate = floors::postgres_insert(&pool, 200_000).await?;
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
    wait_connected(&pool, &commanded).await?;
    let token = keys.mint("bench", vec![Role::Owner], Some(commanded.clone()), chrono::Utc::now().timestamp(), 3600);
    eprintln!("    idle: {} s without load ...", IDLE_SECONDS + 2 * cost::SETTLE.as_secs());
    // Twice the settling time: the set-up's last counters (idle backends report within 10 s) must
    // not fall into the idle window.
    tokio::time::sleep(2 * cost::SETTLE).await;
    let quiet = cost::read(&pool).await?;
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let idle = cost::read(&pool).await?.since(&quiet);
    let client = Commands { http: http.clone(), base: base.clone(), token, fleet: commanded.clone() };
    let (mut fixed, fixed_failed) = client.fixed_rate(options.rate, options.seconds).await;
    let (p50, p99) = (percentile(&mut fixed, 0.50), percentile(&mut fixed, 0.99));
    tokio::time::sleep(cost::SETTLE).await;
    let before = cost::read(&pool).await?;
    let (done, sustained, sustained_failed) = client.closed_loop(options.concurrency, options.seconds).await;
    tokio::time::sleep(cost::SETTLE).await;
    let spent = cost::read(&pool).await?.since(&before);
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
    let before = cost::read(&pool).await?;
    let ingestion = ingest(&broker, &pool, &vehicles, options.seconds).await?;
    tokio::time::sleep(cost::SETTLE).await;
    let spent = cost::read(&pool).await?.since(&before);
    // Idle costs of the time around the load (the settling, the drain) are not the reports'.
    let per_report = spent.less_idle(&idle, cost::SETTLE.as_secs_f64()).per(ingestion.appended as f64);
    eprintln!("    done in {:.0?}", clock.elapsed());

    eprintln!("(c) replay: audit verify and rebuilds of the whole log ...");
    let replay = replay::measure(&running.state, &pool).await?;
    eprintln!("    done in {:.0?}", clock.elapsed());

    eprintln!("(d) a fleet of {} simulated vehicles in a process of their own ...", options.fleet);
    let first = 7_000_000_000;
    let fleet_vins: Vec<String> = (first..first + options.fleet).map(sim_vin).collect();
    setup(&running.state.frameworks, &fleet_vins, true).await?;
    eprintln!("    {} vehicles registered in {:.0?}", fleet_vins.len(), clock.elapsed());
    let fleet = fleet::measure(&broker, &pool, first, &fleet_vins).await?;
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
        "| PostgreSQL transactions per command, requested → succeeded (sustained phase, all included) | {:.1} | 1 | {:.1}x |",
        per_command.transactions, per_command.transactions
    );
    println!(
        "| PostgreSQL rows read / written per command | {:.0} / {:.0} | | |",
        per_command.rows_read, per_command.rows_written
    );
    println!(
        "| CPU seconds per 1,000 commands: bench process (tacho, vehicles, HTTP client) / PostgreSQL | {:.2} / {:.2} | | |",
        per_command.cpu_self * 1000.0,
        per_command.cpu_db * 1000.0
    );
    println!(
        "| PostgreSQL transactions per second while idle ({} vehicles online) | {:.1}/s | | |",
        commanded.len(),
        idle.transactions / idle.seconds.max(1.0)
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
    println!(
        "| PostgreSQL transactions / rows read / rows written per state report | {:.3} / {:.1} / {:.1} | | |",
        per_report.transactions, per_report.rows_read, per_report.rows_written
    );
    println!("| read model lag at the end of the load | {} | | |", ms(ingestion.drain));
    println!("| largest read model backlog during the load | {} events | | |", ingestion.max_backlog);
    println!(
        "| replay: audit verify of the whole log ({} events: read, seals, upcast, fold, compare) | {:.0} events/s | PostgreSQL read {:.0} rows/s ({} rows) | {} |",
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
