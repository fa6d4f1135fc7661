//! Property tests with generated hostile input (deep, big, unicode, NUL, huge numbers, random
//! bytes): MQTT decoding refuses with a stable reason or decodes within the budgets; every HTTP body
//! and query extractor answers 2xx or a 4xx problem, never a 500. None panics.
//!
//! `PROPTEST_CASES=N` sets the number of cases of each property (CI: the defaults below); a longer
//! run: `PROPTEST_CASES=5000 cargo test --test api fuzz`.

use crate::helpers::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use tacho::adapters::mqtt::codec::{self, CommandResponse, ConnectionReport, StateReport, VehicleEventReport};
use tacho::auth::Role;
use tacho::domain::budget;

const REASONS: [&str; 6] = ["oversized", "too_deep", "malformed", "invalid_signal", "too_many_signals", "clock_skew"];

/// Hostile JSON values: nested up to 40 levels, odd strings, extreme numbers.
pub fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,40}".prop_map(Value::from),
        prop::collection::vec(any::<char>(), 0..20).prop_map(|c| Value::from(c.into_iter().collect::<String>())),
        Just(Value::from("a\u{0}b")),
        Just(Value::from("x".repeat(70_000))),
    ];
    leaf.prop_recursive(40, 200, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,12}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Raw payloads: hostile values in the contract's shapes, text nested thousands deep, random bytes.
fn hostile_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        hostile_value().prop_map(|v| v.to_string().into_bytes()),
        (hostile_value(), "\\PC{0,20}").prop_map(|(v, id)| {
            json!({"msg_id": id, "ts": "2026-01-01T00:00:00Z", "signals": {"Vehicle.Speed": v}})
                .to_string()
                .into_bytes()
        }),
        hostile_value().prop_map(|v| {
            json!({"command_id": "4f2c1a1e-5b7d-4c1e-9a36-0c9a7d6f1e2b", "status": "succeeded",
                   "ts": "2026-01-01T00:00:00Z", "result": v})
            .to_string()
            .into_bytes()
        }),
        (1usize..5000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn refused_with_a_reason(refused: &codec::Refused) {
    assert!(REASONS.contains(&refused.reason), "{refused:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn every_payload_decodes_within_budget_or_is_refused_with_a_reason(payload in hostile_payload()) {
        match codec::decode::<StateReport>(&payload) {
            Ok(report) => {
                let signals = Value::Object(report.signals.clone());
                prop_assert!(budget::depth(&signals) <= budget::MAX_DEPTH);
                if let Err(refused) = codec::check_signals(&report.signals, 200) {
                    refused_with_a_reason(&refused);
                }
            }
            Err(refused) => refused_with_a_reason(&refused),
        }
        match codec::decode::<CommandResponse>(&payload) {
            Ok(response) => {
                if let Some(result) = &response.result {
                    if let Err(refused) = codec::check_value(result) {
                        refused_with_a_reason(&refused);
                    }
                }
            }
            Err(refused) => refused_with_a_reason(&refused),
        }
        for decoded in [
            codec::decode::<VehicleEventReport>(&payload).map(|_| ()),
            codec::decode::<ConnectionReport>(&payload).map(|_| ()),
        ] {
            if let Err(refused) = decoded {
                refused_with_a_reason(&refused);
            }
        }
    }

    #[test]
    fn the_text_check_and_the_value_check_agree_on_depth(value in hostile_value()) {
        let text = value.to_string();
        let by_text = budget::check_text(text.as_bytes()).is_ok();
        prop_assert_eq!(by_text, budget::depth(&value) <= budget::MAX_DEPTH);
    }
}

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default)
}

