//! The floors each tacho figure is compared with: a raw MQTT request/response round trip through the
//! same broker, and a raw PostgreSQL insert of the same rows tacho appends for state reports.

use super::percentile;
use crate::adapters::mqtt::broker::BrokerUrl;
use crate::store::Db;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// p50 and p99 of `n` sequential QoS 1 request → response round trips between two clients.
pub async fn mqtt_round_trip(broker: &BrokerUrl, n: usize) -> anyhow::Result<(Duration, Duration)> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (req_topic, resp_topic) = (format!("bench/{run}/req"), format!("bench/{run}/resp"));
    let (responder, mut responder_loop) = AsyncClient::new(broker.options(&format!("bench-responder-{run}")), 64);
    let (requester, mut requester_loop) = AsyncClient::new(broker.options(&format!("bench-requester-{run}")), 64);
    responder.subscribe(&req_topic, QoS::AtLeastOnce).await?;
    requester.subscribe(&resp_topic, QoS::AtLeastOnce).await?;
    let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel::<()>();
    let answer = responder.clone();
    let resp = resp_topic.clone();
    let sub_tx = subscribed_tx.clone();
    let responding = tokio::spawn(async move {
        loop {
            match responder_loop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = sub_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let answer = answer.clone();
                    let resp = resp.clone();
                    tokio::spawn(async move { answer.publish(resp, QoS::AtLeastOnce, false, p.payload).await });
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let (got_tx, mut got) = mpsc::unbounded_channel::<()>();
    let receiving = tokio::spawn(async move {
        loop {
            match requester_loop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    let _ = got_tx.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), subscribed.recv()).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        requester.publish(&req_topic, QoS::AtLeastOnce, false, json!({"n": i}).to_string()).await?;
        tokio::time::timeout(Duration::from_secs(5), got.recv()).await?;
        samples.push(started.elapsed());
    }
    responding.abort();
    receiving.abort();
    Ok((percentile(&mut samples, 0.50), percentile(&mut samples, 0.99)))
}

/// Rows per second of a plain batched insert of `rows` state-report events into a copy of the events
/// table: PostgreSQL 1,000 rows a statement, SQLite 1,000 rows a transaction.
pub async fn insert(db: &Db, rows: usize) -> anyhow::Result<f64> {
    match db {
        Db::Postgres(pool) => postgres_insert(pool, rows).await,
        Db::Sqlite(embedded) => sqlite_insert(&embedded.pool, rows).await,
    }
}

/// [`insert`] into SQLite.
async fn sqlite_insert(pool: &sqlx::SqlitePool, rows: usize) -> anyhow::Result<f64> {
    sqlx::query(
        "CREATE TABLE bench_events (aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, sequence INTEGER NOT NULL, \
         event_type TEXT NOT NULL, event_version TEXT NOT NULL, payload TEXT NOT NULL, metadata TEXT NOT NULL, \
         PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    )
    .execute(pool)
    .await?;
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let n = (rows - written).min(1000);
        let mut tx = pool.begin().await?;
        for i in written..written + n {
            sqlx::query("INSERT INTO bench_events VALUES ('VehicleState', $1, $2, 'StateReported', '1', $3, '{}')")
                .bind(format!("WTCSXM0{:010}", i % 1000))
                .bind((i / 1000) as i64 + 1)
                .bind(state_report(i).to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        written += n;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_events").execute(pool).await?;
    Ok(rate)
}

/// The payload of state report `i`, as the floors write it.
fn state_report(i: usize) -> serde_json::Value {
    json!({"StateReported": {"msg_id": format!("m{i}"), "signals": {"Vehicle.Speed": 0, "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": true},
        "vehicle_ts": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z", "consent_version": 1}})
}

/// [`insert`] into PostgreSQL.
async fn postgres_insert(pool: &PgPool, rows: usize) -> anyhow::Result<f64> {
    sqlx::query("CREATE TABLE bench_events (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES)").execute(pool).await?;
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let n = (rows - written).min(1000);
        let ids: Vec<String> = (written..written + n).map(|i| format!("WTCSXM0{:010}", i % 1000)).collect();
        let sequences: Vec<i64> = (written..written + n).map(|i| (i / 1000) as i64 + 1).collect();
        let payloads: Vec<_> = (written..written + n).map(state_report).collect();
        sqlx::query(
            "INSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT 'VehicleState', a, s, 'StateReported', '1', p::json, '{}'::json FROM UNNEST($1::text[], $2::bigint[], $3::jsonb[]) AS x(a, s, p)",
        )
        .bind(&ids)
        .bind(&sequences)
        .bind(&payloads)
        .execute(pool)
        .await?;
        written += n;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_events").execute(pool).await?;
    Ok(rate)
}

/// Rows per second of a plain read of the whole log (every column, streamed).
pub async fn log_read(db: &Db) -> anyhow::Result<(u64, f64)> {
    use futures::TryStreamExt;
    let sql = "SELECT * FROM events ORDER BY aggregate_type, aggregate_id, sequence";
    let started = Instant::now();
    let mut n = 0u64;
    match db {
        Db::Postgres(pool) => {
            let mut rows = sqlx::query(sql).fetch(pool);
            while rows.try_next().await?.is_some() {
                n += 1;
            }
        }
        Db::Sqlite(embedded) => {
            let mut rows = sqlx::query(sql).fetch(&embedded.pool);
            while rows.try_next().await?.is_some() {
                n += 1;
            }
        }
    }
    Ok((n, n as f64 / started.elapsed().as_secs_f64()))
}
