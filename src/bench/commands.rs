//! (a) Command round trips: HTTP request → terminal state readable over HTTP, with simulated
//! vehicles answering at once; at a fixed rate, and sustained with many in flight.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Waits until the registry shows every one of `vins` connected.
pub async fn wait_connected(pool: &sqlx::PgPool, vins: &[String]) -> anyhow::Result<()> {
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

/// An HTTP client sending commands to a fleet.
#[derive(Clone)]
pub struct Commands {
    /// The client.
    pub http: reqwest::Client,
    /// tacho's base URL.
    pub base: String,
    /// A bearer token of an owner of the fleet.
    pub token: String,
    /// The VINs commands go to, in turn.
    pub fleet: Vec<String>,
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

    /// Round trips started at `rate` per second for `seconds`: the samples of those that succeeded,
    /// and how many did not.
    pub async fn fixed_rate(&self, rate: u64, seconds: u64) -> (Vec<Duration>, usize) {
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

    /// `concurrency` round trips in flight for `seconds`: completed per second, and how many did not.
    pub async fn closed_loop(&self, concurrency: usize, seconds: u64) -> (f64, usize) {
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
