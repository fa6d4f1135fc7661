//! The development PKI (`scripts/dev-pki`): certificates chain to its CA, and a device's
//! thumbprint is what device registration takes.

use crate::contract;
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::Command;

fn openssl_present() -> bool {
    let present = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    if !present && std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and openssl is not installed");
    }
    present
}

contract!(a_device_certificate_of_the_development_pki_registers_by_its_thumbprint);
async fn a_device_certificate_of_the_development_pki_registers_by_its_thumbprint(store: Store) {
    if !openssl_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tacho-pki-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-pki");
    assert!(Command::new(script).arg(&dir).status().unwrap().success());
    assert!(Command::new(script).arg(&dir).args(["device", "tcu-0001"]).status().unwrap().success());
    let device = dir.join("devices/tcu-0001.crt");
    let verified =
        Command::new("openssl").arg("verify").arg("-CAfile").arg(dir.join("ca.crt")).arg(&device).output().unwrap();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let subject = Command::new("openssl").args(["x509", "-noout", "-subject", "-in"]).arg(&device).output().unwrap();
    assert!(String::from_utf8_lossy(&subject.stdout).contains("CN = tcu-0001"), "the identity is the device id");

    let thumbprint = std::fs::read_to_string(dir.join("devices/tcu-0001.sha256")).unwrap().trim().to_owned();
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    let body = json!({"device_id": "tcu-0001", "kind": "tcu", "certificate_thumbprint": thumbprint});
    let registered = app.post(&format!("/v1/vehicles/{VIN}/devices"), &app.factory(), body).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let device: Value = registered.json().await.unwrap();
    assert_eq!(device["certificate_thumbprint"], thumbprint);
    let _ = std::fs::remove_dir_all(&dir);
}
