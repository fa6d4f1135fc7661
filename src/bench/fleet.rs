//! (d) A fleet: simulated vehicles in a process of their own (`tacho sim`, this executable),
//! connected to the broker tacho uses and reporting state; the memory of each process once every
//! vehicle is online.

use super::cost;
use crate::adapters::mqtt::broker::BrokerUrl;
use crate::config::{Config, Mqtt};
use anyhow::Context;
use secrecy::ExposeSecret;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What a fleet run measured.
pub struct Fleet {
    /// Vehicles started.
    pub vehicles: usize,
    /// Vehicles the registry showed connected at the end.
    pub connected: usize,
    /// From starting the simulator to the registry showing every vehicle connected.
    pub online_after: Duration,
    /// Resident memory of the simulator, bytes.
    pub sim_rss: u64,
    /// Resident memory of `tacho serve`, bytes, before the fleet connected and with it.
    pub tacho_rss: (u64, u64),
}

/// Seconds between two state reports of a vehicle of the fleet.
pub const REPORT_EVERY_S: u64 = 10;

/// Starts `tacho serve` with `config` (its store holds `vins`, registered) and, once it is ready,
/// `tacho sim` for `vins` (generated from number `first`) against `broker`; waits until tacho's
/// registry shows them all connected (2 minutes at most).
pub async fn measure(config: &Config, broker: &BrokerUrl, first: u64, vins: &[String]) -> anyhow::Result<Fleet> {
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // What it says, for when it stops.
    let log = std::env::temp_dir().join(format!("tacho-bench-serve-{}.log", std::process::id()));
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut serve = tokio::process::Command::new(std::env::current_exe()?);
    serve
        .arg("serve")
        .env("TACHO_DATABASE_URL", config.database_url.expose_secret())
        .env("TACHO_HTTP_ADDR", http.to_string())
        .env(
            "TACHO_MQTT_URL",
            match config.mqtt()? {
                Mqtt::Embedded(_) => "embedded".to_owned(),
                _ => broker.to_string(),
            },
        )
        .env("TACHO_EMBEDDED_MQTT_ADDR", config.embedded_mqtt_addr.to_string())
        .env("TACHO_INSTANCE", config.instance.clone().unwrap_or_default())
        .env("TACHO_MQTT_SESSION_EXPIRY_S", "60")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true);
    if let Some(secret) = &config.auth_secret {
        serve.env("TACHO_AUTH_SECRET", secret.expose_secret());
    }
    let mut serve = serve.spawn()?;
    let ready = format!("http://{http}/readyz");
    let started = Instant::now();
    while !reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
        anyhow::ensure!(serve.try_wait()?.is_none(), "tacho serve stopped before it was ready: {}", said());
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "tacho serve was not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tacho = serve.id().context("tacho serve has no process id")?;
    // Read beside it: a running tacho holds a SQLite file for itself.
    let db = crate::app::database_for_maintenance(config).await?;
    let rss_before = cost::rss_bytes(tacho).unwrap_or(0);
    let started = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["sim", "--first", &first.to_string(), "--vehicles", &vins.len().to_string()])
        .args(["--state-every-ms", &(REPORT_EVERY_S * 1000).to_string(), "--latency-ms", "0"])
        .env("TACHO_MQTT_URL", broker.to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut connected = 0usize;
    while started.elapsed() < Duration::from_secs(120) {
        connected = super::commands::connected(&db, vins).await?;
        if connected == vins.len() {
            break;
        }
        anyhow::ensure!(child.try_wait()?.is_none(), "tacho sim stopped before its vehicles were online");
        anyhow::ensure!(serve.try_wait()?.is_none(), "tacho serve stopped while the fleet connected: {}", said());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let online_after = started.elapsed();
    // A round of state reports, then the memory of both.
    tokio::time::sleep(Duration::from_secs(REPORT_EVERY_S)).await;
    let sim_rss = child.id().and_then(cost::rss_bytes).unwrap_or(0);
    let tacho_rss = (rss_before, cost::rss_bytes(tacho).unwrap_or(0));
    let _ = child.kill().await;
    let _ = serve.kill().await;
    let _ = std::fs::remove_file(&log);
    db.close().await;
    Ok(Fleet { vehicles: vins.len(), connected, online_after, sim_rss, tacho_rss })
}
