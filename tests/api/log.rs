//! The log and its subscribers: concurrency, restarts and late commits.

use crate::contract;
use crate::helpers::*;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::HashMap;
use tacho::domain::command::{AnswerStatus, Command, CommandCommand, RequestCommand, VehicleAnswer};
use tacho::domain::consent::{ConsentCommand, Purpose};
use tacho::domain::vehicle::VehicleCommand;
use tacho::domain::Vin;
use tacho::projections::Subscriptions;
use tacho::store::Db;
use tacho::store::Frameworks;

const READ_MODELS: [(&str, &str, &str); 4] = [
    ("vehicles", "rm_vehicles", "vin"),
    ("devices", "rm_devices", "device_id"),
    ("consents", "rm_consents", "vin, subject, purpose"),
    ("commands", "rm_commands", "command_id"),
];

async fn snapshots(db: &Db) -> Vec<Vec<Value>> {
    let mut all = Vec::new();
    for (_, table, order) in READ_MODELS {
        all.push(snapshot(db, table, order).await);
    }
    all
}

/// Live read models, then the same after a rebuild of every subscriber from position 0.
async fn live_and_rebuilt(subscriptions: &Subscriptions, db: &Db) -> (Vec<Vec<Value>>, Vec<Vec<Value>>) {
    for (name, _, _) in READ_MODELS {
        subscriptions.catch_up(name).await.expect("catch up");
    }
    let live = snapshots(db).await;
    for (name, _, _) in READ_MODELS {
        subscriptions.rebuild(name).await.expect("rebuild");
    }
    (live, snapshots(db).await)
}

contract!(fifty_concurrent_commands_on_one_aggregate_lose_no_read_model_update);
async fn fifty_concurrent_commands_on_one_aggregate_lose_no_read_model_update(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    app.register(VIN).await;
    // Half through the API, half through a second instance's frameworks on the same database:
    // writers of one instance queue, writers of two instances collide and are retried.
    let other = Frameworks::new(app.db());
    let grants = futures::stream::iter(0..50)
        .map(|i| {
            let (app, other) = (&app, &other);
            async move {
                let subject = format!("user-{i}");
                if i % 2 == 0 {
                    let token = app.owner(&subject, &[VIN]);
                    let path = format!("/v1/vehicles/{VIN}/consents/telemetry");
                    app.call(Method::PUT, &path, &token, Some(json!({}))).await.status() == StatusCode::OK
                } else {
                    let grant = ConsentCommand::Grant {
                        vin: VIN.into(),
                        subject,
                        purpose: Purpose::parse("telemetry").unwrap(),
                        legal_basis: "consent".into(),
                        expires_at: None,
                        granted_by: "tester".into(),
                        at: chrono::Utc::now(),
                    };
                    other.execute(&other.consents, VIN, grant, &HashMap::new()).await.is_ok()
                }
            }
        })
        .buffer_unordered(50)
        .collect::<Vec<_>>()
        .await;
    assert!(grants.iter().all(|ok| *ok), "{grants:?}");
    let (live, rebuilt) = live_and_rebuilt(&app.running.state.subscriptions, app.db()).await;
    let consents = &live[2];
    assert_eq!(consents.len(), 50);
    let mut versions: Vec<i64> = consents.iter().map(|c| c["version"].as_i64().unwrap()).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=50).collect::<Vec<_>>(), "every grant got its own version");
    assert_eq!(live, rebuilt);
}

contract!(five_hundred_concurrent_commands_across_vehicles_equal_a_full_replay);
async fn five_hundred_concurrent_commands_across_vehicles_equal_a_full_replay(store: Store) {
    let Some(app) = spawn_app(store).await else { return };
    let vins: Vec<String> = (0..25).map(|i| format!("WVWZZZ1JZXW{i:06}")).collect();
    for vin in &vins {
        app.ready_vehicle(vin, "alice").await;
    }
    let statuses = futures::stream::iter(0..500)
        .map(|i| {
            let vin = vins[i % vins.len()].clone();
            let app = &app;
            async move { app.command(&vin, "alice", json!({"name": "honk"})).await.status() }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED));
    let (live, rebuilt) = live_and_rebuilt(&app.running.state.subscriptions, app.db()).await;
    assert_eq!(live[3].len(), 500);
    assert_eq!(live, rebuilt);
    for row in &live[3] {
        let id = row["command_id"].as_str().unwrap();
        let folded = app.running.state.frameworks.stores.load::<Command>(id).await.unwrap();
        assert_eq!(folded.status.as_str(), row["status"].as_str().unwrap());
        assert_eq!(folded.vin, row["vin"].as_str().unwrap());
    }
}

