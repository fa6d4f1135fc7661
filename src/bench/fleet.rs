//! (d) A fleet: simulated vehicles in a process of their own (`tacho sim`, this executable),
//! connected to the broker tacho uses and reporting state; the memory of each process once every
//! vehicle is online.

use super::cost;
use crate::adapters::mqtt::broker::BrokerUrl;
use crate::store::Db;
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
    /// Resident memory of this process (tacho), bytes, before the fleet connected and with it.
    pub tacho_rss: (u64, u64),
}

/// Seconds between two state reports of a vehicle of the fleet.
pub const REPORT_EVERY_S: u64 = 10;

/// Starts `tacho sim` for `vins` (generated from number `first`, registered) against `broker` and
/// waits until tacho's registry shows them all connected (2 minutes at most).
pub async fn measure(broker: &BrokerUrl, db: &Db, first: u64, vins: &[String]) -> anyhow::Result<Fleet> {
    let rss_before = cost::rss_bytes(std::process::id()).unwrap_or(0);
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
        connected = super::commands::connected(db, vins).await?;
        if connected == vins.len() {
            break;
        }
        if child.try_wait()?.is_some() {
            anyhow::bail!("tacho sim stopped before its vehicles were online");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let online_after = started.elapsed();
    // A round of state reports, then the memory of both.
    tokio::time::sleep(Duration::from_secs(REPORT_EVERY_S)).await;
    let sim_rss = child.id().and_then(cost::rss_bytes).unwrap_or(0);
    let tacho_rss = (rss_before, cost::rss_bytes(std::process::id()).unwrap_or(0));
    let _ = child.kill().await;
    Ok(Fleet { vehicles: vins.len(), connected, online_after, sim_rss, tacho_rss })
}
