//! Where the broker is and how tacho's clients connect to it.

use rumqttc::v5::MqttOptions;
use std::time::Duration;

/// Largest MQTT packet tacho's clients take, and the embedded broker accepts: the largest payload
/// tacho accepts ([`super::codec::MAX_PAYLOAD`], 64 KiB) with room for the topic and properties. It
/// also bounds the inbound queue: at most its receive maximum of these.
pub const MAX_PACKET_BYTES: usize = super::codec::MAX_PAYLOAD + 8 * 1024;
/// A parsed `mqtt://host:port` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` (port 1883 by default).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let rest = raw
            .strip_prefix("mqtt://")
            .or_else(|| raw.strip_prefix("tcp://"))
            .ok_or_else(|| format!("'{raw}' is not an mqtt://host:port URL (TLS brokers are not supported yet)"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("bad port in '{raw}'"))?),
            None => (rest, 1883),
        };
        if host.is_empty() {
            return Err(format!("no host in '{raw}'"));
        }
        Ok(Self { host: host.trim_matches(|c| c == '[' || c == ']').to_owned(), port })
    }

    /// The broker listening at `addr` (the embedded one).
    pub fn local(addr: std::net::SocketAddr) -> Self {
        Self { host: addr.ip().to_string(), port: addr.port() }
    }

    /// Client options for this broker: MQTT v5, 30 s keep-alive, packets up to [`MAX_PACKET_BYTES`], and
    /// TCP_NODELAY: without it Nagle's algorithm and delayed ACKs add ~40 ms to every exchange.
    pub fn options(&self, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(Some(MAX_PACKET_BYTES as u32));
        options.set_connection_timeout(5);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(5);
        options.set_network_options(network);
        options
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// Delay before reconnect attempt `n` (from 0): 100 ms doubling up to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)).min(5000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_port() {
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1:1884"), Ok(BrokerUrl { host: "127.0.0.1".into(), port: 1884 }));
        assert_eq!(BrokerUrl::parse("mqtt://broker"), Ok(BrokerUrl { host: "broker".into(), port: 1883 }));
        assert!(BrokerUrl::parse("http://x").is_err());
        assert!(BrokerUrl::parse("mqtt://:1").is_err());
    }

    #[test]
    fn backoff_grows_to_five_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
