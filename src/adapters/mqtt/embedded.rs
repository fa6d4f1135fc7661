//! The in-process MQTT broker of the embedded default (rumqttd, MQTT v5 only: rumqttd takes one
//! listener per protocol version, and tacho's contract needs v5 properties).
//!
//! rumqttd has no shutdown: its threads end with the process. It only logs a failed bind, so the
//! address is tried here first and a taken port becomes a clear start-up error.

use super::topics;
use anyhow::Context;
use rumqttd::{Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings, Strategy};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Largest packet the broker takes (a vehicle sending more is disconnected).
pub use super::broker::MAX_PACKET_BYTES;

/// Size of one segment of the broker's in-memory log.
const SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// How much of what vehicles send the broker holds for tacho while tacho's store is slower than the
/// fleet, per inbound filter: 512 MiB, about two million state reports of 250 bytes, or 20 minutes
/// of a fleet sending twice what SQLite appends (about 1,600 reports/s with 100,000 vehicles). The
/// memory is taken only while there is a backlog; past it the oldest messages are lost. The
/// embedded default is for one machine and modest fleets; production runs an external broker,
/// which keeps its queue on disk (`max_queued_messages 0`).
pub const INBOUND_LOG_BYTES: usize = 64 * SEGMENT_BYTES;

fn config(listen: SocketAddr) -> Config {
    let router = RouterConfig {
        // 10,000 vehicles (a `--demo` fleet, `tacho bench`) and tacho's own connections.
        max_connections: 12_000,
        // rumqttd buffers at most 200 packets per connection however high this is set.
        max_outgoing_packet_count: 200,
        // In-memory log per subscription filter (a vehicle's command topic: 6 x 8 MiB at most).
        // rumqttd acknowledges a publish once it is in this log and cannot slow a publisher down;
        // when the log is full it drops its oldest segment, and a subscriber still reading it loses
        // those messages. tacho's own filters keep more: see [`INBOUND_LOG_BYTES`].
        max_segment_size: SEGMENT_BYTES,
        max_segment_count: 6,
        custom_segment: Some(
            topics::INBOUND
                .iter()
                .map(|filter| {
                    let segments = SegmentConfig {
                        max_segment_size: SEGMENT_BYTES,
                        max_segment_count: INBOUND_LOG_BYTES / SEGMENT_BYTES,
                    };
                    ((*filter).to_owned(), segments)
                })
                .collect(),
        ),
        initialized_filters: None,
        shared_subscriptions_strategy: Strategy::RoundRobin,
    };
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: false,
    };
    let server =
        ServerSettings { name: "tacho-v5".to_owned(), listen, tls: None, next_connection_delay_ms: 0, connections };
    Config { id: 0, router, v5: Some(HashMap::from([("v5".to_owned(), server)])), ..Default::default() }
}

/// Starts the broker on `addr` and waits until it accepts connections. Fails with advice when the
/// port is taken.
pub fn start(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the embedded broker has no authentication: any client reaching it can act as any vehicle");
    }
    match TcpListener::bind(addr) {
        Ok(probe) => drop(probe),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "port {} is taken (another MQTT broker, such as Mosquitto, or another tacho?).\n  \
             Give tacho's embedded broker another address:  TACHO_EMBEDDED_MQTT_ADDR=127.0.0.1:1884\n  \
             or use the running broker instead:            TACHO_MQTT_URL=mqtt://{addr}",
            addr.port()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr} for MQTT")),
    }
    let mut broker = rumqttd::Broker::new(config(addr));
    std::thread::Builder::new()
        .name("tacho-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .context("cannot start the embedded MQTT broker")?;
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "the embedded MQTT broker did not start listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(addr)
}
