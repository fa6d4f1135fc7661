//! Device registration, replacement and connection info.

use crate::contract;
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn fit_tcu(app: &TestApp) {
    let body = json!({"device_id": "tcu-0001", "kind": "tcu", "certificate_thumbprint": THUMB});
    let response = app.post(&format!("/v1/vehicles/{VIN}/devices"), &app.factory(), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/v1/devices/tcu-0001");
}

contract!(a_registered_device_is_provisioned_and_gets_connection_info);
async fn a_registered_device_is_provisioned_and_gets_connection_info(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    fit_tcu(&app).await;
    let device: Value = app.get("/v1/devices/tcu-0001", &app.factory()).await.json().await.unwrap();
    assert_eq!(device["status"], "provisioned");
    assert_eq!(device["vin"], VIN);
    let info: Value = app.get("/v1/devices/tcu-0001/connection-info", &app.factory()).await.json().await.unwrap();
    assert_eq!(info["client_id"], "tcu-0001", "the client id is the certificate's identity");
    assert!(info["publish"].as_array().unwrap().contains(&json!(format!("vehicles/{VIN}/state"))));
    assert!(info["subscribe"].as_array().unwrap().contains(&json!(format!("vehicles/{VIN}/commands/+/request"))));
    let vehicle: Value = app.get(&format!("/v1/vehicles/{VIN}"), &app.dealer()).await.json().await.unwrap();
    assert_eq!(vehicle["devices"], json!([{"device_id": "tcu-0001", "kind": "tcu"}]));
}

contract!(a_device_id_is_registered_once_and_needs_a_sha256_thumbprint);
async fn a_device_id_is_registered_once_and_needs_a_sha256_thumbprint(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    fit_tcu(&app).await;
    let again = json!({"device_id": "tcu-0001", "kind": "tcu", "certificate_thumbprint": THUMB});
    assert_problem(
        app.post(&format!("/v1/vehicles/{VIN}/devices"), &app.factory(), again).await,
        StatusCode::CONFLICT,
        "device_exists",
    )
    .await;
    let bad = json!({"device_id": "tcu-0002", "kind": "tcu", "certificate_thumbprint": "abc"});
    assert_problem(
        app.post(&format!("/v1/vehicles/{VIN}/devices"), &app.factory(), bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let unknown = json!({"device_id": "tcu-0003", "kind": "tcu", "certificate_thumbprint": THUMB});
    assert_problem(
        app.post(&format!("/v1/vehicles/{VIN2}/devices"), &app.factory(), unknown).await,
        StatusCode::NOT_FOUND,
        "vehicle_not_found",
    )
    .await;
}

contract!(a_dealer_replaces_a_part_in_one_step);
async fn a_dealer_replaces_a_part_in_one_step(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    fit_tcu(&app).await;
    let body = json!({"new_device_id": "tcu-0002", "certificate_thumbprint": THUMB.to_uppercase()});
    let response = app.post("/v1/devices/tcu-0001/replace", &app.dealer(), body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let replacement: Value = response.json().await.unwrap();
    assert_eq!(replacement["retired"]["status"], "replaced");
    assert_eq!(replacement["retired"]["replaced_by"], "tcu-0002");
    assert_eq!(replacement["replacement"]["replaces"], "tcu-0001");
    assert_eq!(replacement["replacement"]["status"], "provisioned");
    assert_eq!(replacement["replacement"]["certificate_thumbprint"], THUMB);
    let vehicle: Value = app.get(&format!("/v1/vehicles/{VIN}"), &app.dealer()).await.json().await.unwrap();
    assert_eq!(vehicle["devices"], json!([{"device_id": "tcu-0002", "kind": "tcu"}]));

    let twice = json!({"new_device_id": "tcu-0003", "certificate_thumbprint": THUMB});
    assert_problem(
        app.post("/v1/devices/tcu-0001/replace", &app.dealer(), twice).await,
        StatusCode::CONFLICT,
        "device_retired",
    )
    .await;
    assert_problem(
        app.get("/v1/devices/tcu-0001/connection-info", &app.factory()).await,
        StatusCode::CONFLICT,
        "device_retired",
    )
    .await;
    let taken = json!({"new_device_id": "tcu-0002", "certificate_thumbprint": THUMB});
    assert_problem(
        app.post("/v1/devices/tcu-0002/replace", &app.dealer(), taken).await,
        StatusCode::CONFLICT,
        "device_exists",
    )
    .await;
}

contract!(a_revoked_device_is_detached_and_gets_no_connection_info);
async fn a_revoked_device_is_detached_and_gets_no_connection_info(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    fit_tcu(&app).await;
    let revoked: Value = app
        .post("/v1/devices/tcu-0001/revoke", &app.factory(), json!({"reason": "key leaked"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["status"], "revoked");
    let vehicle: Value = app.get(&format!("/v1/vehicles/{VIN}"), &app.dealer()).await.json().await.unwrap();
    assert_eq!(vehicle["devices"], json!([]));
    assert_problem(
        app.get("/v1/devices/tcu-0001/connection-info", &app.factory()).await,
        StatusCode::CONFLICT,
        "device_retired",
    )
    .await;
    assert_problem(
        app.post("/v1/devices/tcu-0001/revoke", &app.factory(), json!({})).await,
        StatusCode::CONFLICT,
        "device_retired",
    )
    .await;
}

contract!(a_refused_replacement_leaves_the_registry_as_it_was);
async fn a_refused_replacement_leaves_the_registry_as_it_was(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    fit_tcu(&app).await;
    let before = snapshot(app.db(), "events", "global_position").await.len();
    let decommissioned = app.post(&format!("/v1/vehicles/{VIN}/decommission"), &app.factory(), json!({})).await;
    assert_eq!(decommissioned.status(), StatusCode::OK);
    let body = json!({"new_device_id": "tcu-0002", "certificate_thumbprint": THUMB});
    for _ in 0..2 {
        // Refused whole, and refused the same way when tried again.
        assert_problem(
            app.post("/v1/devices/tcu-0001/replace", &app.dealer(), body.clone()).await,
            StatusCode::CONFLICT,
            "invalid_transition",
        )
        .await;
    }
    let old: Value = app.get("/v1/devices/tcu-0001", &app.factory()).await.json().await.unwrap();
    assert_eq!(old["status"], "provisioned", "the old device is not retired: {old}");
    assert_eq!(app.get("/v1/devices/tcu-0002", &app.factory()).await.status(), StatusCode::NOT_FOUND);
    let after = snapshot(app.db(), "events", "global_position").await.len();
    assert_eq!(after, before + 1, "only the decommissioning was recorded");
}

contract!(concurrent_replacements_of_one_part_apply_exactly_one);
async fn concurrent_replacements_of_one_part_apply_exactly_one(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    fit_tcu(&app).await;
    let dealer = app.dealer();
    let replace = |n: usize| {
        let body = json!({"new_device_id": format!("tcu-1{n:03}"), "certificate_thumbprint": THUMB});
        app.post("/v1/devices/tcu-0001/replace", &dealer, body)
    };
    let responses = futures::future::join_all((0..8).map(replace)).await;
    let statuses: Vec<StatusCode> = responses.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT), "{statuses:?}");
    let vehicle: Value = app.get(&format!("/v1/vehicles/{VIN}"), &app.dealer()).await.json().await.unwrap();
    let fitted = vehicle["devices"].as_array().unwrap();
    assert_eq!(fitted.len(), 1, "{vehicle}");
    let winner = fitted[0]["device_id"].as_str().unwrap().to_owned();
    let old: Value = app.get("/v1/devices/tcu-0001", &app.factory()).await.json().await.unwrap();
    assert_eq!(old["replaced_by"], winner.as_str());
    let registered = app.scalar("SELECT count(*) FROM events WHERE event_type = 'DeviceRegistered'").await;
    assert_eq!(registered, 2, "the first part and the one replacement");
}