/// A database with a registered, active vehicle, a consent and `commands` command streams,
/// written through the frameworks with no subscriber running.
async fn written_log(store: Store, commands: usize) -> Option<(Db, Frameworks)> {
    let url = fresh_store(store).await?;
    let db = tacho::app::database(&config(&url)).await.unwrap();
    let frameworks = Frameworks::new(&db);
    let meta = HashMap::new();
    let at = chrono::Utc::now();
    let register = VehicleCommand::Register {
        vin: Vin::parse(VIN).unwrap(),
        model: "Model A".into(),
        model_year: 2026,
        market: "EU".into(),
        options: vec![],
        data_collection: Default::default(),
        at,
    };
    frameworks.execute(&frameworks.vehicles, VIN, register, &meta).await.unwrap();
    frameworks.execute(&frameworks.vehicles, VIN, VehicleCommand::Activate { at }, &meta).await.unwrap();
    let grant = ConsentCommand::Grant {
        vin: VIN.into(),
        subject: "alice".into(),
        purpose: Purpose::parse("remote_commands").unwrap(),
        legal_basis: "consent".into(),
        expires_at: None,
        granted_by: "alice".into(),
        at,
    };
    frameworks.execute(&frameworks.consents, VIN, grant, &meta).await.unwrap();
    for _ in 0..commands {
        let id = uuid::Uuid::new_v4();
        let request = CommandCommand::Request(RequestCommand {
            command_id: id,
            vin: VIN.into(),
            name: "honk".into(),
            params: Value::Null,
            timeout_s: 30,
            store_and_forward: false,
            ttl_s: 3600,
            requester: "alice".into(),
            idempotency_key: None,
            at,
        });
        frameworks.execute(&frameworks.commands, &id.to_string(), request, &meta).await.unwrap();
        frameworks
            .execute(&frameworks.commands, &id.to_string(), CommandCommand::MarkDispatched { at }, &meta)
            .await
            .unwrap();
    }
    Some((db, frameworks))
}

contract!(a_subscriber_stopped_mid_stream_and_restarted_equals_a_rebuild);
async fn a_subscriber_stopped_mid_stream_and_restarted_equals_a_rebuild(store: Store) {
    let Some((db, _frameworks)) = written_log(store, 20).await else { return };
    let first = Subscriptions::new(db.clone(), tacho::app::projections()).with_batch_size(7);
    assert_eq!(first.step("commands").await.unwrap(), 7);
    assert_eq!(first.step("commands").await.unwrap(), 7);
    let sql = "SELECT count(*) FROM rm_commands";
    let partial: i64 = on_db!(&db, |p| sqlx::query_scalar(sql).fetch_one(p).await).unwrap();
    assert!(partial < 20, "stopped mid-stream after {partial} commands");
    drop(first);

    let restarted = Subscriptions::new(db.clone(), tacho::app::projections());
    let (live, rebuilt) = live_and_rebuilt(&restarted, &db).await;
    assert_eq!(live[3].len(), 20);
    assert!(live[3].iter().all(|c| c["status"] == "dispatched" && c["transitions"].as_array().unwrap().len() == 2));
    assert_eq!(live, rebuilt);
}

