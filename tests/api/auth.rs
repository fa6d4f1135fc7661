//! Bearer tokens, roles and scopes.

use crate::contract;
use crate::helpers::*;
use reqwest::StatusCode;
use secrecy::SecretString;
use tacho::auth::{AuthKeys, Role};

contract!(a_missing_malformed_forged_or_expired_token_is_401);
async fn a_missing_malformed_forged_or_expired_token_is_401(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let url = format!("{}/v1/vehicles", app.base);
    let missing = app.client.get(&url).send().await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_problem(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let basic = app.client.get(&url).header("authorization", "Basic Zm9vOmJhcg==").send().await.unwrap();
    assert_problem(basic, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let forged = AuthKeys::new(&SecretString::from("another-secret-0123456789-0123456789")).mint(
        "x",
        vec![Role::Admin],
        None,
        chrono::Utc::now().timestamp(),
        60,
    );
    assert_problem(app.get("/v1/vehicles", &forged).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let expired = AuthKeys::new(&SecretString::from(SECRET)).mint(
        "x",
        vec![Role::Dealer],
        None,
        chrono::Utc::now().timestamp() - 3600,
        60,
    );
    assert_problem(app.get("/v1/vehicles", &expired).await, StatusCode::UNAUTHORIZED, "token_expired").await;
}

contract!(roles_are_enforced_and_probes_need_no_token);
async fn roles_are_enforced_and_probes_need_no_token(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let owner = app.owner("alice", &[VIN]);
    let body = serde_json::json!({"vin": VIN, "model": "Model A", "model_year": 2026, "market": "EU"});
    assert_problem(app.post("/v1/vehicles", &owner, body).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_problem(app.get("/v1/audit/events", &app.dealer()).await, StatusCode::FORBIDDEN, "forbidden").await;
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs/", "/docs/swagger-ui.css"] {
        let response = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let admin = app.token("root", &[Role::Admin], None);
    assert_eq!(app.register(VIN).await.status(), StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v1/vehicles/{VIN}"), &admin).await.status(), StatusCode::OK);
}

contract!(a_scoped_dealer_sees_only_its_vehicles);
async fn a_scoped_dealer_sees_only_its_vehicles(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    app.register(VIN2).await;
    let dealer = app.token("dealer-2", &[Role::Dealer], Some(&[VIN2]));
    let page: serde_json::Value = app.get("/v1/vehicles", &dealer).await.json().await.unwrap();
    let vins: Vec<&str> = page["items"].as_array().unwrap().iter().map(|v| v["vin"].as_str().unwrap()).collect();
    assert_eq!(vins, [VIN2]);
    assert_problem(app.get(&format!("/v1/vehicles/{VIN}"), &dealer).await, StatusCode::NOT_FOUND, "vehicle_not_found")
        .await;

    // A dealer token that names no VINs sees no vehicle: fleet-wide is a claim granted on purpose.
    let unnamed = app.token("dealer-3", &[Role::Dealer], None);
    let page: serde_json::Value = app.get("/v1/vehicles", &unnamed).await.json().await.unwrap();
    assert_eq!(page["items"], serde_json::json!([]), "{page}");
    for path in [format!("/v1/vehicles/{VIN}"), format!("/v1/vehicles/{VIN}/state")] {
        assert_problem(app.get(&path, &unnamed).await, StatusCode::NOT_FOUND, "vehicle_not_found").await;
    }
    let fleet: serde_json::Value = app.get("/v1/vehicles", &app.dealer()).await.json().await.unwrap();
    assert_eq!(fleet["items"].as_array().unwrap().len(), 2, "a fleet dealer sees every vehicle: {fleet}");
}

contract!(a_token_cannot_claim_tachos_own_actors_nor_another_issuer_and_request_ids_are_plain);
async fn a_token_cannot_claim_tachos_own_actors_nor_another_issuer_and_request_ids_are_plain(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let now = chrono::Utc::now().timestamp();
    let keys = AuthKeys::new(&SecretString::from(SECRET));
    for sub in ["tacho:dispatcher", "Vehicle:1HGCM82633A004352", ""] {
        let token = keys.mint(sub, vec![Role::Admin], None, now, 60);
        assert_problem(app.get("/v1/vehicles", &token).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let other = AuthKeys::new(&SecretString::from(SECRET)).with_issuer(Some("someone-else".into()));
    let token = other.mint("x", vec![Role::Admin], None, now, 60);
    assert_eq!(app.get("/v1/vehicles", &token).await.status(), StatusCode::OK, "no issuer configured: any");

    // A request id that is not a plain id is replaced in the log's metadata.
    let response = app
        .client
        .post(format!("{}/v1/vehicles", app.base))
        .bearer_auth(app.factory())
        .header("x-request-id", "tacho:clock; actor=tacho:dispatcher")
        .json(&serde_json::json!({"vin": VIN, "model": "A", "model_year": 2026, "market": "EU"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let stream: serde_json::Value =
        app.get(&format!("/v1/audit/streams/Vehicle/{VIN}"), &app.auditor()).await.json().await.unwrap();
    let request_id = stream[0]["request_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{request_id}");
}

#[test]
fn an_issuer_is_required_once_configured() {
    let now = chrono::Utc::now().timestamp();
    let ours = AuthKeys::new(&SecretString::from(SECRET)).with_issuer(Some("https://idp.example".into()));
    let token = ours.mint("alice", vec![Role::Owner], None, now, 60);
    assert_eq!(ours.verify(&token).unwrap().iss.as_deref(), Some("https://idp.example"));
    let unissued = AuthKeys::new(&SecretString::from(SECRET)).mint("alice", vec![Role::Owner], None, now, 60);
    assert!(ours.verify(&unissued).is_err());
    let theirs = AuthKeys::new(&SecretString::from(SECRET)).with_issuer(Some("https://other".into()));
    assert!(ours.verify(&theirs.mint("alice", vec![Role::Owner], None, now, 60)).is_err());
}

#[test]
fn a_secret_that_names_a_missing_file_or_is_short_refuses_to_start() {
    let mut config = config("postgres://postgres@127.0.0.1:5432/unused");
    config.auth_secret = Some(SecretString::from("/run/secrets/tacho-auth-secret-that-is-not-there"));
    let error = config.resolve_auth_secret().unwrap_err().to_string();
    assert!(error.contains("no file"), "{error}");
    config.auth_secret = Some(SecretString::from("short-secret-0123456789"));
    let error = config.resolve_auth_secret().unwrap_err().to_string();
    assert!(error.contains("at least 32"), "{error}");
    let file = std::env::temp_dir().join(format!("tacho-secret-{}", std::process::id()));
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    config.auth_secret = Some(SecretString::from(file.display().to_string()));
    use secrecy::ExposeSecret;
    assert_eq!(config.resolve_auth_secret().unwrap().expose_secret(), SECRET);
    std::fs::remove_file(file).unwrap();
}
