//! Audit and replay: tampering made evident, read models rebuilt and swapped in under load.

use crate::contract;
use crate::helpers::*;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tacho::audit::{self, VerifyReport};
use tacho::store::Db;

/// A vehicle (registered, activated, consent) and a command, all sealed.
async fn sealed_app(store: Store) -> Option<TestApp> {
    let app = spawn_app(store).await?;
    app.ready_vehicle(VIN, "alice").await;
    let response = app.command(VIN, "alice", json!({"name": "lock_doors"})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let created: Value = response.json().await.unwrap();
    let id = created["command_id"].as_str().unwrap();
    assert!(app.running.state.settle("seals", "Command", id).await.unwrap(), "sealed within 2 s");
    Some(app)
}

async fn report(app: &TestApp) -> VerifyReport {
    audit::verify(app.db(), None, None, &|_| {}).await.unwrap()
}

/// Runs `sql` (written for both stores) straight on the database, as someone with its password could.
async fn tamper(db: &Db, sql: &str) {
    on_db!(db, |p| sqlx::query(sql).execute(p).await.map(|_| ())).unwrap();
}

contract!(a_healthy_log_verifies_and_names_its_chain_head);
async fn a_healthy_log_verifies_and_names_its_chain_head(store: Store) {
    let Some(app) = sealed_app(store).await else { return };
    let report = report(&app).await;
    assert_eq!(report.mismatches, vec![], "{report:?}");
    assert_eq!((report.events, report.sealed, report.unsealed), (4, 4, 0));
    let head = report.chain.expect("a chain head");
    assert_eq!(head.seal_no, 4);
    assert_eq!(head.chain_hash.len(), 64);
    let over_http: Value = app.post("/v1/audit/verify", &app.auditor(), json!({})).await.json().await.unwrap();
    assert_eq!(over_http["chain"]["chain_hash"], head.chain_hash.as_str());
}

contract!(an_edited_payload_is_named);
async fn an_edited_payload_is_named(store: Store) {
    let Some(app) = sealed_app(store).await else { return };
    let cast = if store == Store::Postgres { "::text" } else { "" };
    let back = if store == Store::Postgres { "::json" } else { "" };
    let sql = format!(
        "UPDATE events SET payload = replace(payload{cast}, 'T', 'X'){back} \
         WHERE aggregate_type = 'Vehicle' AND aggregate_id = '{VIN}' AND sequence = 2"
    );
    tamper(app.db(), &sql).await;
    let report = report(&app).await;
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    let bad = &report.mismatches[0];
    assert_eq!((bad.aggregate_type.as_str(), bad.aggregate_id.as_str(), bad.sequence), ("Vehicle", VIN, Some(2)));
    assert!(bad.problem.contains("does not match its seal"), "{}", bad.problem);
}

contract!(a_deleted_event_is_named);
async fn a_deleted_event_is_named(store: Store) {
    let Some(app) = sealed_app(store).await else { return };
    let sql =
        format!("DELETE FROM events WHERE aggregate_type = 'Vehicle' AND aggregate_id = '{VIN}' AND sequence = 1");
    tamper(app.db(), &sql).await;
    let report = report(&app).await;
    let bad = &report.mismatches[0];
    assert_eq!((bad.aggregate_type.as_str(), bad.sequence), ("Vehicle", Some(1)));
    assert!(bad.problem.contains("missing: deleted"), "{}", bad.problem);
}

contract!(a_reordered_event_is_named);
async fn a_reordered_event_is_named(store: Store) {
    let Some(app) = sealed_app(store).await else { return };
    for (from, to) in [(1, 1000), (2, 1), (1000, 2)] {
        let sql = format!(
            "UPDATE events SET sequence = {to} WHERE aggregate_type = 'Vehicle' AND aggregate_id = '{VIN}' AND sequence = {from}"
        );
        tamper(app.db(), &sql).await;
    }
    let report = report(&app).await;
    let bad = &report.mismatches[0];
    assert_eq!((bad.aggregate_type.as_str(), bad.sequence), ("Vehicle", Some(1)));
    assert!(bad.problem.contains("reordered"), "{}", bad.problem);
}

contract!(edited_seals_break_the_chain_and_the_recorded_head_catches_a_rewrite);
async fn edited_seals_break_the_chain_and_the_recorded_head_catches_a_rewrite(store: Store) {
    let Some(app) = sealed_app(store).await else { return };
    let head = report(&app).await.chain.unwrap();
    let expect = format!("{}:{}", head.seal_no, head.chain_hash);
    let config = app.config.clone();
    assert!(tacho::maintenance::audit_verify(&config, None, None, Some(&expect)).await.unwrap());

    let forged = "0".repeat(64);
    tamper(app.db(), &format!("UPDATE event_seals SET chain_hash = '{forged}' WHERE seal_no = 3")).await;
    let report = report(&app).await;
    let bad = &report.mismatches[0];
    assert_eq!((bad.aggregate_type.as_str(), bad.aggregate_id.as_str()), ("seals", "3"));
    assert!(bad.problem.contains("breaks the chain"), "{}", bad.problem);
    assert!(!tacho::maintenance::audit_verify(&config, None, None, Some(&expect)).await.unwrap());
}

contract!(a_rebuild_under_concurrent_writes_equals_the_live_read_models, flavor = "multi_thread", worker_threads = 4);
async fn a_rebuild_under_concurrent_writes_equals_the_live_read_models(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let vins: Vec<String> = (0..10).map(|i| format!("WVWZZZ1JZXW{i:06}")).collect();
    for vin in &vins {
        app.ready_vehicle(vin, "alice").await;
        assert_eq!(app.command(vin, "alice", json!({"name": "honk"})).await.status(), StatusCode::ACCEPTED);
    }
    let writes = futures::stream::iter(0..300)
        .map(|i| {
            let (app, vin) = (&app, vins[i % vins.len()].clone());
            async move { app.command(&vin, "alice", json!({"name": "honk"})).await.status() }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let subscriptions = &app.running.state.subscriptions;
    let rebuilds = async {
        let mut rebuilt = Vec::new();
        for name in ["commands", "vehicles", "consents", "commands"] {
            rebuilt.push(subscriptions.rebuild(name).await.expect("rebuild under load").events);
        }
        rebuilt
    };
    let (statuses, rebuilt) = tokio::join!(writes, rebuilds);
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED));
    assert!(rebuilt.iter().all(|n| *n > 0), "{rebuilt:?}");

    subscriptions.catch_up("commands").await.unwrap();
    if let Db::Postgres(pool) = app.db() {
        let sql =
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'rm_commands' ORDER BY 1";
        let names: Vec<String> = sqlx::query_scalar(sql).fetch_all(pool).await.unwrap();
        assert_eq!(names, ["rm_commands_open", "rm_commands_pkey", "rm_commands_vin"], "the migrations' index names");
    }
    let live = snapshot(app.db(), "rm_commands", "command_id").await;
    assert_eq!(live.len(), 310);
    subscriptions.rebuild("commands").await.unwrap();
    assert_eq!(snapshot(app.db(), "rm_commands", "command_id").await, live);
    let report = report(&app).await;
    assert_eq!(report.mismatches, vec![], "{report:?}");
    let refused = subscriptions.rebuild("seals").await.unwrap_err().to_string();
    assert!(refused.contains("never rebuilt"), "{refused}");
}

contract!(a_read_model_new_in_this_version_is_filled_at_start);
async fn a_read_model_new_in_this_version_is_filled_at_start(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.ready_vehicle(VIN, "alice").await;
    let config = app.config.clone();
    app.stop().await;
    // As if `consents` had not existed in the version that wrote this log.
    let db = tacho::app::database_for_maintenance(&config).await.unwrap();
    tamper(&db, "DELETE FROM rm_consents").await;
    tamper(&db, "DELETE FROM subscription_checkpoints WHERE name = 'consents'").await;
    db.close().await;

    let app = start(config).await;
    let mut consents = Value::Null;
    for _ in 0..100 {
        let path = format!("/v1/vehicles/{VIN}/consents");
        consents = app.get(&path, &app.owner("alice", &[VIN])).await.json().await.unwrap();
        if consents.as_array().is_some_and(|c| !c.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(consents.as_array().map(Vec::len), Some(1), "{consents}");
}

contract!(a_version_1_consent_still_loads_replays_and_verifies);
async fn a_version_1_consent_still_loads_replays_and_verifies(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    assert_eq!(app.register(VIN).await.status(), StatusCode::CREATED);
    let path = format!("/v1/vehicles/{VIN}/activate");
    assert_eq!(app.call(reqwest::Method::POST, &path, &app.factory(), None).await.status(), StatusCode::OK);
    // As an earlier tacho wrote it: payload version 1, no `granted_by`.
    let v1 = json!({"ConsentGranted": {"vin": VIN, "subject": "alice", "purpose": "remote_commands", "version": 1,
                    "legal_basis": "consent", "expires_at": null, "at": "2026-01-01T00:00:00Z"}});
    let mut pooled = app.db().acquire().await.unwrap();
    let metadata = json!({"actor": "owner-7", "request_id": "r-1"});
    tacho::store::log::append(&mut pooled.conn(), "Consent", VIN, 1, "ConsentGranted", &v1, &metadata).await.unwrap();
    drop(pooled);
    let subscriptions = &app.running.state.subscriptions;
    assert!(app.running.state.settle("consents", "Consent", VIN).await.unwrap());

    let consents: Value =
        app.get(&format!("/v1/vehicles/{VIN}/consents"), &app.owner("alice", &[VIN])).await.json().await.unwrap();
    assert_eq!(consents[0]["granted_by"], "owner-7", "{consents}");
    // The aggregate loads it (cqrs-es upcaster): the consent allows alice's command.
    let created: Value = app.command(VIN, "alice", json!({"name": "lock_doors"})).await.json().await.unwrap();
    assert_eq!(created["consent_version"], 1, "{created}");
    // A rebuild replays it; verify folds it and checks its seal.
    subscriptions.rebuild("consents").await.unwrap();
    let rebuilt: Value =
        app.get(&format!("/v1/vehicles/{VIN}/consents"), &app.owner("alice", &[VIN])).await.json().await.unwrap();
    assert_eq!(rebuilt, consents);
    assert!(app.running.state.settle("seals", "Consent", VIN).await.unwrap());
    let report = report(&app).await;
    assert_eq!(report.mismatches, vec![], "{report:?}");
    let stream: Value =
        app.get(&format!("/v1/audit/streams/Consent/{VIN}"), &app.auditor()).await.json().await.unwrap();
    assert_eq!(stream[0]["event_version"], "1", "the log keeps what was written");
}

contract!(a_stream_exports_as_json_lines_whose_seals_recompute_offline);
async fn a_stream_exports_as_json_lines_whose_seals_recompute_offline(store: Store) {
    let Some(app) = sealed_app(store).await else { return };
    let response = app.get(&format!("/v1/audit/streams/Vehicle/{VIN}?format=jsonl"), &app.auditor()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert!(response.headers()["content-disposition"].to_str().unwrap().contains(&format!("Vehicle-{VIN}.jsonl")));
    let body = response.text().await.unwrap();
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let mut previous = tacho::store::seal::GENESIS.to_owned();
    for line in &lines {
        assert_eq!(line["actor"], "plant-1");
        assert!(line["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{line}");
        assert!(line["received_at"].is_string());
        let event = tacho::store::log::StoredEvent {
            position: line["position"].as_i64().unwrap(),
            tx_id: 0,
            aggregate_type: line["aggregate_type"].as_str().unwrap().into(),
            aggregate_id: line["aggregate_id"].as_str().unwrap().into(),
            sequence: line["sequence"].as_i64().unwrap(),
            event_type: line["event_type"].as_str().unwrap().into(),
            event_version: line["event_version"].as_str().unwrap().into(),
            payload: line["payload"].clone(),
            metadata: line["metadata"].clone(),
            recorded_at: line["recorded_at"].as_str().unwrap().parse().unwrap(),
            unreadable: None,
        };
        previous = tacho::store::seal::stream_hash(&previous, &event);
        assert_eq!(line["seal"], previous.as_str(), "the export alone proves its seals");
    }
    let accept = app
        .client
        .get(format!("{}/v1/audit/streams/Vehicle/{VIN}", app.base))
        .bearer_auth(app.auditor())
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(accept.text().await.unwrap(), body);
    let commands: Value = app.get("/v1/audit/events?limit=10", &app.auditor()).await.json().await.unwrap();
    let requested =
        commands["items"].as_array().unwrap().iter().find(|e| e["event_type"] == "CommandRequested").unwrap();
    assert_eq!(requested["consent_version"], 1);
    assert_eq!(requested["actor"], "alice");
    let bad = app.get(&format!("/v1/audit/streams/Vehicle/{VIN}?format=xml"), &app.auditor()).await;
    assert_problem(bad, StatusCode::BAD_REQUEST, "invalid_query").await;
}

contract!(an_event_the_seals_passed_without_a_seal_is_named);
async fn an_event_the_seals_passed_without_a_seal_is_named(store: Store) {
    let Some(app) = sealed_app(store).await else { return };
    // The last seal deleted (its event could then be edited unseen): the seals had passed it.
    tamper(app.db(), "DELETE FROM event_seals WHERE seal_no = (SELECT max(seal_no) FROM event_seals)").await;
    let report = report(&app).await;
    let bad = &report.mismatches[0];
    assert_eq!(bad.aggregate_type, "Command");
    assert!(bad.problem.contains("has no seal, though the seals passed it"), "{}", bad.problem);
}