contract!(command_events_folded_in_one_batch_give_the_rows_applied_one_by_one);
async fn command_events_folded_in_one_batch_give_the_rows_applied_one_by_one(store: Store) {
    let Some((db, frameworks)) = written_log(store, 0).await else { return };
    let meta = HashMap::new();
    let t0 = chrono::Utc::now();
    let at = |s: i64| t0 + chrono::Duration::milliseconds(s * 1_234 + 7);
    let answer = |status: AnswerStatus, result: Option<Value>, code: Option<&str>, s: i64| {
        CommandCommand::RecordAnswer(VehicleAnswer {
            topic_vin: VIN.into(),
            status,
            code: code.map(Into::into),
            message: code.map(|c| format!("because {c}")),
            result,
            vehicle_ts: Some(at(s)),
            at: at(s),
        })
    };
    use AnswerStatus::{Accepted, Failed, InProgress, Succeeded};
    let lifecycles: Vec<(bool, Vec<CommandCommand>)> = vec![
        (
            false,
            vec![
                CommandCommand::MarkDispatched { at: at(1) },
                answer(Accepted, None, None, 2),
                answer(InProgress, None, None, 3),
                answer(Succeeded, Some(json!({"honked": 3})), None, 4),
                answer(Failed, None, Some("late"), 5),
                answer(Succeeded, None, None, 6),
            ],
        ),
        (false, vec![CommandCommand::FailOffline { at: at(1) }]),
        (
            true,
            vec![
                CommandCommand::Queue { at: at(1) },
                CommandCommand::Release { at: at(2) },
                CommandCommand::MarkDispatched { at: at(3) },
                CommandCommand::TimeOut { at: at(40) },
                answer(Succeeded, Some(json!({"late": true})), None, 41),
            ],
        ),
        (
            false,
            vec![
                CommandCommand::MarkDispatched { at: at(1) },
                CommandCommand::Interrupt { at: at(2) },
                answer(Failed, None, Some("door_open"), 3),
                answer(Succeeded, Some(json!({"after": "reconnect"})), None, 4),
            ],
        ),
        (true, vec![CommandCommand::Queue { at: at(1) }, CommandCommand::Cancel { by: "alice".into(), at: at(2) }]),
        (false, vec![CommandCommand::MarkDispatched { at: at(1) }, answer(Succeeded, None, None, 2)]),
        (false, vec![]),
    ];
    // Interleaved: every command's request first, then their later steps round by round, so one
    // batch holds several commands' events and each command's events spread over the log.
    let ids: Vec<uuid::Uuid> = lifecycles.iter().map(|_| uuid::Uuid::new_v4()).collect();
    for (id, (store_and_forward, _)) in ids.iter().zip(&lifecycles) {
        let request = CommandCommand::Request(RequestCommand {
            command_id: *id,
            vin: VIN.into(),
            name: "set_charge_limit".into(),
            params: json!({"percent": 80}),
            timeout_s: 30,
            store_and_forward: *store_and_forward,
            ttl_s: 3600,
            requester: "alice".into(),
            idempotency_key: Some(format!("key-{id}")),
            at: at(0),
        });
        frameworks.execute(&frameworks.commands, &id.to_string(), request, &meta).await.unwrap();
    }
    for round in 0..6 {
        for (id, (_, steps)) in ids.iter().zip(&lifecycles) {
            if let Some(step) = steps.get(round) {
                frameworks.execute(&frameworks.commands, &id.to_string(), step.clone(), &meta).await.unwrap();
            }
        }
    }

    let one_by_one = Subscriptions::new(db.clone(), tacho::app::projections()).with_batch_size(1);
    one_by_one.catch_up("commands").await.unwrap();
    let applied = snapshot(&db, "rm_commands", "command_id").await;
    one_by_one.rebuild("commands").await.unwrap();
    let folded = snapshot(&db, "rm_commands", "command_id").await;
    assert_eq!(applied.len(), ids.len());
    assert_eq!(applied, folded);
    let statuses: HashMap<String, (String, usize, usize)> = applied
        .iter()
        .map(|row| {
            let count = |column: &str| row[column].as_array().map_or(0, Vec::len);
            let status = row["status"].as_str().unwrap().to_owned();
            (row["command_id"].as_str().unwrap().to_owned(), (status, count("transitions"), count("late_answers")))
        })
        .collect();
    let expected = [
        ("succeeded", 5, 0),
        ("failed", 2, 0),
        ("timed_out", 4, 1),
        ("interrupted", 3, 2),
        ("canceled", 3, 0),
        ("succeeded", 3, 0),
        ("requested", 1, 0),
    ];
    for (id, (status, transitions, late)) in ids.iter().zip(expected) {
        assert_eq!(statuses[&id.to_string()], (status.to_owned(), transitions, late), "command {id}");
    }
}

fn registered(vin: &str) -> Value {
    json!({"VehicleRegistered": {"vin": vin, "model": "Model A", "model_year": 2026, "market": "EU",
           "options": [], "data_collection": {}, "at": "2026-01-01T00:00:00Z"}})
}

async fn insert(conn: &mut sqlx::PgConnection, vin: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Vehicle', $1, 1, 'VehicleRegistered', '1', $2, '{}') RETURNING global_position",
    )
    .bind(vin)
    .bind(registered(vin))
    .fetch_one(conn)
    .await
    .unwrap()
}

