//! Servers a test starts, stops and restarts itself: a Mosquitto on a free port (and, for the
//! fault suite, a PostgreSQL cluster of its own). The machine's shared servers are never restarted.

use crate::helpers::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tacho::adapters::mqtt::broker::BrokerUrl;

/// A Mosquitto of the test's own, configured with `conf` (a listener line is added).
pub struct OwnMosquitto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

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
        if Command::new("mosquitto").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            missing("mosquitto")?;
        }
        let port = free_port().port();
        let dir = std::env::temp_dir().join(format!("tacho-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mosquitto folder");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("a file of mosquitto's");
        }
        let conf = conf.replace("{dir}", &dir.display().to_string());
        let file = format!("listener {port} 127.0.0.1\n{conf}\n");
        std::fs::write(dir.join("mosquitto.conf"), file).expect("mosquitto.conf");
        let mut broker = Self { port, dir, child: None };
        broker.run();
        Some(broker)
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

/// Publishes `payload` on `topic` at QoS 1 with MQTT v5 from `mosquitto_pub`, a client of its own.
pub fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-V", "5", "-q", "1", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub {topic}");
}
