//! `tacho bench`: measures tacho end to end on this machine, next to the floors it cannot beat,
//! and prints a table. A benchmark, never a test: nothing here asserts on time.
//!
//! (a) [`commands`]: command round trips at a fixed rate (p50/p99), then sustained.
//! (b) [`ingestion`]: state reports from 1,000 simulated vehicles; appended per second, read-model lag;
//!     [`webhooks`]: their delivery to a local receiver (lag under the load, then a replay at full speed).
//! (c) [`replay`]: audit verify of the whole log, rebuilds into fresh tables.
//! The floors ([`floors`]): a raw MQTT round trip, raw inserts and reads of the same store.

mod commands;
mod cost;
mod fleet;
mod floors;
mod ingestion;
mod replay;
mod webhooks;

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
    /// Vehicles registered during the ingestion phase (those publishing among them).
    pub registered: u64,
    /// The phases to run (all when empty).
    pub only: Vec<Phase>,
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

/// The read models (and seals) the ingestion phase waits for.
const READ_MODELS: [&str; 6] = [
    crate::projections::vehicles::VehiclesProjection::NAME,
    crate::projections::consents::ConsentsProjection::NAME,
    crate::projections::devices::DevicesProjection::NAME,
    crate::projections::commands::CommandsProjection::NAME,
    crate::projections::state::StateProjection::NAME,
    crate::projections::seals::SealProjection::NAME,
];

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

/// The phases of a run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Phase {
    /// (a) Command round trips, the cost per command, the idle cost.
    Commands,
    /// (b) State ingestion and state reads under it.
    Ingestion,
    /// (c) Audit verify and rebuilds of the whole log.
    Replay,
    /// (d) A fleet of simulated vehicles and tacho in processes of their own.
    Fleet,
}

/// The rows of the table printed at the end.
#[derive(Default)]
struct Table(Vec<String>);

impl Table {
    fn row(&mut self, measure: impl std::fmt::Display, tacho: impl std::fmt::Display, floor: &str, ratio: &str) {
        self.0.push(format!("| {measure} | {tacho} | {floor} | {ratio} |"));
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}x", a / b)
    } else {
        "-".into()
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1_000_000.0)
}

/// SQLite counts no transactions: those figures say so.
fn counted(cost: &cost::Cost, figure: String) -> String {
    if cost.counted {
        figure
    } else {
        "n/a (SQLite)".to_owned()
    }
}

/// What every phase uses.
struct Bench<'a> {
    options: &'a BenchOptions,
    config: Config,
    running: crate::app::Running,
    broker: crate::adapters::mqtt::broker::BrokerUrl,
    db: crate::store::Db,
    store: &'static str,
    keys: AuthKeys,
    base: String,
    http: reqwest::Client,
    clock: Instant,
    table: Table,
    /// The idle cost per second, once measured (phase commands); taken off the phases' costs.
    idle: cost::Cost,
}

/// Runs the benchmark on the store and broker of `config`: PostgreSQL (a throw-away database on its
/// server) or SQLite (a throw-away file), an external broker or the embedded one (on a free port).
pub async fn run(config: &Config, options: BenchOptions) -> anyhow::Result<()> {
    let scratch = Scratch::of(config)?;
    let result = run_on(config, &options, &scratch).await;
    scratch.remove().await;
    let table = result?;
    println!();
    println!(
        "tacho bench — {} cores, {} build, {}, MQTT {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        scratch.store(),
        match config.mqtt()? {
            Mqtt::Embedded(_) => "embedded broker",
            _ => "external broker",
        }
    );
    println!();
    println!("| measure | tacho | floor | tacho / floor |");
    println!("|---|---|---|---|");
    for row in table.0 {
        println!("{row}");
    }
    println!();
    println!(
        "Targets on a 2-core machine: round trip p50 ≤ 5 ms and p99 ≤ 25 ms at 100/s; ≥ 1,000 commands/s; \
         ≥ 30,000 reports/s; state read p99 ≤ 5 ms under ingestion; replay ≥ 150,000 and rebuilds ≥ 100,000 \
         events/s; ≥ 5,000 webhook events/s (batched); 10,000 simulated vehicles online within 10 s in 500 MB; \
         tacho ≤ 150 MB with them."
    );
    Ok(())
}

