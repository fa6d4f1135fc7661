//! Configuration: the only place that reads the environment. Flags override environment variables.

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// tacho: event-sourced command and vehicle-state service for connected vehicles.
#[derive(Debug, Parser)]
#[command(name = "tacho", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Subcommand_>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Subcommand_ {
    /// Run the service (HTTP API and subscribers).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Print one signed development token on stdout.
    Token(TokenArgs),
    /// Run simulated vehicles against the broker until Ctrl-C.
    Sim(SimArgs),
    /// Measure command round trips and state ingestion against the configured PostgreSQL and broker.
    Bench {
        /// Seconds each load phase lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Fixed command rate of the latency phase, per second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Commands in flight in the throughput phase.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Vehicles publishing state.
        #[arg(long, default_value_t = 1000)]
        vehicles: u64,
        /// Simulated vehicles connected at once (memory of the simulator and of tacho).
        #[arg(long, default_value_t = 10_000)]
        fleet: u64,
        /// Vehicles registered in the ingestion phase, the publishing ones among them (state reads
        /// under load are measured with this many).
        #[arg(long, default_value_t = 100_000)]
        registered: u64,
        /// Runs only these phases (comma-separated; all by default).
        #[arg(long, value_delimiter = ',')]
        only: Vec<crate::bench::Phase>,
    },
    /// Audit the log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage the read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Print the OpenAPI document (or write it to a file).
    Openapi {
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// `tacho audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every stream against its seals and sequence, fold it through its aggregate and compare
    /// with the read models; recompute the seal chain. Exits 1 on any mismatch.
    Verify {
        /// Only streams of this aggregate type: Vehicle, Device, Consent, Command, VehicleState, Broadcast.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::domain::streams::ALL))]
        aggregate_type: Option<String>,
        /// Only this stream (with --aggregate-type).
        #[arg(long, requires = "aggregate_type")]
        id: Option<String>,
        /// A chain head recorded earlier, `SEAL_NO:HASH`: the chain must still pass through it.
        #[arg(long, conflicts_with = "aggregate_type")]
        expect: Option<String>,
    },
}

/// `tacho projections ...`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild one read model (or all) from position 0 into fresh tables, then swap them in; the
    /// API keeps answering from the old tables meanwhile.
    Rebuild {
        /// vehicles, devices, consents, commands or vehicle_state (default: all).
        name: Option<String>,
    },
}

/// Arguments of `tacho serve`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Also run a few simulated vehicles (registered, activated, with consents) to try tacho with.
    #[arg(long)]
    pub demo: bool,
    /// How many simulated vehicles `--demo` runs.
    #[arg(long, default_value_t = 3)]
    pub demo_vehicles: u64,
}

/// Arguments of `tacho token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Role (repeatable): factory, dealer, owner, service, auditor, admin.
    #[arg(long = "role", required = true)]
    pub roles: Vec<crate::auth::Role>,
    /// Subject (user or service id).
    #[arg(long)]
    pub sub: String,
    /// VIN scope (repeatable), for owners and dealers: the vehicles they see (none without).
    #[arg(long = "vin", conflicts_with = "fleet")]
    pub vins: Vec<String>,
    /// A dealer that sees the whole fleet (the `fleet` claim), on purpose.
    #[arg(long)]
    pub fleet: bool,
    /// Lifetime in seconds (1 to 604800, 7 days).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=crate::auth::MAX_TOKEN_TTL_S))]
    pub ttl: i64,
}