/// A JSON body for `path`: a hostile value, a valid body with one field made hostile, or raw bytes.
fn hostile_body(template: Value) -> impl Strategy<Value = Vec<u8>> {
    let fields: Vec<String> = template.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let one_field = (0..fields.len().max(1), hostile_value()).prop_map(move |(i, v)| {
        let mut body = template.clone();
        if let (Some(object), Some(field)) = (body.as_object_mut(), fields.get(i)) {
            object.insert(field.clone(), v);
        }
        body.to_string().into_bytes()
    });
    prop_oneof![
        3 => one_field,
        2 => hostile_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (1usize..3000).prop_map(|n| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// A query string of known and unknown keys with odd values.
fn hostile_query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("page_size".to_owned()),
        Just("page_token".to_owned()),
        Just("status".to_owned()),
        Just("limit".to_owned()),
        Just("wait".to_owned()),
        Just("after".to_owned()),
        Just("signal".to_owned()),
        Just("from".to_owned()),
        Just("to".to_owned()),
        Just("kind".to_owned()),
        Just("model_year".to_owned()),
        Just("connected".to_owned()),
        Just("format".to_owned()),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        "\\PC{0,30}",
        prop::collection::vec(any::<u8>(), 0..30).prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
        let encode = |v: &str| {
            v.bytes()
                .map(|b| match b.is_ascii_alphanumeric() || b"-._~%".contains(&b) {
                    true => (b as char).to_string(),
                    false => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        pairs.into_iter().map(|(k, v)| format!("{k}={}", encode(&v))).collect::<Vec<_>>().join("&")
    })
}

/// Sends one request through the router; panics unless the answer is 2xx, or a 4xx problem, or
/// 503 `unavailable` (no broker for broadcasts in this app).
async fn answers_cleanly(router: &axum::Router, method: &str, uri: &str, token: &str, body: Option<Vec<u8>>) {
    use tower::ServiceExt;
    let mut request =
        axum::http::Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(axum::body::Body::from(body.unwrap_or_default())).expect("a request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        status.as_u16() < 500 || (status.as_u16() == 503 && text.contains("\"unavailable\"")),
        "{method} {uri}: {status} {text}"
    );
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(content_type, "application/problem+json", "{method} {uri}: {status} {text}");
    }
}

#[test]
fn every_http_body_and_query_answers_a_success_or_a_problem() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Both stores: PostgreSQL refuses what SQLite takes (NUL in text), and the other way round.
    for store in [Store::Sqlite, Store::Postgres] {
        let Some(app) = runtime.block_on(spawn_app(store)) else { continue };
        runtime.block_on(app.register(VIN));
        let router = tacho::adapters::http::router(app.running.state.clone());
        fuzz_routes(&runtime, &app, &router);
        runtime.block_on(app.stop());
    }
}

/// Runs the body and query properties against every route.
fn fuzz_routes(runtime: &tokio::runtime::Runtime, app: &TestApp, router: &axum::Router) {
    let admin = app.token("fuzz", &[Role::Admin], None);
    let command = uuid::Uuid::new_v4();
    let bodies: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/v1/vehicles".into(),
            json!({"vin": VIN2, "model": "A", "model_year": 2026, "market": "EU", "options": [], "data_collection": {}}),
        ),
        (
            "POST",
            format!("/v1/vehicles/{VIN}/commands"),
            json!({"name": "configure", "params": {"key": "k", "value": 1}, "timeout_s": 30, "store_and_forward": true, "ttl_s": 60}),
        ),
        (
            "POST",
            format!("/v1/vehicles/{VIN}/devices"),
            json!({"device_id": "tcu-1", "kind": "tcu", "certificate_thumbprint": THUMB}),
        ),
        (
            "PUT",
            format!("/v1/vehicles/{VIN}/consents/telemetry"),
            json!({"subject": "alice", "legal_basis": "consent", "expires_at": null}),
        ),
        (
            "POST",
            "/v1/devices/tcu-1/replace".into(),
            json!({"new_device_id": "tcu-2", "certificate_thumbprint": THUMB}),
        ),
        ("POST", "/v1/devices/tcu-1/revoke".into(), json!({"reason": "stolen"})),
        ("POST", "/v1/broadcasts".into(), json!({"topic": "weather/warning", "payload": {}, "expiry_s": 60})),
        ("POST", "/v1/audit/verify".into(), json!({"aggregate_type": "Vehicle", "id": VIN})),
        ("POST", format!("/v1/commands/{command}/cancel"), json!({})),
    ];
    let queries = [
        "/v1/vehicles".to_owned(),
        format!("/v1/vehicles/{VIN}/commands"),
        format!("/v1/vehicles/{VIN}/state/history"),
        format!("/v1/vehicles/{VIN}/events"),
        format!("/v1/commands/{command}"),
        "/v1/audit/events".to_owned(),
        format!("/v1/audit/streams/Vehicle/{VIN}"),
    ];
    let config = ProptestConfig { cases: cases(64), ..ProptestConfig::default() };
    for (method, path, template) in bodies {
        proptest!(config.clone(), |(body in hostile_body(template.clone()))| {
            runtime.block_on(answers_cleanly(router, method, &path, &admin, Some(body)));
        });
    }
    for path in queries {
        proptest!(config.clone(), |(query in hostile_query())| {
            runtime.block_on(answers_cleanly(router, "GET", &format!("{path}?{query}"), &admin, None));
        });
    }
}
