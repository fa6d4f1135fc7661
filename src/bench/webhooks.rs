//! Webhook deliveries: a receiver on loopback takes what a subscription to every vehicle's state
//! sends (signed CloudEvents batches), during the ingestion load (the lag of each event: received
//! minus recorded) and in a replay of it (events per second at full speed).

use crate::store::log::{self, Checkpoint};
use crate::store::{Db, Sql};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    events: u64,
    requests: u64,
    /// Received minus recorded, per event, while `lags_on`.
    lags: Vec<Duration>,
    lags_on: bool,
}

/// A webhook receiver on a free loopback port: answers 204 to every batch and counts its events.
pub struct Receiver {
    /// Its URL.
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts one.
    pub async fn start() -> anyhow::Result<Self> {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let keep = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let keep = Arc::clone(&keep);
                async move {
                    let received = chrono::Utc::now();
                    #[derive(serde::Deserialize)]
                    struct Sent {
                        time: chrono::DateTime<chrono::Utc>,
                    }
                    let Ok(batch) = serde_json::from_slice::<Vec<Sent>>(&body) else {
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    if let Ok(mut seen) = keep.lock() {
                        seen.requests += 1;
                        seen.events += batch.len() as u64;
                        if seen.lags_on {
                            let lags = batch.iter().map(|e| (received - e.time).to_std().unwrap_or_default());
                            seen.lags.extend(lags);
                        }
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, seen, task })
    }

    /// Events received so far.
    pub fn events(&self) -> u64 {
        self.seen.lock().map(|s| s.events).unwrap_or(0)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.seen.lock().map(|s| s.requests).unwrap_or(0)
    }

    /// Starts or stops keeping each event's lag.
    pub fn keep_lags(&self, on: bool) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.lags_on = on;
        }
    }

    /// The lags kept.
    pub fn lags(&self) -> Vec<Duration> {
        self.seen.lock().map(|s| s.lags.clone()).unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (up to `limit`) until subscription `id` has gone past the log's last event; how long it took.
pub async fn wait_delivered(db: &Db, id: Uuid, limit: Duration) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    let head: i64 = Sql::new("SELECT coalesce(max(global_position), 0) FROM events").scalar(db).await?;
    let mut pooled = db.acquire().await?;
    let Some(last) = log::checkpoint_of(&mut pooled.conn(), head).await? else { return Ok(Some(Duration::ZERO)) };
    drop(pooled);
    while started.elapsed() < limit {
        let sql = "SELECT tx_id, position FROM webhook_cursors WHERE webhook_id = $1";
        let at: Option<(i64, i64)> = Sql::new(sql).bind(id).fetch_optional(db).await?;
        if at.is_some_and(|(tx_id, position)| Checkpoint { tx_id, position } >= last) {
            return Ok(Some(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// The floor: the same receiver taking batches of `batch` state-report envelopes posted one after
/// another for `seconds` (no log, no consent, no signature): events per second.
pub async fn raw_posts(url: &str, batch: usize, seconds: f64) -> anyhow::Result<f64> {
    let event = serde_json::json!({"specversion": "1.0", "id": "VehicleState:1HGCM82633A004352:1",
        "source": "/tacho/VehicleState/1HGCM82633A004352", "type": "io.tacho.StateReported",
        "subject": "1HGCM82633A004352", "time": chrono::Utc::now(), "datacontenttype": "application/json",
        "data": {"msg_id": "b1", "signals": {"Vehicle.Speed": 88, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 71}},
        "tachoposition": 1, "tachoconsentversion": 1});
    let body = serde_json::to_vec(&vec![event; batch])?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let response = client
            .post(url)
            .header("content-type", "application/cloudevents-batch+json")
            .body(body.clone())
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "the bench receiver answered {}", response.status());
        sent += batch as u64;
    }
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}
