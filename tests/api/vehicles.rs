//! Registration, registry view, lifecycle and the fleet list.

use crate::contract;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

contract!(a_factory_registers_a_vehicle_and_a_dealer_reads_it);
async fn a_factory_registers_a_vehicle_and_a_dealer_reads_it(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let response = app.register(VIN).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], format!("/v1/vehicles/{VIN}"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "registered");
    assert_eq!(body["model_year"], 2026);

    let read: Value = app.get(&format!("/v1/vehicles/{VIN}"), &app.dealer()).await.json().await.unwrap();
    assert_eq!(read["vin"], VIN);
    assert_eq!(read["connection"]["connected"], false);
}

contract!(registering_a_vin_twice_is_a_conflict);
async fn registering_a_vin_twice_is_a_conflict(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    assert_eq!(app.register(VIN).await.status(), StatusCode::CREATED);
    assert_problem(app.register(VIN).await, StatusCode::CONFLICT, "vehicle_exists").await;
}

contract!(invalid_vins_are_refused_and_nothing_is_recorded);
async fn invalid_vins_are_refused_and_nothing_is_recorded(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let bad_check_digit =
        assert_problem(app.register("1HGCM82643A004352").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_vin").await;
    assert!(bad_check_digit["detail"].as_str().unwrap().contains("check digit"));
    assert_problem(app.register("WVWZZZ1JZXW00000O").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_vin").await;
    assert_problem(app.register("SHORT").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_vin").await;
    let events: i64 = app.scalar("SELECT count(*) FROM events").await;
    assert_eq!(events, 0);
}

contract!(the_lifecycle_moves_registered_active_suspended_active_decommissioned);
async fn the_lifecycle_moves_registered_active_suspended_active_decommissioned(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    let factory = app.factory();
    let step = |action: &'static str| {
        let app = &app;
        let factory = factory.clone();
        async move { app.call(Method::POST, &format!("/v1/vehicles/{VIN}/{action}"), &factory, None).await }
    };
    assert_problem(step("suspend").await, StatusCode::CONFLICT, "invalid_transition").await;
    let active: Value = step("activate").await.json().await.unwrap();
    assert_eq!(active["status"], "active");
    let suspended: Value = step("suspend?reason=stolen").await.json().await.unwrap();
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(step("activate").await.status(), StatusCode::OK);
    let gone: Value = step("decommission").await.json().await.unwrap();
    assert_eq!(gone["status"], "decommissioned");
    assert_problem(step("activate").await, StatusCode::CONFLICT, "invalid_transition").await;
    assert_problem(
        app.call(Method::POST, "/v1/vehicles/WVWZZZ1JZXW000001/activate", &factory, None).await,
        StatusCode::NOT_FOUND,
        "vehicle_not_found",
    )
    .await;
}

contract!(an_owner_sees_only_the_vehicles_in_its_scope_and_gets_404_for_others);
async fn an_owner_sees_only_the_vehicles_in_its_scope_and_gets_404_for_others(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    app.register(VIN2).await;
    let alice = app.owner("alice", &[VIN]);
    assert_eq!(app.get(&format!("/v1/vehicles/{VIN}"), &alice).await.status(), StatusCode::OK);
    assert_problem(app.get(&format!("/v1/vehicles/{VIN2}"), &alice).await, StatusCode::NOT_FOUND, "vehicle_not_found")
        .await;
    assert_problem(app.get("/v1/vehicles/WAUZZZ8V5KA000001", &alice).await, StatusCode::NOT_FOUND, "vehicle_not_found")
        .await;
    assert_problem(app.get("/v1/vehicles", &alice).await, StatusCode::FORBIDDEN, "forbidden").await;
}

contract!(the_fleet_list_filters_and_pages_without_gaps_while_vehicles_are_added);
async fn the_fleet_list_filters_and_pages_without_gaps_while_vehicles_are_added(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let vins: Vec<String> = (0..12).map(|i| format!("WVWZZZ1JZXW{i:06}")).collect();
    for (i, vin) in vins.iter().enumerate() {
        let market = if i % 2 == 0 { "EU" } else { "US" };
        let body = json!({"vin": vin, "model": "Model A", "model_year": 2025 + (i % 2) as i32, "market": market});
        assert_eq!(app.post("/v1/vehicles", &app.factory(), body).await.status(), StatusCode::CREATED);
    }
    let dealer = app.dealer();
    let eu: Value = app.get("/v1/vehicles?market=EU", &dealer).await.json().await.unwrap();
    assert_eq!(eu["items"].as_array().unwrap().len(), 6);
    let y2026: Value = app.get("/v1/vehicles?model_year=2026&status=registered", &dealer).await.json().await.unwrap();
    assert_eq!(y2026["items"].as_array().unwrap().len(), 6);

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut added = 0;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/vehicles?page_size=5&page_token={t}"),
            None => "/v1/vehicles?page_size=5".to_owned(),
        };
        let page: Value = app.get(&path, &dealer).await.json().await.unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().map(|v| v["vin"].as_str().unwrap().to_owned()));
        // A vehicle registered behind the cursor must not shift the pages that follow.
        if added == 0 {
            app.register("AAAZZZ1JZXW000000").await;
            app.register("WVWZZZ1JZXW00000A").await;
            added = 2;
        }
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no vehicle twice");
    for vin in &vins {
        assert!(seen.contains(vin), "{vin} listed");
    }
    assert!(!seen.iter().any(|v| v == "AAAZZZ1JZXW000000"), "added behind the cursor: not on a later page");
    assert!(seen.iter().any(|v| v == "WVWZZZ1JZXW00000A"), "added ahead of the cursor: listed");
    assert_eq!(seen.len(), 13);
    assert_problem(
        app.get("/v1/vehicles?page_token=garbage", &dealer).await,
        StatusCode::BAD_REQUEST,
        "bad_page_token",
    )
    .await;
    assert_problem(app.get("/v1/vehicles?page_size=0", &dealer).await, StatusCode::BAD_REQUEST, "invalid_query").await;
}