async fn run_on(config: &Config, options: &BenchOptions, scratch: &Scratch) -> anyhow::Result<Table> {
    let mut bench_config = config.clone();
    bench_config.database_url = SecretString::from(scratch.url()?);
    bench_config.auth_secret = Some(SecretString::from(uuid::Uuid::new_v4().to_string()));
    bench_config.instance = Some(format!("tacho-bench-{}", std::process::id()));
    bench_config.mqtt_session_expiry_s = 60;
    // The webhook receiver listens on loopback.
    bench_config.webhook_allow.extend(crate::webhooks::address::LOOPBACK);
    if let Mqtt::Embedded(_) = config.mqtt()? {
        bench_config.embedded_mqtt_addr = free_addr()?;
    }
    // One owner keeps `concurrency` long polls open at once.
    bench_config.http_max_streams_per_caller = bench_config.http_max_streams_per_caller.max(options.concurrency * 2);
    bench_config.http_max_streams = bench_config.http_max_streams.max(options.concurrency * 4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = crate::app::start(&bench_config, listener).await?;
    let broker = running.broker.clone().context("tacho bench needs MQTT: TACHO_MQTT_URL must not be none")?;
    let db = running.state.db.clone();
    let keys = AuthKeys::new(bench_config.auth_secret.as_ref().context("secret set above")?);
    let base = format!("http://{}", running.addr);
    let mut bench = Bench {
        options,
        config: bench_config,
        running,
        broker,
        db,
        store: scratch.store(),
        keys,
        base,
        http: reqwest::Client::new(),
        clock: Instant::now(),
        table: Table::default(),
        idle: cost::Cost::default(),
    };
    let runs = |phase| options.only.is_empty() || options.only.contains(&phase);
    if runs(Phase::Commands) {
        bench.commands().await?;
    }
    if runs(Phase::Ingestion) {
        bench.ingestion().await?;
    }
    if runs(Phase::Replay) {
        bench.replay().await?;
    }
    if runs(Phase::Fleet) {
        return bench.fleet().await;
    }
    bench.running.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), bench.running.join()).await;
    Ok(bench.table)
}

/// A free local address (the port is free when this returns).
fn free_addr() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

