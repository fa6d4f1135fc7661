//! The `tacho` binary: parse the command line, load the configuration, run.

use anyhow::Context;
use clap::Parser;
use tacho::adapters::mqtt::broker::BrokerUrl;
use tacho::config::{AuditCommand, Cli, Mqtt, ProjectionsCommand, ServeArgs, Subcommand_};
use tracing_subscriber::EnvFilter;

/// mimalloc: tacho allocates many small values (JSON payloads, rows) across threads; the system
/// allocator spent about a third of tacho's CPU under ingestion. Without transparent huge pages
/// (`no_thp`): where the kernel gives them to every mapping, a process holding many connections
/// (10,000 simulated vehicles) grew from 409 to 867 MB with them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A message for the person at the terminal: what failed and why, no stack trace.
        Err(e) => {
            eprintln!("Error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    match cli.command.unwrap_or(Subcommand_::Serve(Default::default())) {
        Subcommand_::Serve(args) => {
            init_tracing();
            serve(&config, args).await
        }
        Subcommand_::Migrate => {
            init_tracing();
            tacho::app::database(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Subcommand_::Token(args) => {
            anyhow::ensure!(
                tacho::auth::valid_subject(&args.sub),
                "--sub must be 1 to 256 printable characters and not start with tacho: or vehicle: (tacho's own actors)"
            );
            let keys = config.auth_keys()?;
            anyhow::ensure!(
                !args.fleet
                    || (args.roles.contains(&tacho::auth::Role::Dealer)
                        && !args.roles.contains(&tacho::auth::Role::Owner)),
                "--fleet is for dealer tokens (not owners'): it lets a dealer see every vehicle"
            );
            let now = chrono::Utc::now().timestamp();
            let token = match args.fleet {
                true => keys.mint_fleet(&args.sub, args.roles, now, args.ttl),
                false => keys.mint(&args.sub, args.roles, (!args.vins.is_empty()).then_some(args.vins), now, args.ttl),
            };
            println!("{token}");
            Ok(())
        }
        Subcommand_::Sim(args) => {
            init_tracing();
            sim(&config, args).await
        }
        Subcommand_::Bench { seconds, rate, concurrency, vehicles, fleet, registered, only } => {
            tracing_subscriber::fmt().with_env_filter(EnvFilter::new("warn")).init();
            let options = tacho::bench::BenchOptions { seconds, rate, concurrency, vehicles, fleet, registered, only };
            tacho::bench::run(&config, options).await
        }
        Subcommand_::Audit(AuditCommand::Verify { aggregate_type, id, expect }) => {
            let clean =
                tacho::maintenance::audit_verify(&config, aggregate_type.as_deref(), id.as_deref(), expect.as_deref())
                    .await?;
            anyhow::ensure!(clean, "the log does not verify: see the mismatches above");
            Ok(())
        }
        Subcommand_::Projections(ProjectionsCommand::Rebuild { name }) => {
            tracing_subscriber::fmt().with_env_filter(EnvFilter::new("warn")).init();
            tacho::maintenance::projections_rebuild(&config, name.as_deref()).await
        }
        Subcommand_::Openapi { output } => {
            let spec = tacho::adapters::http::openapi::spec_json();
            match output {
                Some(path) => std::fs::write(&path, spec).with_context(|| format!("cannot write {}", path.display())),
                None => {
                    print!("{spec}");
                    Ok(())
                }
            }
        }
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rumqttd=off")),
        )
        .init();
}

async fn serve(config: &tacho::config::Config, args: ServeArgs) -> anyhow::Result<()> {
    // Listening from the start: a stop asked for while tacho starts is kept until it can stop.
    let stop = stop_signal();
    let listener = tokio::net::TcpListener::bind(config.http_addr).await.with_context(|| {
        format!(
            "cannot listen on {} for HTTP: is another process using it? Choose another address with \
             TACHO_HTTP_ADDR=127.0.0.1:8081",
            config.http_addr
        )
    })?;
    // The demo's webhook receiver runs on this machine: loopback is allowed unless ranges are named.
    let mut config = config.clone();
    if args.demo && config.webhook_allow.is_empty() {
        config.webhook_allow = tacho::webhooks::address::LOOPBACK.to_vec();
    }
    let config = &config;
    let running = tacho::app::start(config, listener).await?;
    let demo = match args.demo {
        true => Some(tacho::demo::start(&running, args.demo_vehicles).await?),
        false => None,
    };
    print!("{}", tacho::demo::banner(config, &running, demo.as_ref())?);
    tokio::select! {
        _ = stop => tracing::info!("shutting down: finishing requests and batches in flight"),
        _ = running.shutdown.cancelled() => {}
    }
    // The demo vehicles say goodbye while tacho still listens, so the registry shows them offline.
    if let Some(demo) = demo {
        demo.stop().await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    running.shutdown.cancel();
    running.join().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn sim(config: &tacho::config::Config, args: tacho::config::SimArgs) -> anyhow::Result<()> {
    use tacho::sim::{sim_vin, Behaviour, SimVehicle};
    let broker = match config.mqtt()? {
        Mqtt::Off => anyhow::bail!("tacho sim needs a broker: set TACHO_MQTT_URL"),
        // The broker of a tacho running with the embedded default.
        Mqtt::Embedded(addr) => BrokerUrl::local(addr),
        Mqtt::External(url) => url,
    };
    let vins: Vec<String> =
        if args.vins.is_empty() { (args.first..args.first + args.vehicles).map(sim_vin).collect() } else { args.vins };
    let behaviour = Behaviour {
        latency: std::time::Duration::from_millis(args.latency_ms),
        fail_rate: args.fail_rate,
        reject_rate: args.reject_rate,
        silence_rate: args.silence_rate,
        state_every: (args.state_every_ms > 0).then(|| std::time::Duration::from_millis(args.state_every_ms)),
    };
    let mut fleet = Vec::new();
    for vin in &vins {
        let broker = match &args.certs {
            None => broker.clone(),
            Some(dir) => {
                let (cert, key) = (dir.join(format!("devices/{vin}.crt")), dir.join(format!("devices/{vin}.key")));
                let tls = tacho::adapters::mqtt::broker::Tls::load(Some(&dir.join("ca.crt")), Some((&cert, &key)))
                    .map_err(|e| anyhow::anyhow!("{vin}: {e} (make it with scripts/dev-pki DIR device ID {vin})"))?;
                broker.clone().with_tls(tls)
            }
        };
        fleet.push((broker, vin.clone()));
    }
    let started = std::time::Instant::now();
    let vehicles = SimVehicle::connect_fleet(fleet, &behaviour).await?;
    for vehicle in &vehicles {
        println!("{} online", vehicle.vin());
    }
    eprintln!("{} vehicles online at {broker} in {:.1?}", vehicles.len(), started.elapsed());
    let drop_after = async {
        match args.drop_after_s {
            Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop_signal() => {
            for vehicle in vehicles {
                let _ = vehicle.disconnect().await;
            }
        }
        _ = drop_after => {
            for vehicle in vehicles {
                println!("{} dropped", vehicle.vin());
                vehicle.drop_abruptly();
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Ctrl-C or SIGTERM (what container runtimes send to stop a process): either stops tacho the same
/// way. The handlers are installed when this is called, not when the future is first polled.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut signals = {
        use tokio::signal::unix::{signal, SignalKind};
        [SignalKind::interrupt(), SignalKind::terminate()].map(|kind| signal(kind).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let [interrupt, terminate] = &mut signals;
            match (interrupt, terminate) {
                (Some(interrupt), Some(terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
