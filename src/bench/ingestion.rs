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
    let count = || async {
        Sql::new("SELECT count(*) FROM events WHERE aggregate_type = 'VehicleState' AND event_type = 'StateReported'")
            .scalar::<i64>(db)
            .await
    };
    // Appended: wait until the count stops growing.
    let mut appended = count().await?;
    let at_load_end = appended;
    let mut last_growth = Instant::now();
    let mut finished_appending = Instant::now();
    while last_growth.elapsed() < Duration::from_secs(5)
        && (appended as u64) < total
        && load_ended.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count().await?;
        if now > appended {
            appended = now;
            last_growth = Instant::now();
            finished_appending = Instant::now();
        }
    }
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
