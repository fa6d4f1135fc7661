//! Where the broker is and how tacho's clients connect to it.

use rumqttc::v5::MqttOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest MQTT packet tacho's clients take, and the embedded broker accepts: the largest payload
/// tacho accepts ([`super::codec::MAX_PAYLOAD`], 64 KiB) with room for the topic and properties. It
/// also bounds the inbound queue: at most its receive maximum of these.
pub const MAX_PACKET_BYTES: usize = super::codec::MAX_PAYLOAD + 8 * 1024;
/// A parsed `mqtt://host:port` or `mqtts://host:port` URL, with the TLS settings of the latter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS, for `mqtts://` (set by [`BrokerUrl::with_tls`]).
    pub tls: Option<Tls>,
}

/// How tacho's clients speak TLS to the broker: the CAs they trust and their own certificate.
#[derive(Clone)]
pub struct Tls(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Tls {}

impl Tls {
    /// Trusts the CAs of `ca` (PEM; the public web's CAs when `None`) and, with `identity`, presents
    /// that certificate chain and key (PEM files) as the client's identity. Uses ring, as sqlx does.
    pub fn load(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(ca) => {
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("CA file {}: {e}", ca.display()))? {
                    let cert = cert.map_err(|e| format!("CA file {}: {e}", ca.display()))?;
                    roots.add(cert).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("CA file {} holds no certificate", ca.display()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("certificate file {}: {e}", cert.display()))?;
                if chain.is_empty() {
                    return Err(format!("certificate file {} holds no certificate", cert.display()));
                }
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key file {}: {e}", key.display()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self(Arc::new(config)))
    }
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` (port 1883 by default) or `mqtts://host[:port]` (8883); give the
    /// latter its TLS settings with [`BrokerUrl::with_tls`].
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (rest, default_port, secure) =
            if let Some(rest) = raw.strip_prefix("mqtt://").or_else(|| raw.strip_prefix("tcp://")) {
                (rest, 1883, false)
            } else if let Some(rest) = raw.strip_prefix("mqtts://").or_else(|| raw.strip_prefix("ssl://")) {
                (rest, 8883, true)
            } else {
                return Err(format!("'{raw}' is not an mqtt://host:port or mqtts://host:port URL"));
            };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':').filter(|(_, port)| !port.ends_with(']')) {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("bad port in '{raw}'"))?),
            None => (rest, default_port),
        };
        if host.is_empty() {
            return Err(format!("no host in '{raw}'"));
        }
        let host = host.trim_matches(|c| c == '[' || c == ']').to_owned();
        // Until with_tls: a placeholder that fails loudly rather than connecting in the clear.
        let tls = secure.then(|| Tls::load(None, None)).transpose()?;
        Ok(Self { host, port, tls })
    }

    /// The same broker reached with `tls`.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The client id of tacho instance `instance`'s connection `role` (`in`, `pub-0`, `rights`):
    /// `<instance>-<role>`, and on a TLS broker `<instance>:<role>`, a form no device id (nor so
    /// any device certificate a CA issues for one) can take: on the secured broker a device's client
    /// id is its certificate's name, and ids are one namespace across listeners.
    pub fn client_id(&self, instance: &str, role: &str) -> String {
        match self.is_secure() {
            true => format!("{instance}:{role}"),
            false => format!("{instance}-{role}"),
        }
    }

    /// Whether clients speak TLS to it.
    pub fn is_secure(&self) -> bool {
        self.tls.is_some()
    }

    /// The broker listening at `addr` (the embedded one).
    pub fn local(addr: std::net::SocketAddr) -> Self {
        Self { host: addr.ip().to_string(), port: addr.port(), tls: None }
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
        if let Some(Tls(config)) = &self.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::clone(
                config,
            ))));
        }
        options
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.is_secure() { "mqtts" } else { "mqtt" };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

/// Polls `eventloop` at all times (the rule of rumqttc: a client's requests and acknowledgements move
/// only while it is polled) and hands each event, or connection error, to `on_event`; after an error
/// it waits [`backoff`] before the event loop reconnects. Returns on `shutdown`, or when `on_event`
/// answers false.
pub async fn drive(
    mut eventloop: rumqttc::v5::EventLoop,
    shutdown: CancellationToken,
    mut on_event: impl FnMut(Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError>) -> bool,
) {
    let mut failures = 0;
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => return,
            polled = eventloop.poll() => polled,
        };
        let failed = polled.is_err();
        if matches!(polled, Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_)))) {
            failures = 0;
        }
        if !on_event(polled) {
            return;
        }
        if failed {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff(failures)) => {}
            }
            failures += 1;
        }
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
        let plain = |host: &str, port| Ok(BrokerUrl { host: host.into(), port, tls: None });
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1:1884"), plain("127.0.0.1", 1884));
        assert_eq!(BrokerUrl::parse("mqtt://broker"), plain("broker", 1883));
        assert_eq!(BrokerUrl::parse("mqtt://[::1]:1885"), plain("::1", 1885));
        assert_eq!(BrokerUrl::parse("mqtt://[::1]"), plain("::1", 1883));
        let secure = BrokerUrl::parse("mqtts://broker.example").unwrap();
        assert_eq!((secure.host.as_str(), secure.port, secure.is_secure()), ("broker.example", 8883, true));
        assert_eq!(secure.to_string(), "mqtts://broker.example:8883");
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