/// Arguments of `tacho sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// How many vehicles (VINs WTCSXM0 + 10 digits, from --first).
    #[arg(long, default_value_t = 3)]
    pub vehicles: u64,
    /// Number of the first generated VIN.
    #[arg(long, default_value_t = 1)]
    pub first: u64,
    /// Simulate these VINs instead (repeatable).
    #[arg(long = "vin")]
    pub vins: Vec<String>,
    /// Delay before each answer, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Share of commands answered `failed` (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of commands answered `rejected` (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub reject_rate: f64,
    /// Share of commands never answered (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub silence_rate: f64,
    /// Publish a state report every this many milliseconds (0: never).
    #[arg(long, default_value_t = 5000)]
    pub state_every_ms: u64,
    /// Drop every vehicle abruptly (Last Will) after this many seconds.
    #[arg(long)]
    pub drop_after_s: Option<u64>,
    /// A development PKI (`scripts/dev-pki DIR`): each vehicle connects with the device certificate
    /// `DIR/devices/<VIN>.crt` (key beside it) and trusts `DIR/ca.crt` (use an `mqtts://` URL).
    #[arg(long)]
    pub certs: Option<PathBuf>,
}

/// Settings of a tacho process.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Event store and read models: `sqlite://PATH` (embedded, one instance) or `postgres://...`.
    #[arg(long, env = "TACHO_DATABASE_URL", default_value = "sqlite://./tacho-data/tacho.db", hide_env_values = true)]
    pub database_url: SecretString,
    /// HTTP listen address.
    #[arg(long, env = "TACHO_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// HS256 secret for bearer tokens: the value, or a path to a file holding it. Required with
    /// PostgreSQL; with SQLite, generated once and kept beside the database (`auth-secret`).
    #[arg(long, env = "TACHO_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<SecretString>,
    /// When set, tokens must carry this issuer (`iss`), and `tacho token` mints them so.
    #[arg(long, env = "TACHO_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// MQTT broker: `embedded` (in-process, MQTT v5), `mqtt://host:port` or `mqtts://host:port`
    /// (TLS) of an external broker, or `none` to run without MQTT (commands then stay requested).
    #[arg(long, env = "TACHO_MQTT_URL", default_value = "embedded")]
    pub mqtt_url: String,
    /// With `mqtts://`: the CA certificates (PEM) that sign the broker's certificate (default: the
    /// public web's CAs).
    #[arg(long, env = "TACHO_MQTT_CA_FILE")]
    pub mqtt_ca_file: Option<PathBuf>,
    /// With `mqtts://`: tacho's client certificate (PEM, chain allowed), its identity at the broker.
    #[arg(long, env = "TACHO_MQTT_CERT_FILE", requires = "mqtt_key_file")]
    pub mqtt_cert_file: Option<PathBuf>,
    /// With `mqtts://`: the private key (PEM) of `TACHO_MQTT_CERT_FILE`.
    #[arg(long, env = "TACHO_MQTT_KEY_FILE", requires = "mqtt_cert_file")]
    pub mqtt_key_file: Option<PathBuf>,
    /// Who holds the devices' rights at the broker: `none` (the broker is set up by other means, or
    /// open: development only) or `mosquitto-dynsec` (tacho keeps Mosquitto's Dynamic Security
    /// plugin in step with its device registry; README, "Securing the broker").
    #[arg(long, env = "TACHO_BROKER_RIGHTS", default_value = "none")]
    pub broker_rights: BrokerRights,
    /// Where the embedded broker listens (MQTT v5).
    #[arg(long, env = "TACHO_EMBEDDED_MQTT_ADDR", default_value = "127.0.0.1:1883")]
    pub embedded_mqtt_addr: SocketAddr,
    /// This instance's name: stable across its restarts, distinct per instance. Its MQTT client ids
    /// derive from it (the persistent inbound session is `<name>-in`). Default:
    /// `tacho-<host name>-<HTTP port>`, distinct for instances on different hosts or ports.
    #[arg(long, env = "TACHO_INSTANCE", alias = "mqtt-client-id")]
    pub instance: Option<String>,
    /// Shared-subscription group, to spread vehicle messages over several instances.
    #[arg(long, env = "TACHO_MQTT_SHARED_GROUP")]
    pub mqtt_shared_group: Option<String>,
    /// How long the broker keeps tacho's session (and queues its messages) while it is down, seconds.
    #[arg(long, env = "TACHO_MQTT_SESSION_EXPIRY_S", default_value_t = 86400)]
    pub mqtt_session_expiry_s: u32,
    /// Connections used to publish (each has one publish awaiting its PUBACK at a time).
    #[arg(long, env = "TACHO_MQTT_PUBLISH_LANES", default_value_t = 4)]
    pub mqtt_publish_lanes: usize,
    /// How long state history is kept, in hours.
    #[arg(long, env = "TACHO_HISTORY_RETENTION_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u32).range(1..=87_600))]
    pub history_retention_hours: u32,
    /// The MQTT URL devices are told to connect to (default: the broker tacho uses).
    #[arg(long, env = "TACHO_PUBLIC_MQTT_URL")]
    pub public_mqtt_url: Option<String>,
    /// Largest database pool.
    #[arg(long, env = "TACHO_DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,
    /// Most signals in one state report (more: the report is a dead letter).
    #[arg(long, env = "TACHO_MAX_SIGNALS_PER_REPORT", default_value_t = 200)]
    pub max_signals_per_report: usize,
    /// Most distinct signals one vehicle may have (a report adding more is a dead letter).
    #[arg(long, env = "TACHO_MAX_SIGNALS_PER_VEHICLE", default_value_t = 2000)]
    pub max_signals_per_vehicle: usize,
    /// How many seconds a vehicle's clock may run ahead of tacho's (a report dated later is a dead
    /// letter).
    #[arg(long, env = "TACHO_MAX_CLOCK_SKEW_S", default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub max_clock_skew_s: u32,
    /// How long refused MQTT messages are kept in the dead-letter table, in days.
    #[arg(long, env = "TACHO_DEAD_LETTER_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3_650))]
    pub dead_letter_retention_days: u32,
    /// HTTP connections open at once (the next wait in the listen backlog).
    #[arg(long, env = "TACHO_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "TACHO_HTTP_HEADER_TIMEOUT_S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub http_header_timeout_s: u64,
    /// Seconds a request may take (a long poll `?wait=S`: S more).
    #[arg(long, env = "TACHO_HTTP_REQUEST_TIMEOUT_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub http_request_timeout_s: u64,
    /// Seconds a subscriber may lag behind the log before `/readyz` answers 503 naming it.
    #[arg(long, env = "TACHO_READY_MAX_LAG_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ready_max_lag_s: u64,
    /// Server-sent event streams open at once, and long polls open at once (each).
    #[arg(long, env = "TACHO_HTTP_MAX_STREAMS", default_value_t = 1000)]
    pub http_max_streams: usize,
    /// Of those, per caller (token subject).
    #[arg(long, env = "TACHO_HTTP_MAX_STREAMS_PER_CALLER", default_value_t = 10)]
    pub http_max_streams_per_caller: usize,
    /// How long an Idempotency-Key names its command, in hours (after that the key may be used again).
    #[arg(long, env = "TACHO_IDEMPOTENCY_KEY_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8_760))]
    pub idempotency_key_hours: u32,
    /// Internal address ranges webhooks may still be delivered to (comma-separated CIDRs, e.g.
    /// `10.20.0.0/16`, `127.0.0.1/32`); by default none: private, link-local, loopback and reserved
    /// addresses are refused (`serve --demo` allows loopback when it is unset, for development).
    #[arg(long, env = "TACHO_WEBHOOK_ALLOW", value_delimiter = ',', value_parser = parse_cidr)]
    pub webhook_allow: Vec<(std::net::IpAddr, u8)>,
    /// Failed webhook attempts in a row after which a subscription is paused.
    #[arg(long, env = "TACHO_WEBHOOK_PAUSE_AFTER", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub webhook_pause_after: u32,
    /// First retry delay of a failed webhook attempt, in milliseconds (doubled per failure, at most
    /// 10 minutes, ±50 % jitter).
    #[arg(long, env = "TACHO_WEBHOOK_FIRST_BACKOFF_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub webhook_first_backoff_ms: u64,
}

