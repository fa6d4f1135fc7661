//! Servers a test starts, stops and restarts itself: a Mosquitto on a free port (and, for the
//! fault suite, a PostgreSQL cluster of its own). The machine's shared servers are never restarted.

use crate::helpers::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tacho::adapters::mqtt::broker::BrokerUrl;

/// A Mosquitto of the test's own, configured with `conf` (a listener line is added).
pub struct OwnMosquitto {
    /// Its port on 127.0.0.1 (the secured broker's: the devices' listener).
    pub port: u16,
    /// The secured broker's listener for services (tacho).
    pub services_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

/// Where Debian (this machine) and the eclipse-mosquitto image keep the Dynamic Security plugin.
const DYNSEC_PLUGINS: [&str; 2] =
    ["/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so"];

/// Whether an absent tool fails the test (CI) or skips it.
fn missing(tool: &str) -> Option<()> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {tool} is not installed");
    }
    eprintln!("SKIPPED: {tool} is not installed (with CI=true this fails)");
    None
}

impl OwnMosquitto {
    /// Starts Mosquitto with `conf` (lines of mosquitto.conf; `{dir}` is its folder, where `files`
    /// are written first, as name and content) on a free port; `None` when `mosquitto` is not
    /// installed outside CI.
    pub fn start(conf: &str, files: &[(&str, &str)]) -> Option<Self> {
        Self::start_with(|port, _| format!("listener {port} 127.0.0.1\n{conf}\n"), files, None)
    }

    /// Starts the production set-up as shipped (`docker/mosquitto-secured.conf`, its plugin seeded
    /// with `docker/dynamic-security.json`), with the certificates of `pki` (`scripts/dev-pki`):
    /// devices on [`Self::port`], services on [`Self::services_port`].
    pub fn secured(pki: &std::path::Path) -> Option<Self> {
        Self::secured_with(pki, SEED)
    }

    /// [`Self::secured`], its plugin seeded with `seed` instead.
    pub fn secured_with(pki: &std::path::Path, seed: &str) -> Option<Self> {
        let Some(plugin) = DYNSEC_PLUGINS.iter().find(|p| std::path::Path::new(p).exists()) else {
            missing("Mosquitto's Dynamic Security plugin")?;
            return None;
        };
        let pins = tacho_pins()?;
        let shipped = include_str!("../../docker/mosquitto-secured.conf");
        let services = free_port().port();
        let pki = format!("{}/", pki.display());
        let conf = move |port: u16, dir: &std::path::Path| {
            shipped
                .replace("/usr/lib/mosquitto_dynamic_security.so", plugin)
                .replace("/usr/lib/tacho_pins.so", &pins.display().to_string())
                .replace("/mosquitto/data/", &format!("{}/", dir.display()))
                .replace("/mosquitto/pki/", &pki)
                .replace("listener 8883 0.0.0.0", &format!("listener {port} 127.0.0.1"))
                .replace("listener 8884 0.0.0.0", &format!("listener {services} 127.0.0.1"))
        };
        Self::start_with(conf, &[("dynamic-security.json", seed)], Some(services))
    }

    fn start_with(
        conf: impl Fn(u16, &std::path::Path) -> String,
        files: &[(&str, &str)],
        services_port: Option<u16>,
    ) -> Option<Self> {
        if Command::new("mosquitto").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            missing("mosquitto")?;
        }
        let port = free_port().port();
        let dir = std::env::temp_dir().join(format!("tacho-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mosquitto folder");
        let conf = conf(port, &dir).replace("{dir}", &dir.display().to_string());
        std::fs::write(dir.join("mosquitto.conf"), conf).expect("mosquitto.conf");
        let broker = Self { port, services_port, dir, child: None };
        for (name, content) in files {
            broker.write(name, content);
        }
        let mut broker = broker;
        broker.run();
        Some(broker)
    }