/// PostgreSQL only: SQLite has one writer at a time, so positions are handed out in commit order.
#[tokio::test]
async fn a_transaction_that_commits_late_with_a_lower_position_is_not_skipped() {
    let Some((db, _frameworks)) = written_log(Store::Postgres, 0).await else { return };
    let Db::Postgres(pool) = db.clone() else { unreachable!("a PostgreSQL store") };
    let subscriptions = Subscriptions::new(db, tacho::app::projections());
    subscriptions.catch_up("vehicles").await.unwrap();

    // `early` takes its transaction id first; `late` takes the lower position, then commits last.
    let mut early = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *early).await.unwrap();
    let mut late = pool.begin().await.unwrap();
    let low = insert(&mut late, VIN2).await;
    let high = insert(&mut early, "WAUZZZ8V5KA000001").await;
    assert!(low < high);
    early.commit().await.unwrap();

    let seen = caught_up(&subscriptions, &pool, 2).await;
    assert_eq!(seen, ["1HGCM82633A004352", "WAUZZZ8V5KA000001"], "the higher position, committed, is read");

    late.commit().await.unwrap();
    let seen = caught_up(&subscriptions, &pool, 3).await;
    assert_eq!(
        seen,
        ["1HGCM82633A004352", "WAUZZZ8V5KA000001", VIN2],
        "the lower position committed late is not skipped"
    );
}

/// PostgreSQL only: the horizon counts the log's writers, not every transaction of the server.
#[tokio::test]
async fn an_idle_transaction_elsewhere_on_the_server_holds_no_reader_back() {
    let Some((db, _frameworks)) = written_log(Store::Postgres, 0).await else { return };
    let Db::Postgres(pool) = db.clone() else { unreachable!("a PostgreSQL store") };
    let subscriptions = Subscriptions::new(db, tacho::app::projections());
    subscriptions.catch_up("vehicles").await.unwrap();

    // A `psql` left in `BEGIN; SELECT txid_current();` on another database of the server, and a
    // transaction of another application in tacho's own database that writes elsewhere.
    let elsewhere = fresh_database().await.unwrap();
    let mut foreign = sqlx::PgConnection::connect(&elsewhere).await.unwrap();
    sqlx::query("BEGIN").execute(&mut foreign).await.unwrap();
    sqlx::query("SELECT txid_current()").execute(&mut foreign).await.unwrap();
    let mut neighbour = pool.begin().await.unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS neighbour (n int)").execute(&mut *neighbour).await.unwrap();
    sqlx::query("INSERT INTO neighbour VALUES (1)").execute(&mut *neighbour).await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    insert(&mut conn, VIN2).await;
    drop(conn);
    subscriptions.catch_up("vehicles").await.unwrap();
    let seen: Vec<String> =
        sqlx::query_scalar("SELECT vin FROM rm_vehicles ORDER BY vin").fetch_all(&pool).await.unwrap();
    assert_eq!(seen, ["1HGCM82633A004352", VIN2], "read at once, both transactions still open");
    neighbour.rollback().await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut foreign).await.unwrap();
}