impl Bench<'_> {
    /// (a) Round trips at a fixed rate, then sustained; what they cost; what idling costs.
    async fn commands(&mut self) -> anyhow::Result<()> {
        let (options, store) = (self.options, self.store);
        eprintln!("floors: raw MQTT round trips ...");
        let (mqtt_p50, mqtt_p99) = floors::mqtt_round_trip(&self.broker, 2000).await?;
        eprintln!("(a) command round trips ...");
        let commanded: Vec<String> = (1..=20).map(|n| sim_vin(9_000_000_000 + n)).collect();
        setup(&self.running.state.frameworks, &commanded, false).await?;
        let mut sims = Vec::new();
        for vin in &commanded {
            sims.push(SimVehicle::connect(&self.broker, vin, Behaviour::default()).await?);
        }
        wait_connected(&self.db, &commanded).await?;
        let token =
            self.keys.mint("bench", vec![Role::Owner], Some(commanded.clone()), chrono::Utc::now().timestamp(), 3600);
        eprintln!("    idle: {} s without load ...", IDLE_SECONDS + 2 * cost::SETTLE.as_secs());
        // Twice the settling time: the set-up's last counters (idle backends report within 10 s) must
        // not fall into the idle window.
        tokio::time::sleep(2 * cost::SETTLE).await;
        let quiet = cost::read(&self.db).await?;
        tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
        let idle = cost::read(&self.db).await?.since(&quiet);
        self.idle = idle;
        let client = Commands { http: self.http.clone(), base: self.base.clone(), token, fleet: commanded.clone() };
        let (mut fixed, fixed_failed) = client.fixed_rate(options.rate, options.seconds).await;
        let (p50, p99) = (percentile(&mut fixed, 0.50), percentile(&mut fixed, 0.99));
        tokio::time::sleep(cost::SETTLE).await;
        let before = cost::read(&self.db).await?;
        let (done, sustained, sustained_failed) = client.closed_loop(options.concurrency, options.seconds).await;
        tokio::time::sleep(cost::SETTLE).await;
        let spent = cost::read(&self.db).await?.since(&before);
        let per_command = spent.less_idle(&idle, cost::SETTLE.as_secs_f64()).per(done as f64);
        drop(sims);
        eprintln!("    done in {:.0?}", self.clock.elapsed());

        let t = &mut self.table;
        let rate = options.rate;
        let floor = |what: &str, d: Duration| format!("MQTT round trip {what} {}", ms(d));
        t.row(
            format!("command round trip p50 at {rate}/s"),
            ms(p50),
            &floor("p50", mqtt_p50),
            &ratio(p50.as_secs_f64(), mqtt_p50.as_secs_f64()),
        );
        t.row(
            format!("command round trip p99 at {rate}/s"),
            ms(p99),
            &floor("p99", mqtt_p99),
            &ratio(p99.as_secs_f64(), mqtt_p99.as_secs_f64()),
        );
        let failures = |o: &commands::Outcomes| if o.total() > 0 { format!(" ({o})") } else { String::new() };
        t.row(
            format!("commands not completed at {rate}/s"),
            format!("{} of {}{}", fixed_failed.total(), fixed.len() + fixed_failed.total(), failures(&fixed_failed)),
            "",
            "",
        );
        t.row(
            format!("sustained commands/s ({} in flight)", options.concurrency),
            format!("{sustained:.0}/s ({} not completed{})", sustained_failed.total(), failures(&sustained_failed)),
            &format!("1 / MQTT p50 = {:.0}/s per flow", 1.0 / mqtt_p50.as_secs_f64()),
            "",
        );
        t.row(
            format!("{store} transactions per command, requested → succeeded (sustained phase, all included)"),
            counted(&per_command, format!("{:.1}", per_command.transactions)),
            "1",
            &counted(&per_command, format!("{:.1}x", per_command.transactions)),
        );
        t.row(
            format!("{store} rows read / written per command"),
            counted(&per_command, format!("{:.0} / {:.0}", per_command.rows_read, per_command.rows_written)),
            "",
            "",
        );
        t.row(
            "CPU seconds per 1,000 commands: bench process (tacho, vehicles, HTTP client) / PostgreSQL",
            format!(
                "{:.2} / {}",
                per_command.cpu_self * 1000.0,
                counted(&per_command, format!("{:.2}", per_command.cpu_db * 1000.0))
            ),
            "",
            "",
        );
        t.row(
            format!("{store} transactions per second while idle ({} vehicles online)", commanded.len()),
            counted(&idle, format!("{:.1}/s", idle.transactions / idle.seconds.max(1.0))),
            "",
            "",
        );
        Ok(())
    }

    /// (b) State reports from `vehicles` simulated publishers among `registered` vehicles, with
    /// state reads at a fixed rate meanwhile.
    async fn ingestion(&mut self) -> anyhow::Result<()> {
        let (options, store) = (self.options, self.store);
        anyhow::ensure!(options.vehicles > 0, "--vehicles must be at least 1 for the ingestion phase");
        eprintln!("floors: a raw {store} insert ...");
        let insert_rate = floors::insert(&self.db, 200_000).await?;
        eprintln!("(b) state ingestion from {} vehicles ...", options.vehicles);
        let vehicles: Vec<String> = (1..=options.vehicles).map(|n| sim_vin(8_000_000_000 + n)).collect();
        let silent: Vec<String> = (options.vehicles + 1..=options.registered.max(options.vehicles))
            .map(|n| sim_vin(8_000_000_000 + n))
            .collect();
        setup(&self.running.state.frameworks, &vehicles, true).await?;
        setup(&self.running.state.frameworks, &silent, true).await?;
        // Reports are admitted by the registry and consent read models: let them catch up first, or the
        // first reports are refused (consent_missing) and the count below is off.
        for vin in &vehicles {
            self.running.state.settle_admission(vin).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        // And every read model caught up with the registrations: their backlog is not the reports'.
        let subscriptions = &self.running.state.subscriptions;
        for name in subscriptions.names() {
            if READ_MODELS.contains(&name) {
                subscriptions.catch_up(name).await?;
            }
        }
        let registered = vehicles.len() + silent.len();
        eprintln!("    {registered} vehicles registered in {:.0?}", self.clock.elapsed());
        // A partner subscribed to every vehicle's state (the vehicles grant it telemetry).
        let receiver = webhooks::Receiver::start().await?;
        let partner = self.keys.mint("bench", vec![Role::Service], None, chrono::Utc::now().timestamp(), 3600);
        let subscription =
            serde_json::json!({"endpoint": receiver.url, "event_types": ["vehicle.state"], "purpose": "telemetry"});
        let created: serde_json::Value = self
            .http
            .post(format!("{}/v1/subscriptions", self.base))
            .bearer_auth(&partner)
            .json(&subscription)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let subscription_id: uuid::Uuid =
            created["subscription"]["subscription_id"].as_str().context("a subscription id")?.parse()?;
        let load_from: i64 =
            crate::store::Sql::new("SELECT coalesce(max(global_position), 0) + 1 FROM events").scalar(&self.db).await?;
        receiver.keep_lags(true);
        tokio::time::sleep(cost::SETTLE).await;
        let before = cost::read(&self.db).await?;
        let reader = self.keys.mint_fleet("bench-dealer", vec![Role::Dealer], chrono::Utc::now().timestamp(), 3600);
        let reads = ingestion::StateReads { http: self.http.clone(), base: self.base.clone(), token: reader };
        // The floor: the same reads without load (the vehicles hold no state yet: the same queries).
        let (mut idle_reads, _) = reads.run(&vehicles, 2).await?;
        let (ingestion, read_times) = tokio::join!(
            ingest(&self.broker, &self.db, &vehicles, options.seconds),
            reads.run(&vehicles, options.seconds)
        );
        let ingestion = ingestion?;
        let (mut read_times, read_failures) = read_times?;
        tokio::time::sleep(cost::SETTLE).await;
        let spent = cost::read(&self.db).await?.since(&before);
        // Idle costs of the time around the load (the settling, the drain) are not the reports'.
        let per_report = spent.less_idle(&self.idle, cost::SETTLE.as_secs_f64()).per(ingestion.appended as f64);
        eprintln!("    webhooks: the load's deliveries, then a replay of them ...");
        let caught_up = webhooks::wait_delivered(&self.db, subscription_id, Duration::from_secs(300)).await?;
        receiver.keep_lags(false);
        let (mut lags, delivered) = (receiver.lags(), receiver.events());
        let replay_from = receiver.events();
        let replay = self
            .http
            .post(format!("{}/v1/subscriptions/{subscription_id}/replay", self.base))
            .bearer_auth(&partner)
            .json(&serde_json::json!({"from_position": load_from}))
            .send()
            .await?;
        anyhow::ensure!(replay.status().is_success(), "replay refused: {}", replay.status());
        let replayed_in = webhooks::wait_delivered(&self.db, subscription_id, Duration::from_secs(600)).await?;
        let replayed = receiver.events() - replay_from;
        let batches = receiver.requests();
        let raw_rate = webhooks::raw_posts(&receiver.url, 500, 3.0).await?;
        eprintln!("    done in {:.0?}", self.clock.elapsed());

        let t = &mut self.table;
        let floor = format!("{store} insert {insert_rate:.0} rows/s");
        t.row(
            format!("state reports/s appended ({} vehicles)", options.vehicles),
            format!("{:.0}/s", ingestion.appended_per_s),
            &floor,
            &ratio(ingestion.appended_per_s, insert_rate),
        );
        t.row(
            "state reports/s appended, generator stopped",
            format!("{:.0}/s", ingestion.draining_per_s),
            &floor,
            &ratio(ingestion.draining_per_s, insert_rate),
        );
        t.row(
            format!("state reports acknowledged by the broker / appended (offered at most {OFFERED:.0}/s)"),
            format!("{} / {}", ingestion.published, ingestion.appended),
            "",
            "",
        );
        t.row(
            format!("{store} transactions / rows read / rows written per state report"),
            counted(
                &per_report,
                format!(
                    "{:.3} / {:.1} / {:.1}",
                    per_report.transactions, per_report.rows_read, per_report.rows_written
                ),
            ),
            "",
            "",
        );
        t.row(
            "CPU seconds per 1,000 state reports: bench process (tacho, publishers) / PostgreSQL",
            format!(
                "{:.3} / {}",
                per_report.cpu_self * 1000.0,
                counted(&per_report, format!("{:.3}", per_report.cpu_db * 1000.0))
            ),
            "",
            "",
        );
        t.row("read model lag at the end of the load", ms(ingestion.drain), "", "");
        t.row("largest read model backlog during the load", format!("{} events", ingestion.max_backlog), "", "");
        t.row(
            format!(
                "GET /v1/vehicles/{{vin}}/state p50 / p99 under the load ({} reads at {}/s, {registered} vehicles registered)",
                read_times.len() + read_failures,
                ingestion::READS_PER_S
            ),
            format!(
                "{} / {}{}",
                ms(percentile(&mut read_times, 0.50)),
                ms(percentile(&mut read_times, 0.99)),
                if read_failures > 0 { format!(" ({read_failures} failed)") } else { String::new() }
            ),
            &format!(
                "without load {} / {}",
                ms(percentile(&mut idle_reads, 0.50)),
                ms(percentile(&mut idle_reads, 0.99))
            ),
            &ratio(percentile(&mut read_times, 0.99).as_secs_f64(), percentile(&mut idle_reads, 0.99).as_secs_f64()),
        );
        t.row(
            format!(
                "webhook delivery lag p50 / p99 under the load (received − recorded; {} of {} reports delivered to one subscription of every vehicle's state{})",
                lags.len(),
                ingestion.appended,
                if caught_up.is_none() { ", not caught up within 300 s" } else { "" }
            ),
            format!("{} / {}", ms(percentile(&mut lags, 0.50)), ms(percentile(&mut lags, 0.99))),
            "",
            "",
        );
        let replay_rate = replayed_in.map(|took| replayed as f64 / took.as_secs_f64().max(0.001));
        t.row(
            format!(
                "webhook events delivered/s, a replay of the load ({replayed} events, batches of ≤ 500, signed, consent checked; {batches} requests in all, {delivered} events before the replay)"
            ),
            match replay_rate {
                Some(rate) => format!("{rate:.0}/s"),
                None => "not caught up within 600 s".to_owned(),
            },
            &format!("raw POSTs of 500 events to the receiver {raw_rate:.0}/s"),
            &replay_rate.map(|r| ratio(r, raw_rate)).unwrap_or_default(),
        );
        Ok(())
    }

    /// (c) Audit verify of the whole log and two rebuilds.
    async fn replay(&mut self) -> anyhow::Result<()> {
        let store = self.store;
        eprintln!("(c) replay: audit verify and rebuilds of the whole log ...");
        let replay = replay::measure(&self.running.state).await?;
        eprintln!("    done in {:.0?}", self.clock.elapsed());
        let t = &mut self.table;
        t.row(
            format!(
                "replay: audit verify of the whole log ({} events: read, seals, upcast, fold, compare)",
                replay.verified
            ),
            format!("{:.0} events/s", replay.verify_rate),
            &format!("{store} read {:.0} rows/s ({} rows)", replay.log_read_rate, replay.log_rows),
            &ratio(replay.verify_rate, replay.log_read_rate),
        );
        for (name, rebuilt) in [("vehicle_state", &replay.state), ("commands", &replay.commands)] {
            t.row(
                format!("rebuild {name} into fresh tables + swap ({} events)", rebuilt.events),
                format!("{:.0} events/s", rebuilt.rate()),
                "",
                "",
            );
        }
        Ok(())
    }

    /// (d) The fleet: the in-process tacho stops, `tacho serve` starts in a process of its own on
    /// the same store, and `tacho sim` connects the fleet to it; the memory of both.
    async fn fleet(self) -> anyhow::Result<Table> {
        let Bench { options, mut config, running, broker, clock, mut table, .. } = self;
        eprintln!("(d) a fleet of {} simulated vehicles and tacho in processes of their own ...", options.fleet);
        let first = 7_000_000_000;
        let fleet_vins: Vec<String> = (first..first + options.fleet).map(sim_vin).collect();
        setup(&running.state.frameworks, &fleet_vins, true).await?;
        eprintln!("    {} vehicles registered in {:.0?}", fleet_vins.len(), clock.elapsed());
        running.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), running.join()).await;
        config.instance = Some(format!("tacho-bench-fleet-{}", std::process::id()));
        let broker = match config.mqtt()? {
            // The stopped instance's broker may still hold its port.
            Mqtt::Embedded(_) => {
                config.embedded_mqtt_addr = free_addr()?;
                crate::adapters::mqtt::broker::BrokerUrl::parse(&format!("mqtt://{}", config.embedded_mqtt_addr))
                    .map_err(|e| anyhow::anyhow!(e))?
            }
            _ => broker,
        };
        let fleet = fleet::measure(&config, &broker, first, &fleet_vins).await?;
        eprintln!("    done in {:.0?}", clock.elapsed());
        table.row(
            "simulated vehicles online (registry shows them connected)",
            format!("{} of {} in {:.1} s", fleet.connected, fleet.vehicles, fleet.online_after.as_secs_f64()),
            "",
            "",
        );
        table.row(
            format!(
                "memory of the simulator with {} vehicles online, state every {} s",
                fleet.vehicles,
                fleet::REPORT_EVERY_S
            ),
            mb(fleet.sim_rss),
            "",
            "",
        );
        table.row(
            format!("memory of tacho (`tacho serve`, a process of its own) with {} vehicles online", fleet.vehicles),
            format!("{} ({} before they connected)", mb(fleet.tacho_rss.1), mb(fleet.tacho_rss.0)),
            "",
            "",
        );
        Ok(table)
    }
}

