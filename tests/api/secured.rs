//! The production broker set-up, as shipped (`docker/mosquitto-secured.conf`, seeded with
//! `docker/dynamic-security.json`), with certificates of the development PKI (`scripts/dev-pki`):
//! devices prove who they are with X.509 certificates, tacho keeps each device's rights in the
//! Dynamic Security plugin in step with its registry, and restores them from the log when the
//! broker lost them. Real clients: the simulator (rumqttc) and `mosquitto_pub`/`mosquitto_sub`.

use crate::helpers::*;
use crate::servers::{OwnMosquitto, SEED};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tacho::adapters::mqtt::broker::{BrokerUrl, Tls};
use tacho::config::BrokerRights;
use tacho::sim::{Behaviour, SimVehicle};

/// A development PKI in a temporary folder: the CAs, broker and tacho; device certificates on demand.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Option<Self> {
        if Command::new("openssl").arg("version").output().is_err() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and openssl is not installed");
            }
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("tacho-{name}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        assert!(Command::new(Self::script()).arg(&dir).output().unwrap().status.success());
        let pki = Self { dir };
        pki.share();
        Some(pki)
    }

    fn script() -> &'static str {
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-pki")
    }

    /// A device certificate with identity `id`, written as `devices/<name>`; its thumbprint.
    fn device(&self, id: &str, name: &str) -> String {
        assert!(Command::new(Self::script())
            .arg(&self.dir)
            .args(["device", id, name])
            .output()
            .unwrap()
            .status
            .success());
        self.share();
        std::fs::read_to_string(self.dir.join(format!("devices/{name}.sha256"))).unwrap().trim().to_owned()
    }

    /// Lists certificate `devices/<name>` on the device CA's revocation list.
    fn revoke(&self, name: &str) {
        assert!(Command::new(Self::script()).arg(&self.dir).args(["revoke", name]).output().unwrap().status.success());
        self.share();
    }

    /// Mosquitto drops to its own user when started as root: let it read the broker's key.
    fn share(&self) {
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&self.dir).status();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a real client (`mosquitto_pub`/`mosquitto_sub`) connects with.
struct Client {
    port: u16,
    /// The CA it verifies the broker with.
    ca: PathBuf,
    /// Certificate and key; none: no client certificate.
    identity: Option<(PathBuf, PathBuf)>,
    client_id: Option<String>,
}

impl Client {
    /// Device certificate `devices/<name>` of `pki`, on `port`.
    fn device(port: u16, pki: &Pki, name: &str) -> Self {
        let (cert, key) = (pki.path(&format!("devices/{name}.crt")), pki.path(&format!("devices/{name}.key")));
        Self { port, ca: pki.path("ca.crt"), identity: Some((cert, key)), client_id: None }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec!["-V", "5", "-h", "127.0.0.1", "-p"].into_iter().map(String::from).collect::<Vec<_>>();
        args.push(self.port.to_string());
        args.extend(["--cafile".into(), self.ca.display().to_string()]);
        if let Some((cert, key)) = &self.identity {
            args.extend(["--cert".into(), cert.display().to_string(), "--key".into(), key.display().to_string()]);
        }
        if let Some(id) = &self.client_id {
            args.extend(["-i".into(), id.clone()]);
        }
        args
    }