/// Who holds the devices' rights at the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerRights {
    /// Not tacho.
    None,
    /// Mosquitto's Dynamic Security plugin, through `$CONTROL/dynamic-security/v1`.
    MosquittoDynsec,
}

/// Which MQTT broker tacho talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mqtt {
    /// No MQTT: commands stay `requested`.
    Off,
    /// The in-process broker, listening here.
    Embedded(SocketAddr),
    /// An external broker.
    External(crate::adapters::mqtt::broker::BrokerUrl),
}

impl Config {
    /// The token keys: the secret and, when set, the issuer.
    pub fn auth_keys(&self) -> anyhow::Result<crate::auth::AuthKeys> {
        Ok(crate::auth::AuthKeys::new(&self.resolve_auth_secret()?).with_issuer(self.auth_issuer.clone()))
    }

    /// How much the HTTP server gives its clients.
    pub fn server_limits(&self) -> crate::adapters::http::server::ServerLimits {
        crate::adapters::http::server::ServerLimits {
            max_connections: self.http_max_connections.max(1),
            header_timeout: std::time::Duration::from_secs(self.http_header_timeout_s.max(1)),
            request_timeout: std::time::Duration::from_secs(self.http_request_timeout_s.max(1)),
        }
    }

    /// What one vehicle may send.
    pub fn vehicle_limits(&self) -> crate::adapters::mqtt::admission::Limits {
        crate::adapters::mqtt::admission::Limits {
            signals_per_report: self.max_signals_per_report.max(1),
            signals_per_vehicle: self.max_signals_per_vehicle.max(1),
            clock_skew: chrono::Duration::seconds(i64::from(self.max_clock_skew_s)),
        }
    }

