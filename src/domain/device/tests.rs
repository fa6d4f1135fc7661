//! Given/when/then tests for every Device rule.

use super::*;
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;

type Given = TestFramework<Device>;
const THUMB: &str = "9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08";
const THUMB_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date")
}

fn register(thumbprint: &str) -> DeviceCommand {
    DeviceCommand::Register {
        device_id: "tcu-1".into(),
        vin: "1HGCM82633A004352".into(),
        kind: "tcu".into(),
        certificate_thumbprint: thumbprint.into(),
        replaces: None,
        at: at(),
    }
}

fn registered() -> DeviceEvent {
    DeviceEvent::DeviceRegistered {
        device_id: "tcu-1".into(),
        vin: "1HGCM82633A004352".into(),
        kind: "tcu".into(),
        certificate_thumbprint: THUMB_HEX.into(),
        replaces: None,
        at: at(),
    }
}

#[test]
fn a_device_is_registered_with_a_normalized_thumbprint() {
    Given::with(()).given_no_previous_events().when(register(THUMB)).then_expect_events(vec![registered()]);
}

#[test]
fn a_thumbprint_that_is_not_sha256_is_refused() {
    let result = Given::with(()).given_no_previous_events().when(register("abc123")).inspect_result();
    assert!(matches!(result, Err(DeviceError::Invalid(_))));
}

#[test]
fn registering_a_device_twice_is_refused() {
    Given::with(())
        .given(vec![registered()])
        .when(register(THUMB_HEX))
        .then_expect_error(DeviceError::AlreadyRegistered("tcu-1".into()));
}

#[test]
fn a_registered_device_is_provisioned_once() {
    let provision = || DeviceCommand::Provision { client_id: "c1".into(), allowed_topics: vec!["t".into()], at: at() };
    Given::with(()).given(vec![registered()]).when(provision()).then_expect_events(vec![
        DeviceEvent::DeviceProvisioned { client_id: "c1".into(), allowed_topics: vec!["t".into()], at: at() },
    ]);
    Given::with(())
        .given(vec![
            registered(),
            DeviceEvent::DeviceProvisioned { client_id: "c1".into(), allowed_topics: vec!["t".into()], at: at() },
        ])
        .when(provision())
        .then_expect_events(vec![]);
}

#[test]
fn a_device_replacement_retires_the_old_device() {
    Given::with(())
        .given(vec![registered()])
        .when(DeviceCommand::Replace { replacement_device_id: "tcu-2".into(), at: at() })
        .then_expect_events(vec![DeviceEvent::DeviceReplaced { replacement_device_id: "tcu-2".into(), at: at() }]);
}

#[test]
fn a_replaced_device_accepts_nothing_more() {
    Given::with(())
        .given(vec![registered(), DeviceEvent::DeviceReplaced { replacement_device_id: "tcu-2".into(), at: at() }])
        .when(DeviceCommand::Activate { at: at() })
        .then_expect_error(DeviceError::Retired("replaced"));
}

#[test]
fn a_revoked_device_cannot_be_replaced() {
    Given::with(())
        .given(vec![registered(), DeviceEvent::DeviceRevoked { reason: None, at: at() }])
        .when(DeviceCommand::Replace { replacement_device_id: "tcu-2".into(), at: at() })
        .then_expect_error(DeviceError::Retired("revoked"));
}

#[test]
fn a_device_cannot_replace_itself() {
    let result = Given::with(())
        .given(vec![registered()])
        .when(DeviceCommand::Replace { replacement_device_id: "tcu-1".into(), at: at() })
        .inspect_result();
    assert!(matches!(result, Err(DeviceError::Invalid(_))));
}

#[test]
fn commands_on_an_unknown_device_are_refused() {
    Given::with(())
        .given_no_previous_events()
        .when(DeviceCommand::Revoke { reason: None, at: at() })
        .then_expect_error(DeviceError::NotFound);
}

#[test]
fn a_device_id_with_spaces_is_refused() {
    assert!(validate_device_id("tcu 1").is_err());
    assert!(validate_device_id("tcu-0001").is_ok());
}

#[test]
fn a_provisioned_device_becomes_active_once() {
    let provisioned =
        vec![registered(), DeviceEvent::DeviceProvisioned { client_id: "c1".into(), allowed_topics: vec![], at: at() }];
    Given::with(())
        .given(provisioned.clone())
        .when(DeviceCommand::Activate { at: at() })
        .then_expect_events(vec![DeviceEvent::DeviceActivated { at: at() }]);
    let mut active = provisioned;
    active.push(DeviceEvent::DeviceActivated { at: at() });
    Given::with(()).given(active).when(DeviceCommand::Activate { at: at() }).then_expect_events(vec![]);
}

#[test]
fn a_device_is_revoked() {
    Given::with(())
        .given(vec![registered()])
        .when(DeviceCommand::Revoke { reason: Some("key leaked".into()), at: at() })
        .then_expect_events(vec![DeviceEvent::DeviceRevoked { reason: Some("key leaked".into()), at: at() }]);
}

#[test]
fn a_device_kind_outside_the_pattern_is_refused() {
    let DeviceCommand::Register { device_id, vin, certificate_thumbprint, replaces, at, .. } = register(THUMB) else {
        unreachable!("register() builds a Register command")
    };
    let command =
        DeviceCommand::Register { device_id, vin, kind: "Head Unit".into(), certificate_thumbprint, replaces, at };
    let result = Given::with(()).given_no_previous_events().when(command).inspect_result();
    assert!(matches!(result, Err(DeviceError::Invalid(_))));
}
