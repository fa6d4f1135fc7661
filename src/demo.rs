//! What `tacho serve` prints at start, and the simulated vehicles of `tacho serve --demo`.

use crate::app::Running;
use crate::auth::Role;
use crate::config::{BrokerRights, Config, Mqtt};
use crate::domain::consent::{ConsentCommand, Purpose};
use crate::domain::vehicle::{VehicleCommand, VehicleStatus};
use crate::domain::vin::Vin;
use crate::sim::{sim_vin, Behaviour, SimVehicle};
use anyhow::Context;
use futures::StreamExt;
use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

/// Subject of the development token (the demo vehicles' consents are granted to it).
pub const DEV_SUBJECT: &str = "dev";

/// Simulated vehicles online for the demo.
pub struct Demo {
    /// Their VINs.
    pub vins: Vec<String>,
    vehicles: Vec<SimVehicle>,
}

impl Demo {
    /// Disconnects the vehicles cleanly.
    pub async fn stop(self) {
        for vehicle in self.vehicles {
            let _ = vehicle.disconnect().await;
        }
    }
}

/// Registers, activates and grants consents (to [`DEV_SUBJECT`]) for `count` demo vehicles, unless
/// a previous run did, and connects them to tacho's broker.
pub async fn start(running: &Running, count: u64) -> anyhow::Result<Demo> {
    let broker = running.broker.as_ref().context("--demo needs MQTT: TACHO_MQTT_URL must not be none")?;
    let frameworks = &running.state.frameworks;
    let meta = HashMap::from([("actor".to_owned(), "tacho:demo".to_owned())]);
    let at = chrono::Utc::now();
    let vins: Vec<String> = (1..=count).map(sim_vin).collect();
    let registered: Vec<anyhow::Result<()>> = futures::stream::iter(&vins)
        .map(|vin| register(frameworks, vin, &meta, at))
        .buffer_unordered(16)
        .collect()
        .await;
    registered.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    // Vehicles are admitted by the registry and consent read models: let them catch up first.
    for vin in &vins {
        running.state.settle_admission(vin).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let behaviour = Behaviour { state_every: Some(Duration::from_secs(5)), ..Behaviour::default() };
    let fleet = vins.iter().map(|vin| (broker.clone(), vin.clone())).collect();
    let vehicles = SimVehicle::connect_fleet(fleet, &behaviour).await?;
    // The first request should find them online: wait (a few seconds at most) for the registry.
    for vin in &vins {
        for _ in 0..100 {
            let view = crate::store::queries::vehicle_by_vin(&running.state.db, vin).await?;
            if view.is_some_and(|v| v.connection.connected) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Demo { vins, vehicles })
}

/// Registers, activates and grants the consents of demo vehicle `vin`, unless a previous run did.
async fn register(
    frameworks: &crate::store::Frameworks,
    vin: &str,
    meta: &HashMap<String, String>,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let vehicle = frameworks.stores.load::<crate::domain::vehicle::Vehicle>(vin).await?;
    if vehicle.status == VehicleStatus::Unknown {
        let register = VehicleCommand::Register {
            vin: Vin::parse(vin)?,
            model: "Demo".into(),
            model_year: 2026,
            market: "EU".into(),
            options: vec!["remote_climate".into()],
            data_collection: Default::default(),
            at,
        };
        frameworks.execute(&frameworks.vehicles, vin, register, meta).await?;
        frameworks.execute(&frameworks.vehicles, vin, VehicleCommand::Activate { at }, meta).await?;
        for purpose in ["remote_commands", "telemetry", "location"] {
            let grant = ConsentCommand::Grant {
                vin: vin.to_owned(),
                subject: DEV_SUBJECT.into(),
                purpose: Purpose::parse(purpose)?,
                legal_basis: "consent".into(),
                expires_at: None,
                granted_by: DEV_SUBJECT.into(),
                at,
            };
            frameworks.execute(&frameworks.consents, vin, grant, meta).await?;
        }
    }
    Ok(())
}

/// The start-up message: where tacho listens, where its data lives, a development token (embedded
/// store only) and a first request to try.
pub fn banner(config: &Config, running: &Running, demo: Option<&Demo>) -> anyhow::Result<String> {
    let http = format!("http://{}", running.addr);
    let mut out = String::new();
    let store = match config.sqlite_path()? {
        Some(path) => format!("{} (SQLite; secret in {})", path.display(), secret_location(config, &path)),
        None => "PostgreSQL (TACHO_DATABASE_URL)".to_owned(),
    };
    let mqtt = match (config.mqtt()?, &running.broker) {
        (Mqtt::Embedded(_), Some(url)) => {
            format!("{url} (embedded broker, MQTT v5; no device authentication: for development)")
        }
        (_, Some(url)) if config.broker_rights == BrokerRights::None => {
            format!("{url} (device rights not kept by tacho: TACHO_BROKER_RIGHTS=none)")
        }
        (_, Some(url)) => format!("{url} (device rights kept by tacho in Mosquitto's Dynamic Security plugin)"),
        (_, None) => "off (TACHO_MQTT_URL=none): commands stay requested".to_owned(),
    };
    writeln!(out, "tacho is running")?;
    writeln!(out, "  HTTP API   {http}   (docs: {http}/docs)")?;
    writeln!(out, "  MQTT       {mqtt}")?;
    writeln!(out, "  data       {store}")?;
    // A ready token only for the development set-up: the secret tacho generated itself, HTTP on
    // this machine only. Anywhere else a token in the log would be a credential leak.
    let development =
        config.sqlite_path()?.is_some() && config.auth_secret.is_none() && running.addr.ip().is_loopback();
    if !development {
        writeln!(out, "  a token    tacho token --role admin --sub you   (same TACHO_AUTH_SECRET)")?;
        writeln!(out, "Ctrl-C stops tacho.")?;
        return Ok(out);
    }
    let keys = config.auth_keys()?;
    let token = keys.mint(DEV_SUBJECT, vec![Role::Admin], None, chrono::Utc::now().timestamp(), 24 * 3600);
    writeln!(out, "  dev token  (admin, 24 h; more with `cargo run --release -- token --help`)")?;
    writeln!(out, "    export TOKEN={token}")?;
    writeln!(out, "Try it:")?;
    match demo.and_then(|d| d.vins.first()) {
        Some(vin) => {
            writeln!(out, "  curl -s {http}/v1/vehicles/{vin}/state -H \"Authorization: Bearer $TOKEN\"")?;
            writeln!(
                out,
                "  curl -s -X POST {http}/v1/vehicles/{vin}/commands -H \"Authorization: Bearer $TOKEN\" \\\n    \
                 -H 'Content-Type: application/json' -d '{{\"name\":\"lock_doors\"}}'"
            )?;
            writeln!(
                out,
                "  a webhook of your commands to a receiver on port 9999 (one in README, Webhooks):\n  \
                 curl -s -X POST {http}/v1/subscriptions -H \"Authorization: Bearer $TOKEN\" \\\n    \
                 -H 'Content-Type: application/json' -d '{{\"endpoint\":\"http://127.0.0.1:9999/hook\",\"event_types\":[\"command\"]}}'"
            )?;
        }
        None => {
            writeln!(out, "  curl -s {http}/v1/vehicles -H \"Authorization: Bearer $TOKEN\"")?;
            writeln!(out, "  (start with --demo for simulated vehicles to send commands to)")?;
        }
    }
    // Watching every vehicle's topics takes a broker that lets anyone do so: not a secured one.
    if let Some(url) = running.broker.as_ref().filter(|url| !url.is_secure()) {
        writeln!(out, "  mosquitto_sub -V mqttv5 -v -t 'vehicles/#' -h {} -p {}", url.host, url.port)?;
    }
    writeln!(out, "Ctrl-C stops tacho; data stays in the data folder for the next start.")?;
    Ok(out)
}

fn secret_location(config: &Config, database: &std::path::Path) -> String {
    match &config.auth_secret {
        Some(_) => "TACHO_AUTH_SECRET".to_owned(),
        None => {
            let dir = database.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            dir.join("auth-secret").display().to_string()
        }
    }
}