    /// This instance's name ([`Self::instance`], or its default from the host name and HTTP port).
    pub fn instance_name(&self) -> String {
        if let Some(name) = self.instance.as_deref().filter(|n| !n.is_empty()) {
            return name.to_owned();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let host: String =
            host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        format!("tacho-{host}-{}", self.http_addr.port())
    }

    /// How long what tacho keeps for a while is kept.
    pub fn retention(&self) -> crate::processes::sweep::Retention {
        crate::processes::sweep::Retention {
            history: chrono::Duration::hours(i64::from(self.history_retention_hours)),
            dead_letters: chrono::Duration::days(i64::from(self.dead_letter_retention_days)),
            idempotency_keys: chrono::Duration::hours(i64::from(self.idempotency_key_hours.max(1))),
        }
    }

    /// The broker to use.
    pub fn mqtt(&self) -> anyhow::Result<Mqtt> {
        if self.mqtt_url.eq_ignore_ascii_case("none") {
            return Ok(Mqtt::Off);
        }
        let tls_settings = self.mqtt_ca_file.is_some() || self.mqtt_cert_file.is_some();
        if self.mqtt_url.eq_ignore_ascii_case("embedded") {
            anyhow::ensure!(
                self.broker_rights == BrokerRights::None,
                "TACHO_BROKER_RIGHTS=mosquitto-dynsec needs an external Mosquitto (TACHO_MQTT_URL): the embedded broker has no plugin"
            );
            anyhow::ensure!(
                !tls_settings,
                "TACHO_MQTT_CA_FILE/CERT_FILE are for an mqtts:// broker, not the embedded one"
            );
            return Ok(Mqtt::Embedded(self.embedded_mqtt_addr));
        }
        use crate::adapters::mqtt::broker::{BrokerUrl, Tls};
        let url = BrokerUrl::parse(&self.mqtt_url).map_err(|e| anyhow::anyhow!("TACHO_MQTT_URL: {e}"))?;
        if !url.is_secure() {
            if tls_settings {
                anyhow::bail!("TACHO_MQTT_CA_FILE/CERT_FILE are set but TACHO_MQTT_URL is not mqtts://");
            }
            return Ok(Mqtt::External(url));
        }
        let identity = self.mqtt_cert_file.as_deref().zip(self.mqtt_key_file.as_deref());
        let tls = Tls::load(self.mqtt_ca_file.as_deref(), identity).map_err(|e| anyhow::anyhow!("MQTT TLS: {e}"))?;
        Ok(Mqtt::External(url.with_tls(tls)))
    }

    /// The SQLite file of the embedded store, `None` with PostgreSQL.
    pub fn sqlite_path(&self) -> anyhow::Result<Option<PathBuf>> {
        use secrecy::ExposeSecret;
        let url = self.database_url.expose_secret();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(None);
        }
        crate::store::sqlite::path_of(url).map(Some)
    }

