//! The in-process MQTT broker of the embedded default (rumqttd, MQTT v5 only: rumqttd takes one
//! listener per protocol version, and tacho's contract needs v5 properties).
//!
//! rumqttd has no shutdown: its threads end with the process. It only logs a failed bind, so the
//! address is tried here first and a taken port becomes a clear start-up error.

use anyhow::Context;
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings, Strategy};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Largest packet the broker takes (a vehicle sending more is disconnected).
pub use super::broker::MAX_PACKET_BYTES;

fn config(listen: SocketAddr) -> Config {
    let router = RouterConfig {
        // 10,000 vehicles (a `--demo` fleet, `tacho bench`) and tacho's own connections.
        max_connections: 12_000,
        // rumqttd buffers at most 200 packets per connection however high this is set.
        max_outgoing_packet_count: 200,
        // In-memory log per subscription filter: 8 MiB x 6 segments, about a minute of state
        // reports from a thousand vehicles before a stalled subscriber starts losing them.
        max_segment_size: 8 * 1024 * 1024,
        max_segment_count: 6,
        custom_segment: None,
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
