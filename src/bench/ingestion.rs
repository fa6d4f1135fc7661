//! (b) State ingestion: simulated vehicles publish reports as fast as the broker takes them
//! (bounded); reports appended per second, and how far the read model lags.

use crate::adapters::mqtt::broker::BrokerUrl;
use crate::projections::state::StateProjection;
use crate::store::{Db, Sql};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reports per second the load generator offers at most (the target is 20,000).
pub const OFFERED: f64 = 25_000.0;

/// What an ingestion run measured.
pub struct Ingestion {
    /// Reports the broker acknowledged.
    pub published: u64,
    /// Reports appended to the log.
    pub appended: i64,
    /// Append rate during the load.
    pub appended_per_s: f64,
    /// Append rate once the load generator stopped (tacho alone draining the broker's queue).
    pub draining_per_s: f64,
    /// How long the read model took to catch up after the load.
    pub drain: Duration,
    /// The largest read-model backlog seen during the load (events).
    pub max_backlog: i64,
}

/// Publishes state reports for `vins` from a few connections for `seconds`, then waits for the log
/// and the read model to take them all.
pub async fn ingest(broker: &BrokerUrl, db: &Db, vins: &[String], seconds: u64) -> anyhow::Result<Ingestion> {
    let first_position: i64 = Sql::new("SELECT coalesce(max(global_position), 0) FROM events").scalar(db).await?;
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
        Sql::new(
            "SELECT coalesce((SELECT max(global_position) FROM events), 0) - \
             coalesce((SELECT position FROM subscription_checkpoints WHERE name = $1), 0)",
        )
        .bind(StateProjection::NAME)
        .scalar::<i64>(db)
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
    // Counted as they come (to see when the count stops growing): counting the whole log at every
    // look would load the database measured.
    let mut counter = Counter { db: db.clone(), after: first_position, counted: 0 };
    // Appended: wait until the count stops growing.
    let mut appended = counter.count().await?;
    let at_load_end = appended;
    let mut last_growth = Instant::now();
    let mut finished_appending = Instant::now();
    while last_growth.elapsed() < Duration::from_secs(5)
        && (appended as u64) < total
        // As long as it grows (a slow store drains for minutes): stopping early would show as loss.
        && load_ended.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.count().await?;
        if now > appended {
            appended = now;
            last_growth = Instant::now();
            finished_appending = Instant::now();
        }
    }
    // Exactly: a transaction that committed after a later position was counted is not missed.
    let appended = Counter { db: db.clone(), after: first_position, counted: 0 }.count().await?.max(appended);
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

/// State reads per second during the load.
pub const READS_PER_S: u64 = 200;

/// A dealer reading vehicles' last-known state over HTTP.
pub struct StateReads {
    /// The client.
    pub http: reqwest::Client,
    /// tacho's base URL.
    pub base: String,
    /// A dealer's bearer token.
    pub token: String,
}

impl StateReads {
    /// Reads the state of `vins` in turn, [`READS_PER_S`] a second for `seconds`: the times of the
    /// reads answered 200 with signals, and how many were not.
    pub async fn run(&self, vins: &[String], seconds: u64) -> anyhow::Result<(Vec<Duration>, usize)> {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / READS_PER_S));
        let mut reads = Vec::new();
        for n in 0..(READS_PER_S * seconds) as usize {
            tick.tick().await;
            let url = format!("{}/v1/vehicles/{}/state", self.base, vins[n * 7919 % vins.len()]);
            let request = self.http.get(url).bearer_auth(&self.token);
            reads.push(tokio::spawn(async move {
                let started = Instant::now();
                let response = request.send().await.ok()?;
                let ok = response.status().is_success();
                let body: serde_json::Value = response.json().await.ok()?;
                let took = started.elapsed();
                // Early reads may find no signal yet: they count, an error does not.
                (ok && body["signals"].is_object()).then_some(took)
            }));
        }
        let (mut times, mut failed) = (Vec::with_capacity(reads.len()), 0);
        for read in reads {
            match read.await? {
                Some(took) => times.push(took),
                None => failed += 1,
            }
        }
        Ok((times, failed))
    }
}

/// Counts the state reports appended after a position, reading each event once.
struct Counter {
    db: Db,
    after: i64,
    counted: i64,
}

impl Counter {
    async fn count(&mut self) -> Result<i64, sqlx::Error> {
        let (more, last): (i64, Option<i64>) = Sql::new(&format!(
            "SELECT count(*) FILTER (WHERE aggregate_type = 'VehicleState' AND event_type = 'StateReported'), \
               max(global_position) FROM events WHERE global_position > {}",
            self.after
        ))
        .fetch_one(&self.db)
        .await?;
        self.counted += more;
        self.after = last.unwrap_or(self.after);
        Ok(self.counted)
    }
}