    /// Writes file `name` of its folder (between [`Self::stop`] and [`Self::start_again`]).
    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.dir.join(name), content).expect("a file of mosquitto's");
        if is_root() {
            // Started as root, Mosquitto drops to its own user: let it write its files there.
            let _ = Command::new("chown").args(["-R", "mosquitto"]).arg(&self.dir).status();
        }
    }

    /// Removes file `name` of its folder (between [`Self::stop`] and [`Self::start_again`]).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// Sends it SIGHUP: it reads its configuration again (the CRL among it).
    pub fn reload(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg("-HUP").arg(child.id().to_string()).status();
        }
    }

    /// Starts it again after [`Self::stop`], on the same ports.
    pub fn start_again(&mut self) {
        self.run();
    }

    /// Its URL.
    pub fn url(&self) -> BrokerUrl {
        BrokerUrl::parse(&format!("mqtt://127.0.0.1:{}", self.port)).expect("mqtt URL")
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("mosquitto.log")).expect("mosquitto log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto on port {} did not listen within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it as a signal would (SIGTERM: it publishes the Last Will of every client).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Stops it and starts it again on the same port (without persistence: sessions are gone).
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for OwnMosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// tacho's pin plugin (`broker/tacho_pins.c`), built once per test run with gcc (`None` outside CI
/// when gcc or the headers are missing: Debian's mosquitto-dev, libmosquitto-dev, libssl-dev).
fn tacho_pins() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("tacho-pins-{}.so", std::process::id()));
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/broker/tacho_pins.c");
        let gcc = Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&out)
            .args([source, "-lcrypto"])
            .output();
        match gcc {
            Ok(o) if o.status.success() => Some(out),
            Ok(o) => {
                eprintln!("{}", String::from_utf8_lossy(&o.stderr));
                None
            }
            Err(_) => None,
        }
    });
    if built.is_none() {
        missing("gcc with Mosquitto's plugin headers (mosquitto-dev, libmosquitto-dev, libssl-dev)")?;
    }
    built.clone()
}

/// The Dynamic Security plugin's first configuration, as shipped: tacho's client and role.
pub const SEED: &str = include_str!("../../docker/dynamic-security.json");

/// tacho with a fresh store of `store`, on `broker`; `None` when PostgreSQL is absent outside CI.
pub async fn tacho_on(broker: &OwnMosquitto, store: crate::helpers::Store) -> Option<crate::helpers::TestApp> {
    let url = crate::helpers::fresh_store(store).await?;
    let mut config = crate::helpers::config(&url);
    config.mqtt_url = broker.url().to_string();
    Some(crate::helpers::start(config).await)
}

/// Publishes `payload` on `topic` at QoS 1 with MQTT v5 from `mosquitto_pub`, a client of its own.
pub fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-V", "5", "-q", "1", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub {topic}");
}

/// A PostgreSQL cluster of the test's own (`initdb` + `pg_ctl` from `pg_config --bindir`, in a
/// temporary folder, on a free port), to restart at will.
pub struct OwnPostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    bindir: PathBuf,
}

impl OwnPostgres {
    /// Creates and starts a cluster (trust authentication, user `postgres`); `None` when PostgreSQL's
    /// server programs are not installed outside CI.
    pub fn start() -> Option<Self> {
        let bindir = match Command::new("pg_config").arg("--bindir").output() {
            Ok(out) if out.status.success() => PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            _ => {
                missing("pg_config")?;
                return None;
            }
        };
        let port = free_port().port();
        let dir = std::env::temp_dir().join(format!("tacho-postgres-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let cluster = Self { port, dir, bindir };
        cluster.chown();
        let mut initdb = cluster.as_owner(&cluster.bindir.join("initdb"));
        let status = initdb
            .args(["-D", &cluster.data(), "-U", "postgres", "--auth=trust", "-N"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        cluster.pg_ctl(&["start"]);
        Some(cluster)
    }

    /// The URL of database `name` (created by tacho when missing).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Restarts it the way a crash would (`-m immediate`): every connection is cut, nothing is shut
    /// down cleanly, the server recovers from its log.
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "immediate", "restart"]);
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let log = self.dir.join("postgres.log").display().to_string();
        let status = self
            .as_owner(&self.bindir.join("pg_ctl"))
            .args(["-D", &self.data(), "-o", &options, "-l", &log, "-w"])
            .args(action)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl {action:?} failed (see {log})");
    }

    /// `program`, run as the `postgres` user when the tests run as root (PostgreSQL refuses root).
    fn as_owner(&self, program: &std::path::Path) -> Command {
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn chown(&self) {
        if is_root() {
            let _ = Command::new("chown").args(["-R", "postgres"]).arg(&self.dir).status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let stopped = self
            .as_owner(&self.bindir.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = stopped;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