/// Registers and activates `vins` (with consents) straight through the frameworks, a few hundred
/// vehicles per transaction.
async fn setup(frameworks: &Frameworks, vins: &[String], telemetry: bool) -> anyhow::Result<()> {
    let at = chrono::Utc::now();
    let meta = HashMap::from([("actor".to_owned(), "bench".to_owned())]);
    let purpose = Purpose::parse(if telemetry { "telemetry" } else { "remote_commands" })?;
    futures::stream::iter(vins.chunks(500))
        .map(|chunk| {
            let (meta, purpose) = (&meta, &purpose);
            async move {
                let mut vehicles = Vec::with_capacity(chunk.len());
                let mut consents = Vec::with_capacity(chunk.len());
                for vin in chunk {
                    let register = VehicleCommand::Register {
                        vin: Vin::parse(vin)?,
                        model: "Bench".into(),
                        model_year: 2026,
                        market: "EU".into(),
                        options: vec![],
                        data_collection: Default::default(),
                        at,
                    };
                    vehicles.push((vin.clone(), vec![register, VehicleCommand::Activate { at }]));
                    let grant = ConsentCommand::Grant {
                        vin: vin.clone(),
                        subject: "bench".into(),
                        purpose: purpose.clone(),
                        legal_basis: "consent".into(),
                        expires_at: None,
                        granted_by: "bench".into(),
                        at,
                    };
                    consents.push((vin.clone(), vec![grant]));
                }
                frameworks.execute_many(&frameworks.vehicles, &vehicles, meta).await?;
                frameworks.execute_many(&frameworks.consents, &consents, meta).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(2)
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