    /// The auth secret, read from its file when it names one; an error when it is missing or short.
    /// With the embedded store and no secret set, the one kept beside the database (made on first use).
    pub fn resolve_auth_secret(&self) -> anyhow::Result<SecretString> {
        use secrecy::ExposeSecret;
        let Some(raw) = self.auth_secret.as_ref() else {
            return match self.sqlite_path()? {
                Some(db) => embedded_secret(&db),
                None => anyhow::bail!(
                    "TACHO_AUTH_SECRET is required with PostgreSQL: set it to a secret of 32+ characters or a file holding one"
                ),
            };
        };
        let value = raw.expose_secret();
        let path = std::path::Path::new(value);
        let looks_like_path = ["/", "./", "../", "~/"].iter().any(|p| value.starts_with(p));
        anyhow::ensure!(
            path.is_file() || !looks_like_path,
            "TACHO_AUTH_SECRET looks like a file path, but there is no file at {value}: create it, or give the secret itself"
        );
        let secret = if path.is_file() {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read TACHO_AUTH_SECRET file {value}: {e}"))?
                .trim()
                .to_owned()
        } else {
            value.to_owned()
        };
        if secret.chars().count() < 32 {
            anyhow::bail!("TACHO_AUTH_SECRET is too short: use at least 32 characters (e.g. `openssl rand -hex 32`)");
        }
        Ok(SecretString::from(secret))
    }
}

/// The secret kept in `auth-secret` beside the embedded database, created (owner-only) when missing.
/// It is written to a temporary file and linked into place, so no reader ever sees it half-written.
fn embedded_secret(database: &std::path::Path) -> anyhow::Result<SecretString> {
    use anyhow::Context;
    let dir = database.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let path = dir.join("auth-secret");
    let read = |path: &std::path::Path| -> anyhow::Result<SecretString> {
        let existing = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let existing = existing.trim().to_owned();
        anyhow::ensure!(existing.len() >= 32, "{} is damaged: delete it to make a new secret", path.display());
        Ok(SecretString::from(existing))
    };
    match std::fs::metadata(&path) {
        Ok(_) => return read(&path),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()))
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data folder {}", dir.display()))?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let temporary = dir.join(format!(".auth-secret.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    let linked = std::fs::hard_link(&temporary, &path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(SecretString::from(secret)),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// `ADDRESS/BITS` (a bare address: itself alone).
fn parse_cidr(raw: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (ip, bits) = raw.trim().split_once('/').unwrap_or((raw.trim(), ""));
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("{raw}: {e}"))?;
    let most = if ip.is_ipv4() { 32 } else { 128 };
    let bits = if bits.is_empty() { most } else { bits.parse::<u8>().map_err(|e| format!("{raw}: {e}"))? };
    if bits > most {
        return Err(format!("{raw}: at most /{most}"));
    }
    Ok((ip, bits))
}

impl Config {
    /// The internal address ranges webhooks may go to (`TACHO_WEBHOOK_ALLOW`; `serve --demo`
    /// allows loopback when it is not set, for the development receiver).
    pub fn webhook_allowed(&self) -> Vec<crate::webhooks::address::Range> {
        self.webhook_allow.clone()
    }

    /// How webhooks are delivered.
    pub fn webhook_settings(&self) -> crate::webhooks::deliver::Settings {
        crate::webhooks::deliver::Settings {
            pause_after: self.webhook_pause_after,
            first_backoff: std::time::Duration::from_millis(self.webhook_first_backoff_ms),
            allowed: self.webhook_allowed(),
            ..Default::default()
        }
    }
}
