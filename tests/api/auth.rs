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
    let forged = AuthKeys::new(&SecretString::from("another-secret-0123456789")).mint(
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
}