    /// Publishes at QoS 1: the PUBACK reason code, or `None` when the broker refused the connection.
    fn publish(&self, topic: &str, payload: &str) -> Option<u8> {
        let out = Command::new("mosquitto_pub")
            .args(self.args())
            .args(["-q", "1", "-d", "-t", topic, "-m", payload])
            .output()
            .expect("mosquitto_pub runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        let code = text.lines().find_map(|l| l.split("PUBACK (Mid: 1, RC:").nth(1)?.trim_end_matches(')').parse().ok());
        if code.is_none() {
            assert!(!text.contains("CONNACK (0)"), "connected, yet no PUBACK: {text}");
        }
        code
    }

    /// Subscribes to `filter` for `seconds`: the SUBACK reason code (`None`: refused connection) and
    /// what it printed.
    fn subscribe(&self, filter: &str, seconds: u32) -> (Option<u8>, String) {
        let out = Command::new("mosquitto_sub")
            .args(self.args())
            .args(["-q", "1", "-d", "-t", filter, "-W", &seconds.to_string()])
            .output()
            .expect("mosquitto_sub runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        let code = text.lines().find_map(|l| l.split("Subscribed (mid: 1): ").nth(1)?.trim().parse().ok());
        (code, text)
    }
}

const NOT_AUTHORIZED: u8 = 135;

/// Waits until `client` may publish on `topic` (its rights arrived), at most 15 s.
async fn wait_allowed(client: &Client, topic: &str) -> Duration {
    let start = Instant::now();
    loop {
        match client.publish(topic, "{}") {
            // Below 128: accepted (0, or 16 when no one subscribed).
            Some(code) if code < 128 => return start.elapsed(),
            other => assert!(start.elapsed() < Duration::from_secs(15), "never allowed on {topic}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn register_device(app: &TestApp, vin: &str, device_id: &str, thumbprint: &str) {
    let body = json!({"device_id": device_id, "kind": "tcu", "certificate_thumbprint": thumbprint});
    let registered = app.post(&format!("/v1/vehicles/{vin}/devices"), &app.factory(), body).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
}

fn device_broker(broker: &OwnMosquitto, pki: &Pki, name: &str) -> BrokerUrl {
    let (cert, key) = (pki.path(&format!("devices/{name}.crt")), pki.path(&format!("devices/{name}.key")));
    let tls = Tls::load(Some(&pki.path("ca.crt")), Some((&cert, &key))).unwrap();
    BrokerUrl::parse(&format!("mqtts://127.0.0.1:{}", broker.port)).unwrap().with_tls(tls)
}

/// tacho on `database`, connected as itself (its certificate of `pki`) to `broker`'s service listener.
fn tacho_as_service(database: &str, broker: &OwnMosquitto, pki: &Pki) -> tacho::config::Config {
    let mut config = config(database);
    config.mqtt_url = format!("mqtts://127.0.0.1:{}", broker.services_port.unwrap());
    config.mqtt_ca_file = Some(pki.path("ca.crt"));
    config.mqtt_cert_file = Some(pki.path("tacho.crt"));
    config.mqtt_key_file = Some(pki.path("tacho.key"));
    config
}

/// Polls `/readyz` until `done` holds for its status and text (at most `within`); the text.
async fn readyz_until(app: &TestApp, within: Duration, done: impl Fn(StatusCode, &str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let ready = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap();
        let status = ready.status();
        let text = ready.text().await.unwrap();
        if done(status, &text) {
            return text;
        }
        assert!(start.elapsed() < within, "/readyz never got there: {status} {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_who_they_say_and_may_use_only_their_own_vehicle() {
    let Some(pki) = Pki::new("secured") else { return };
    let Some(other_ca) = Pki::new("secured-other-ca") else { return };
    let Some(mut broker) = OwnMosquitto::secured(&pki.dir) else { return };
    let services = broker.services_port.unwrap();
    let Some(database) = fresh_store(Store::Postgres).await else { return };
    let mut config = tacho_as_service(&database, &broker, &pki);
    config.broker_rights = BrokerRights::MosquittoDynsec;
    // As several instances run: the vehicles' messages through a shared subscription.
    config.mqtt_shared_group = Some("tacho".into());
    let inbound_client_id = format!("{}:in", config.instance.clone().unwrap());
    let app = start(config).await;

    let (vin, other) = (unique_vin(), unique_vin());
    let mine = pki.device("tcu-a", &vin);
    let theirs = pki.device("tcu-b", &other);
    other_ca.device("tcu-a", "tcu-a");
    for (vin, device, thumbprint) in [(&vin, "tcu-a", &mine), (&other, "tcu-b", &theirs)] {
        app.ready_vehicle(vin, "alice").await;
        app.grant(vin, "alice", "telemetry").await;
        register_device(&app, vin, device, thumbprint).await;
    }
    let device = Client::device(broker.port, &pki, &vin);
    let waited = wait_allowed(&device, &format!("vehicles/{vin}/state")).await;
    eprintln!("a registered device's rights were in place {waited:?} after its registration answered");

    // A device answers its own vehicle's command.
    let sim = SimVehicle::connect(&device_broker(&broker, &pki, &vin), &vin, Behaviour::default()).await.unwrap();
    app.wait_connected(&vin, true).await;
    app.succeeds(&vin, "lock_doors").await;
    // One identity, one connection: the clients below, with the same certificate, would take over
    // the simulator's session.
    sim.disconnect().await.unwrap();

    // Another certificate of the same CA with the same name (the device's identity, not its
    // certificate): refused, as its thumbprint is not the one registered (tacho's pin plugin).
    pki.device("tcu-a", "tcu-a-copy");
    let copy = Client::device(broker.port, &pki, "tcu-a-copy");
    assert_eq!(copy.publish(&format!("vehicles/{vin}/state"), "{}"), Some(NOT_AUTHORIZED), "another thumbprint");
    let (code, text) = copy.subscribe(&format!("vehicles/{vin}/commands/+/request"), 1);
    assert_eq!(code, Some(NOT_AUTHORIZED), "another thumbprint: {text}");
    assert_eq!(
        device.publish(&format!("vehicles/{vin}/state"), "{}").map(|c| c < 128),
        Some(true),
        "the registered one"
    );

    // The same device on another vehicle's topics: refused by the broker.
    let id = uuid::Uuid::new_v4();
    let answer = json!({"command_id": id, "status": "succeeded", "ts": chrono::Utc::now()}).to_string();
    let forged = [
        (format!("vehicles/{other}/commands/lock_doors/response"), answer),
        (
            format!("vehicles/{other}/state"),
            json!({"ts": chrono::Utc::now(), "signals": {"Vehicle.Speed": 99}}).to_string(),
        ),
        (format!("vehicles/{other}/connection"), json!({"state": "online", "ts": chrono::Utc::now()}).to_string()),
        (format!("vehicles/{other}/events/breakdown"), json!({"ts": chrono::Utc::now(), "data": {}}).to_string()),
    ];
    for (topic, payload) in &forged {
        assert_eq!(device.publish(topic, payload), Some(NOT_AUTHORIZED), "{topic}");
    }
    let (code, text) = device.subscribe(&format!("vehicles/{other}/commands/+/request"), 1);
    assert_eq!(code, Some(NOT_AUTHORIZED), "another vehicle's requests: {text}");
    let (code, text) = device.subscribe("vehicles/#", 1);
    assert_eq!(code, Some(NOT_AUTHORIZED), "every vehicle's topics: {text}");

    // Without a certificate, with one of another CA, or a device's on tacho's listener: no connection.
    let anonymous = Client { identity: None, ..Client::device(broker.port, &pki, &vin) };
    assert_eq!(anonymous.publish(&format!("vehicles/{vin}/state"), "{}"), None, "no certificate");
    let foreign = Client { ca: pki.path("ca.crt"), ..Client::device(broker.port, &other_ca, "tcu-a") };
    assert_eq!(foreign.publish(&format!("vehicles/{vin}/state"), "{}"), None, "a certificate of another CA");
    let on_services = Client::device(services, &pki, &vin);
    assert_eq!(on_services.publish(&format!("vehicles/{other}/state"), "{}"), None, "a device on tacho's listener");
    // As tacho's client id: the broker names every device after its certificate, so it cannot take
    // tacho's session (and its queued messages); tacho goes on hearing its vehicles.
    let impostor = Client { client_id: Some(inbound_client_id.clone()), ..Client::device(broker.port, &pki, &vin) };
    let (code, text) = impostor.subscribe(&format!("vehicles/{other}/state"), 1);
    assert_eq!(code, Some(NOT_AUTHORIZED), "as tacho's client id: {text}");
    let log = broker.log();
    assert!(log.contains(" as tcu-a (p5"), "the broker named it after its certificate:\n{log}");
    assert!(!log.contains(&format!("Client {inbound_client_id} already connected")), "tacho's session kept:\n{log}");
    let sim = SimVehicle::connect(&device_broker(&broker, &pki, &vin), &vin, Behaviour::default()).await.unwrap();
    app.wait_connected(&vin, true).await;
    app.succeeds(&vin, "lock_doors").await;
    sim.disconnect().await.unwrap();

    // A device certificate named like tacho gets none of tacho's rights: tacho's user name is its
    // certificate's whole subject, on a listener of its own.
    pki.device("tacho", "named-tacho");
    let named_tacho = Client::device(broker.port, &pki, "named-tacho");
    let control = r#"{"commands":[{"command":"deleteClient","username":"tcu-b"}]}"#;
    assert_eq!(named_tacho.publish("$CONTROL/dynamic-security/v1", control), Some(NOT_AUTHORIZED));
    assert_eq!(
        named_tacho.publish(&format!("vehicles/{other}/commands/lock_doors/request"), "{}"),
        Some(NOT_AUTHORIZED)
    );
    let (code, text) = named_tacho.subscribe("vehicles/+/state", 1);
    assert_eq!(code, Some(NOT_AUTHORIZED), "{text}");

    // tacho's state of the other vehicle is unchanged by all of it.
    let state: Value = app.get(&format!("/v1/vehicles/{other}/state"), &app.dealer()).await.json().await.unwrap();
    assert!(state["signals"].as_object().is_none_or(|s| s.is_empty()), "{state}");
    let vehicle: Value = app.get(&format!("/v1/vehicles/{other}"), &app.dealer()).await.json().await.unwrap();
    assert_eq!(vehicle["connection"]["connected"], false, "{vehicle}");
    assert_eq!(
        app.scalar(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{other}' AND aggregate_type = 'VehicleState'"
        ))
        .await,
        0
    );

    // Revoked: disconnected at once, and no right left when it connects again.
    let listening = {
        let device = Client::device(broker.port, &pki, &vin);
        let filter = format!("vehicles/{vin}/commands/+/request");
        std::thread::spawn(move || device.subscribe(&filter, 6))
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let revoked =
        app.call(Method::POST, "/v1/devices/tcu-a/revoke", &app.factory(), Some(json!({"reason": "stolen"}))).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let (_, text) = listening.join().unwrap();
    assert!(text.contains("Received DISCONNECT"), "the revoked device is disconnected: {text}");
    let (code, text) = device.subscribe(&format!("vehicles/{vin}/commands/+/request"), 1);
    assert_eq!(code, Some(NOT_AUTHORIZED), "connected again, the revoked device may not subscribe: {text}");
    assert_eq!(device.publish(&format!("vehicles/{vin}/state"), "{}"), Some(NOT_AUTHORIZED));
    // And once the CA lists its certificate, the broker refuses the handshake itself.
    pki.revoke(&vin);
    broker.reload();
    let refused = Instant::now();
    while device.publish(&format!("vehicles/{vin}/state"), "{}").is_some() {
        assert!(refused.elapsed() < Duration::from_secs(10), "the revoked certificate still connects");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its replacement works.
    let fitted = pki.device("tcu-a2", &format!("{vin}-new"));
    register_device(&app, &vin, "tcu-a2", &fitted).await;
    let replacement = Client::device(broker.port, &pki, &format!("{vin}-new"));
    wait_allowed(&replacement, &format!("vehicles/{vin}/state")).await;
    let sim = SimVehicle::connect(&device_broker(&broker, &pki, &format!("{vin}-new")), &vin, Behaviour::default())
        .await
        .unwrap();
    app.wait_connected(&vin, true).await;
    app.succeeds(&vin, "lock_doors").await;
    sim.disconnect().await.unwrap();

    // A dealer replaces the other vehicle's device: the part taken out loses its rights (its
    // certificate is still valid: no CRL), the part put in has them.
    let fitted = pki.device("tcu-b2", &format!("{other}-new"));
    let body = json!({"new_device_id": "tcu-b2", "certificate_thumbprint": fitted});
    let replaced = app.post("/v1/devices/tcu-b/replace", &app.dealer(), body).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let (old_part, new_part) =
        (Client::device(broker.port, &pki, &other), Client::device(broker.port, &pki, &format!("{other}-new")));
    wait_allowed(&new_part, &format!("vehicles/{other}/state")).await;
    assert_eq!(old_part.publish(&format!("vehicles/{other}/state"), "{}"), Some(NOT_AUTHORIZED), "replaced");

    // The broker loses its whole rights configuration and restarts: tacho restores every right of
    // the log, and no more (the replaced part stays without rights; the revoked one is refused by
    // the CRL anyway).
    broker.stop();
    broker.write("dynamic-security.json", SEED);
    broker.remove("tacho-pins");
    broker.start_again();
    let restored = wait_allowed(&replacement, &format!("vehicles/{vin}/state")).await;
    eprintln!("rights restored {restored:?} after the broker restarted with an empty configuration");
    wait_allowed(&new_part, &format!("vehicles/{other}/state")).await;
    assert_eq!(old_part.publish(&format!("vehicles/{other}/state"), "{}"), Some(NOT_AUTHORIZED), "not restored");
    let copy = Client::device(broker.port, &pki, &format!("{other}-copy"));
    pki.device("tcu-b2", &format!("{other}-copy"));
    assert_eq!(copy.publish(&format!("vehicles/{other}/state"), "{}"), Some(NOT_AUTHORIZED), "pins restored too");
    assert_eq!(device.publish(&format!("vehicles/{vin}/state"), "{}"), None, "revoked and listed");
    readyz_until(&app, Duration::ZERO, |status, _| status == StatusCode::OK).await;
}

/// A broker without the plugin (or where tacho lacks the right to its control topic): tacho says so
/// in `/readyz` (and its log) instead of running as if devices were kept apart.
#[tokio::test]
async fn a_broker_that_does_not_keep_rights_makes_tacho_unready_and_say_why() {
    let Some(broker) = OwnMosquitto::start("allow_anonymous true", &[]) else { return };
    let Some(database) = fresh_store(Store::Sqlite).await else { return };
    let mut config = config(&database);
    config.mqtt_url = broker.url().to_string();
    config.broker_rights = BrokerRights::MosquittoDynsec;
    let app = start(config).await;
    let start = Instant::now();
    let reason = readyz_until(&app, Duration::from_secs(20), |status, reason| {
        status == StatusCode::SERVICE_UNAVAILABLE && reason.contains("Dynamic Security plugin")
    })
    .await;
    eprintln!("/readyz after {:?}: {reason}", start.elapsed());
}

/// A broker that refuses tacho's subscriptions (its role lacks the right): `/readyz` names them.
#[tokio::test]
async fn a_broker_that_refuses_tachos_subscriptions_makes_tacho_unready_and_say_which() {
    let Some(pki) = Pki::new("secured-no-subscribe") else { return };
    // The shipped seed without tacho's right to subscribe to the vehicles' state.
    let seed: String =
        SEED.lines().filter(|l| !l.contains(r#""topic": "vehicles/+/state""#)).collect::<Vec<_>>().join("\n");
    assert_ne!(seed.lines().count(), SEED.lines().count());
    let Some(broker) = OwnMosquitto::secured_with(&pki.dir, &seed) else { return };
    let Some(database) = fresh_store(Store::Sqlite).await else { return };
    let app = start(tacho_as_service(&database, &broker, &pki)).await;
    let reason = readyz_until(&app, Duration::from_secs(10), |status, reason| {
        status == StatusCode::SERVICE_UNAVAILABLE && reason.contains("refused tacho's subscriptions")
    })
    .await;
    assert!(reason.contains("vehicles/+/state"), "{reason}");
    assert!(!reason.contains("vehicles/+/connection"), "only the refused one: {reason}");

    // The right granted live, through the plugin: tacho asks again and is ready, without a restart.
    let granted = Command::new("mosquitto_ctrl")
        .args(["-h", "127.0.0.1", "-p", &broker.services_port.unwrap().to_string()])
        .arg("--cafile")
        .arg(pki.path("ca.crt"))
        .arg("--cert")
        .arg(pki.path("tacho.crt"))
        .arg("--key")
        .arg(pki.path("tacho.key"))
        .args(["dynsec", "addRoleACL", "tacho", "subscribePattern", "vehicles/+/state", "allow", "0"])
        .output()
        .expect("mosquitto_ctrl runs");
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    let fixed = Instant::now();
    readyz_until(&app, Duration::from_secs(25), |status, _| status == StatusCode::OK).await;
    eprintln!("ready {:?} after the right was granted", fixed.elapsed());
}