/// The registry once it holds `count` vehicles: another writer of the log may still be running
/// (a test's own transaction), so poll, do not assume.
async fn caught_up(subscriptions: &Subscriptions, pool: &sqlx::PgPool, count: usize) -> Vec<String> {
    for _ in 0..200 {
        subscriptions.catch_up("vehicles").await.unwrap();
        let seen: Vec<String> =
            sqlx::query_scalar("SELECT vin FROM rm_vehicles ORDER BY vin").fetch_all(pool).await.unwrap();
        if seen.len() >= count {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sqlx::query_scalar("SELECT vin FROM rm_vehicles ORDER BY vin").fetch_all(pool).await.unwrap()
}

/// `vin`'s connection changes in the log, in order: (online, vehicle time).
pub async fn connection_changes(db: &tacho::store::Db, vin: &str) -> Vec<(bool, Option<String>)> {
    let mut pooled = db.acquire().await.unwrap();
    let events = tacho::store::log::read_stream(&mut pooled.conn(), "VehicleState", vin).await.unwrap();
    events
        .iter()
        .filter(|e| e.event_type == "ConnectionChanged")
        .map(|e| {
            let change = &e.payload["ConnectionChanged"];
            (change["online"] == true, change["vehicle_ts"].as_str().map(str::to_owned))
        })
        .collect()
}

/// PostgreSQL only: a writer of the log that stays open holds the readers back; `/readyz` and
/// `/metrics` say so, naming it.
#[tokio::test]
async fn a_stalled_subscriber_is_reported_with_what_holds_it_back() {
    let Some(url) = fresh_database().await else { return };
    let mut config = config(&url);
    config.ready_max_lag_s = 1;
    let app = start(config).await;
    let Db::Postgres(pool) = app.db().clone() else { unreachable!("a PostgreSQL store") };
    assert_eq!(app.client.get(format!("{}/readyz", app.base)).send().await.unwrap().status(), StatusCode::OK);

    let mut stuck = pool.begin().await.unwrap();
    sqlx::query("SET application_name = 'stuck-writer'").execute(&mut *stuck).await.unwrap();
    sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE").execute(&mut *stuck).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *stuck).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    insert(&mut conn, VIN2).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let ready = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let why = ready.text().await.unwrap();
    assert!(why.contains("subscriber vehicles is") && why.contains("stuck-writer"), "{why}");
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tacho_subscriber_lag_events{subscriber=\"vehicles\"} 1"), "{metrics}");

    stuck.rollback().await.unwrap();
    for _ in 0..100 {
        if app.client.get(format!("{}/readyz", app.base)).send().await.unwrap().status() == StatusCode::OK {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("still not ready once the writer ended");
}

/// PostgreSQL only: while a writer of the log holds the read models back, writes still answer
/// success, and a new vehicle's messages are admitted from the log, not refused.
#[tokio::test]
async fn lagging_read_models_neither_fail_writes_nor_refuse_vehicle_messages() {
    let Some(broker) = crate::servers::OwnMosquitto::start("allow_anonymous true", &[]) else { return };
    let Some(url) = fresh_database().await else { return };
    let mut config = config(&url);
    config.mqtt_url = broker.url().to_string();
    let app = start(config).await;
    let Db::Postgres(pool) = app.db().clone() else { unreachable!("a PostgreSQL store") };

    let mut stuck = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE").execute(&mut *stuck).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *stuck).await.unwrap();

    let registered = app.register(VIN2).await;
    assert_eq!(registered.status(), StatusCode::CREATED, "a registration that committed says so");
    let vehicle: Value = registered.json().await.unwrap();
    assert_eq!(vehicle["status"], "registered");
    let grant = app
        .call(
            Method::PUT,
            &format!("/v1/vehicles/{VIN2}/consents/telemetry"),
            &app.owner("alice", &[VIN2]),
            Some(json!({})),
        )
        .await;
    assert_eq!(grant.status(), StatusCode::OK, "a grant that committed says so");
    assert_eq!(grant.json::<Value>().await.unwrap()["status"], "granted");

    // The registry and consent read models still know nothing of the vehicle: its messages are
    // decided from the log.
    crate::servers::mosquitto_pub(broker.port, &format!("vehicles/{VIN2}/connection"), r#"{"state":"online"}"#);
    let report = json!({"msg_id": "m-1", "ts": chrono::Utc::now(), "signals": {"Vehicle.Speed": 3}});
    crate::servers::mosquitto_pub(broker.port, &format!("vehicles/{VIN2}/state"), &report.to_string());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stuck.rollback().await.unwrap();

    app.wait_connected(VIN2, true).await;
    assert_eq!(app.dead_letters(VIN2).await, Vec::<String>::new());
    let facts = app
        .scalar(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{VIN2}' AND aggregate_type = 'VehicleState'"
        ))
        .await;
    assert_eq!(facts, 2, "the connection and the state report");
}

/// PostgreSQL only: a read model that fails for good (here a constraint it breaks on every try)
/// runs alone; the others keep following the log, and it catches up once it can.
#[tokio::test]
async fn a_read_model_that_keeps_failing_does_not_stop_the_others() {
    let Some(url) = fresh_database().await else { return };
    let app = start(config(&url)).await;
    let Db::Postgres(pool) = app.db().clone() else { unreachable!("a PostgreSQL store") };
    assert_eq!(app.register(VIN).await.status(), StatusCode::CREATED);
    sqlx::query("ALTER TABLE rm_devices ADD CONSTRAINT broken CHECK (false) NOT VALID").execute(&pool).await.unwrap();

    let device = json!({"device_id": "tcu-broken", "kind": "tcu", "certificate_thumbprint": THUMB});
    let registered = app.post(&format!("/v1/vehicles/{VIN}/devices"), &app.factory(), device).await;
    assert_eq!(registered.status(), StatusCode::CREATED, "the write committed");
    // Another vehicle, after the device: the registry still follows the log.
    assert_eq!(app.register(VIN2).await.status(), StatusCode::CREATED);
    let shown = |vin: &'static str| {
        let app = &app;
        async move { app.get(&format!("/v1/vehicles/{vin}"), &app.dealer()).await.status() }
    };
    assert_eq!(shown(VIN2).await, StatusCode::OK, "the vehicles read model went on without the devices one");
    let devices = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rm_devices").fetch_one(&pool).await.unwrap()
    };
    assert_eq!(devices(pool.clone()).await, 0, "the devices read model cannot apply the device");

    sqlx::query("ALTER TABLE rm_devices DROP CONSTRAINT broken").execute(&pool).await.unwrap();
    for _ in 0..200 {
        if devices(pool.clone()).await == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the devices read model did not catch up once it could");
}
