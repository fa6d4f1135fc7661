//! Per-command failure isolation: what the broker refuses, or delivers to no one, is that command's
//! outcome alone, and every other command goes on.

use crate::contract;
use crate::helpers::*;
use crate::servers::{mosquitto_pub, tacho_on, OwnMosquitto};
use serde_json::{json, Value};
use tacho::sim::{Behaviour, SimVehicle};

fn terminal(status: &str) -> bool {
    !matches!(status, "requested" | "queued" | "dispatched" | "accepted" | "in_progress")
}

contract!(a_publish_the_broker_refuses_fails_that_command_only);
async fn a_publish_the_broker_refuses_fails_that_command_only(store: Store) {
    let (refused_vin, vin) = (unique_vin(), unique_vin());
    // The broker may not take requests for one vehicle (an ACL, as a misconfigured or hostile
    // broker might have): PUBACK 135, not authorized.
    let acl = format!("topic readwrite #\ntopic deny vehicles/{refused_vin}/commands/+/request\n");
    let Some(broker) = OwnMosquitto::start("allow_anonymous true\nacl_file {dir}/acl", &[("acl", &acl)]) else {
        return;
    };
    let Some(app) = tacho_on(&broker, store).await else { return };

    app.ready_vehicle(&refused_vin, "alice").await;
    mosquitto_pub(broker.port, &format!("vehicles/{refused_vin}/connection"), r#"{"state":"online"}"#);
    app.wait_connected(&refused_vin, true).await;
    app.ready_vehicle(&vin, "alice").await;
    let sim = SimVehicle::connect(&broker.url(), &vin, Behaviour::default()).await.unwrap();
    app.wait_connected(&vin, true).await;

    let refused = app.request(&refused_vin, json!({"name": "honk"})).await;
    let others: Vec<String> =
        futures::future::join_all((0..20).map(|_| app.request(&vin, json!({"name": "honk"})))).await;
    let failed = app.wait_command(&refused, "alice", &refused_vin, terminal).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "publish_refused");
    assert_eq!(failed["error"]["by"], "tacho");
    assert!(failed["error"]["message"].as_str().unwrap().contains("NotAuthorized"), "{failed}");
    for id in &others {
        let done = app.wait_command(id, "alice", &vin, terminal).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let later = app.request(&vin, json!({"name": "flash_lights"})).await;
    assert_eq!(app.wait_command(&later, "alice", &vin, terminal).await["status"], "succeeded");
    assert_eq!(sim.requests().len(), 21, "each command of the working vehicle reached it once");
}

contract!(a_publish_no_one_is_subscribed_to_is_not_a_delivery);
async fn a_publish_no_one_is_subscribed_to_is_not_a_delivery(store: Store) {
    let Some(broker) = OwnMosquitto::start("allow_anonymous true", &[]) else { return };
    let Some(app) = tacho_on(&broker, store).await else { return };
    // Online as far as tacho knows, but nothing subscribed to its request topic.
    let vin = unique_vin();
    app.ready_vehicle(&vin, "alice").await;
    mosquitto_pub(broker.port, &format!("vehicles/{vin}/connection"), r#"{"state":"online"}"#);
    app.wait_connected(&vin, true).await;

    let once = app.request(&vin, json!({"name": "honk"})).await;
    let failed = app.wait_command(&once, "alice", &vin, terminal).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "vehicle_unreachable");
    let kept = app.request(&vin, json!({"name": "honk", "store_and_forward": true})).await;
    let queued = app.wait_command(&kept, "alice", &vin, |s| s != "requested").await;
    assert_eq!(queued["status"], "queued", "store-and-forward: it waits for the vehicle");

    // The vehicle subscribes: the queued command goes out and is answered.
    let sim = SimVehicle::connect(&broker.url(), &vin, Behaviour::default()).await.unwrap();
    let done = app.wait_command(&kept, "alice", &vin, terminal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(sim.requests().len(), 1);
}

contract!(a_request_the_broker_never_confirms_fails_alone_once_others_go_through);
async fn a_request_the_broker_never_confirms_fails_alone_once_others_go_through(store: Store) {
    // The broker drops any client that sends a packet over 2 KiB: the request of a big `configure`
    // never gets a PUBACK, however often it is sent, while small requests go through.
    let Some(broker) = OwnMosquitto::start("allow_anonymous true\nmax_packet_size 2048", &[]) else { return };
    let Some(app) = tacho_on(&broker, store).await else { return };
    let sim = app.online(&broker.url(), Behaviour::default()).await;
    let vin = sim.vin().to_owned();

    let big = "x".repeat(4000);
    let poison =
        app.request(&vin, json!({"name": "configure", "params": {"key": "k", "value": big}, "timeout_s": 600})).await;
    let mut others = Vec::new();
    let failed = loop {
        let id = app.request(&vin, json!({"name": "honk"})).await;
        let done = app.wait_command(&id, "alice", &vin, terminal).await;
        assert_eq!(done["status"], "succeeded", "a small request behind the big one: {done}");
        others.push(id);
        let big: Value =
            app.get(&format!("/v1/commands/{poison}"), &app.owner("alice", &[&vin])).await.json().await.unwrap();
        if terminal(big["status"].as_str().unwrap()) {
            break big;
        }
        assert!(others.len() < 40, "the big request never ended: {big}");
    };
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "publish_refused");
    assert!(failed["error"]["message"].as_str().unwrap().contains("did not confirm this request 5 times"), "{failed}");
}
