//! Granting, revoking and listing consents.

use crate::contract;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

contract!(an_owner_grants_lists_and_revokes_a_consent_with_versions);
async fn an_owner_grants_lists_and_revokes_a_consent_with_versions(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    let alice = app.owner("alice", &[VIN]);
    let path = format!("/v1/vehicles/{VIN}/consents/remote_commands");
    let granted: Value = app.call(Method::PUT, &path, &alice, Some(json!({}))).await.json().await.unwrap();
    assert_eq!(granted["status"], "granted");
    assert_eq!(granted["subject"], "alice");
    assert_eq!(granted["version"], 1);
    assert_eq!(granted["legal_basis"], "consent");

    let same: Value = app.call(Method::PUT, &path, &alice, Some(json!({}))).await.json().await.unwrap();
    assert_eq!(same["version"], 1, "same terms: no new version");

    let partner = format!("/v1/vehicles/{VIN}/consents/data_sharing:acme-insurance");
    let expires = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let shared: Value = app
        .call(Method::PUT, &partner, &alice, Some(json!({"legal_basis": "contract", "expires_at": expires})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shared["version"], 2);

    assert_eq!(app.call(Method::DELETE, &path, &alice, None).await.status(), StatusCode::NO_CONTENT);
    let list: Vec<Value> = app.get(&format!("/v1/vehicles/{VIN}/consents"), &alice).await.json().await.unwrap();
    assert_eq!(list.len(), 2);
    let remote = list.iter().find(|c| c["purpose"] == "remote_commands").unwrap();
    assert_eq!(remote["status"], "revoked");
    assert_eq!(remote["version"], 3);
}

contract!(unknown_purposes_unknown_vehicles_and_foreign_vehicles_are_refused);
async fn unknown_purposes_unknown_vehicles_and_foreign_vehicles_are_refused(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    app.register(VIN2).await;
    let alice = app.owner("alice", &[VIN]);
    assert_problem(
        app.call(Method::PUT, &format!("/v1/vehicles/{VIN}/consents/marketing"), &alice, Some(json!({}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_purpose",
    )
    .await;
    assert_problem(
        app.call(Method::PUT, &format!("/v1/vehicles/{VIN2}/consents/location"), &alice, Some(json!({}))).await,
        StatusCode::NOT_FOUND,
        "vehicle_not_found",
    )
    .await;
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    assert_problem(
        app.call(
            Method::PUT,
            &format!("/v1/vehicles/{VIN}/consents/location"),
            &alice,
            Some(json!({"expires_at": past})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.get(&format!("/v1/vehicles/{VIN}/consents"), &app.dealer()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}
