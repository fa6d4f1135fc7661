//! (a) Command round trips: HTTP request → terminal state readable over HTTP, with simulated
//! vehicles answering at once; at a fixed rate, and sustained with many in flight.

use crate::store::{Db, Sql};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How many of `vins` the registry shows connected.
pub async fn connected(db: &Db, vins: &[String]) -> anyhow::Result<usize> {
    let sql =
        format!("SELECT count(*) FROM rm_vehicles WHERE connected AND {}", db.dialect().in_json_list("vin", "$1"));
    let count: i64 = Sql::new(&sql).bind(serde_json::json!(vins)).scalar(db).await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Waits until the registry shows every one of `vins` connected.
pub async fn wait_connected(db: &Db, vins: &[String]) -> anyhow::Result<()> {
    for _ in 0..200 {
        if connected(db, vins).await? == vins.len() {
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
    /// One command: POST, then long-poll until a terminal status; its round trip if it succeeded,
    /// else what it ended as.
    async fn round_trip(&self, n: usize) -> Result<Duration, String> {
        self.try_round_trip(n).await.unwrap_or_else(|| Err("no answer".into()))
    }

    async fn try_round_trip(&self, n: usize) -> Option<Result<Duration, String>> {
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
                return Some(Err(format!("still {status} after 30 s")));
            }
        }
        Some(if status == "succeeded" { Ok(started.elapsed()) } else { Err(status) })
    }

    /// Round trips started at `rate` per second for `seconds`: the samples of those that succeeded,
    /// and what the others ended as.
    pub async fn fixed_rate(&self, rate: u64, seconds: u64) -> (Vec<Duration>, Outcomes) {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        let mut tasks = Vec::new();
        for n in 0..(rate * seconds) as usize {
            tick.tick().await;
            let this = self.clone();
            tasks.push(tokio::spawn(async move { this.round_trip(n).await }));
        }
        let mut samples = Vec::new();
        let mut failed = Outcomes::default();
        for task in tasks {
            match task.await.unwrap_or_else(|e| Err(e.to_string())) {
                Ok(d) => samples.push(d),
                Err(outcome) => failed.add(outcome),
            }
        }
        (samples, failed)
    }

    /// `concurrency` round trips in flight for `seconds`: how many succeeded, per second, and what
    /// the others ended as.
    pub async fn closed_loop(&self, concurrency: usize, seconds: u64) -> (usize, f64, Outcomes) {
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let workers = (0..concurrency).map(|w| {
            let this = self.clone();
            tokio::spawn(async move {
                let (mut done, mut failed, mut n) = (0usize, Outcomes::default(), w);
                while Instant::now() < until {
                    match this.round_trip(n).await {
                        Ok(_) => done += 1,
                        Err(outcome) => failed.add(outcome),
                    }
                    n += concurrency;
                }
                (done, failed)
            })
        });
        let results = futures::future::join_all(workers).await;
        let (mut done, mut failed) = (0, Outcomes::default());
        for (d, f) in results.into_iter().flatten() {
            done += d;
            for (outcome, n) in f.0 {
                *failed.0.entry(outcome).or_default() += n;
            }
        }
        (done, done as f64 / started.elapsed().as_secs_f64(), failed)
    }
}

/// What commands that did not succeed ended as, and how many.
#[derive(Debug, Default, Clone)]
pub struct Outcomes(pub std::collections::BTreeMap<String, usize>);

impl Outcomes {
    fn add(&mut self, outcome: String) {
        *self.0.entry(outcome).or_default() += 1;
    }

    /// How many in all.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listed: Vec<String> = self.0.iter().map(|(outcome, n)| format!("{n} {outcome}")).collect();
        write!(f, "{}", listed.join(", "))
    }
}
