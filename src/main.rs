//! The `tacho` binary: parse the command line, load the configuration, run.

use anyhow::Context;
use clap::Parser;
use tacho::adapters::http::auth::AuthKeys;
use tacho::config::{Cli, Subcommand_};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    match cli.command.unwrap_or(Subcommand_::Serve) {
        Subcommand_::Serve => {
            init_tracing();
            serve(&config).await
        }
        Subcommand_::Migrate => {
            init_tracing();
            tacho::app::database(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Subcommand_::Token(args) => {
            let keys = AuthKeys::new(&config.resolve_auth_secret()?);
            let vins = (!args.vins.is_empty()).then_some(args.vins);
            println!("{}", keys.mint(&args.sub, args.roles, vins, chrono::Utc::now().timestamp(), args.ttl));
            Ok(())
        }
        Subcommand_::Sim(args) => {
            init_tracing();
            sim(&config, args).await
        }
        Subcommand_::Bench { seconds, rate, concurrency, vehicles } => {
            tracing_subscriber::fmt().with_env_filter(EnvFilter::new("warn")).init();
            tacho::bench::run(&config, tacho::bench::BenchOptions { seconds, rate, concurrency, vehicles }).await
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
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .init();
}

async fn serve(config: &tacho::config::Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http_addr).await.with_context(|| {
        format!(
            "cannot listen on {}: is another process using it? Choose another with TACHO_HTTP_ADDR",
            config.http_addr
        )
    })?;
    let running = tacho::app::start(config, listener).await?;
    println!("tacho listening on http://{}", running.addr);
    println!("  API docs:  http://{}/docs", running.addr);
    println!("  a token:   cargo run --release -- token --role owner --sub alice --vin <VIN>");
    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    running.join().await
}

async fn sim(config: &tacho::config::Config, args: tacho::config::SimArgs) -> anyhow::Result<()> {
    use tacho::sim::{sim_vin, Behaviour, SimVehicle};
    let broker = config.broker()?.context("tacho sim needs a broker: set TACHO_MQTT_URL")?;
    let vins: Vec<String> =
        if args.vins.is_empty() { (args.first..args.first + args.vehicles).map(sim_vin).collect() } else { args.vins };
    let behaviour = Behaviour {
        latency: std::time::Duration::from_millis(args.latency_ms),
        fail_rate: args.fail_rate,
        reject_rate: args.reject_rate,
        silence_rate: args.silence_rate,
        state_every: (args.state_every_ms > 0).then(|| std::time::Duration::from_millis(args.state_every_ms)),
    };
    let mut vehicles = Vec::new();
    for vin in &vins {
        vehicles.push(SimVehicle::connect(&broker, vin, behaviour.clone()).await?);
        println!("{vin} online at {broker}");
    }
    let drop_after = async {
        match args.drop_after_s {
            Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
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
