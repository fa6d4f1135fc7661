//! Given/when/then tests for every Vehicle rule.

use super::*;
use crate::domain::Vin;
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use serde_json::Map;

type Given = TestFramework<Vehicle>;
const VIN: &str = "1HGCM82633A004352";

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date")
}

fn register() -> VehicleCommand {
    VehicleCommand::Register {
        vin: Vin::parse(VIN).expect("valid VIN"),
        model: "Model A".into(),
        model_year: 2026,
        market: "EU".into(),
        options: vec![],
        data_collection: Map::new(),
        at: at(),
    }
}

fn registered() -> VehicleEvent {
    VehicleEvent::VehicleRegistered {
        vin: VIN.into(),
        model: "Model A".into(),
        model_year: 2026,
        market: "EU".into(),
        options: vec![],
        data_collection: Map::new(),
        at: at(),
    }
}

fn tcu_attached() -> VehicleEvent {
    VehicleEvent::DeviceAttached { device_id: "tcu-1".into(), kind: "tcu".into(), at: at() }
}

#[test]
fn a_new_vehicle_is_registered() {
    Given::with(()).given_no_previous_events().when(register()).then_expect_events(vec![registered()]);
}

#[test]
fn registering_a_vin_twice_is_refused() {
    Given::with(())
        .given(vec![registered()])
        .when(register())
        .then_expect_error(VehicleError::AlreadyRegistered(VIN.into()));
}

#[test]
fn registration_with_an_impossible_model_year_is_refused() {
    let VehicleCommand::Register { vin, model, market, options, data_collection, at, .. } = register() else {
        unreachable!("register() builds a Register command")
    };
    let command = VehicleCommand::Register { vin, model, model_year: 1800, market, options, data_collection, at };
    let result = Given::with(()).given_no_previous_events().when(command).inspect_result();
    assert!(matches!(result, Err(VehicleError::Invalid(_))));
}

#[test]
fn commands_on_an_unregistered_vehicle_are_refused() {
    Given::with(())
        .given_no_previous_events()
        .when(VehicleCommand::Activate { at: at() })
        .then_expect_error(VehicleError::NotFound);
}

#[test]
fn a_registered_vehicle_is_activated() {
    Given::with(())
        .given(vec![registered()])
        .when(VehicleCommand::Activate { at: at() })
        .then_expect_events(vec![VehicleEvent::VehicleActivated { at: at() }]);
}

#[test]
fn activating_an_active_vehicle_changes_nothing() {
    Given::with(())
        .given(vec![registered(), VehicleEvent::VehicleActivated { at: at() }])
        .when(VehicleCommand::Activate { at: at() })
        .then_expect_events(vec![]);
}

#[test]
fn an_active_vehicle_is_suspended_and_reactivated() {
    Given::with(())
        .given(vec![registered(), VehicleEvent::VehicleActivated { at: at() }])
        .when(VehicleCommand::Suspend { reason: Some("stolen".into()), at: at() })
        .then_expect_events(vec![VehicleEvent::VehicleSuspended { reason: Some("stolen".into()), at: at() }]);
    Given::with(())
        .given(vec![
            registered(),
            VehicleEvent::VehicleActivated { at: at() },
            VehicleEvent::VehicleSuspended { reason: None, at: at() },
        ])
        .when(VehicleCommand::Activate { at: at() })
        .then_expect_events(vec![VehicleEvent::VehicleActivated { at: at() }]);
}

#[test]
fn a_vehicle_never_activated_cannot_be_suspended() {
    Given::with(())
        .given(vec![registered()])
        .when(VehicleCommand::Suspend { reason: None, at: at() })
        .then_expect_error(VehicleError::InvalidTransition { from: "registered", action: "suspended" });
}

#[test]
fn a_decommissioned_vehicle_cannot_be_activated() {
    Given::with(())
        .given(vec![registered(), VehicleEvent::VehicleDecommissioned { at: at() }])
        .when(VehicleCommand::Activate { at: at() })
        .then_expect_error(VehicleError::InvalidTransition { from: "decommissioned", action: "activated" });
}

#[test]
fn decommissioning_twice_changes_nothing() {
    Given::with(())
        .given(vec![registered(), VehicleEvent::VehicleDecommissioned { at: at() }])
        .when(VehicleCommand::Decommission { at: at() })
        .then_expect_events(vec![]);
}

#[test]
fn a_device_is_attached_once() {
    let attach = || VehicleCommand::AttachDevice { device_id: "tcu-1".into(), kind: "tcu".into(), at: at() };
    Given::with(()).given(vec![registered()]).when(attach()).then_expect_events(vec![tcu_attached()]);
    Given::with(())
        .given(vec![registered(), tcu_attached()])
        .when(attach())
        .then_expect_error(VehicleError::DeviceAlreadyAttached("tcu-1".into()));
}

#[test]
fn a_decommissioned_vehicle_gets_no_device() {
    Given::with(())
        .given(vec![registered(), VehicleEvent::VehicleDecommissioned { at: at() }])
        .when(VehicleCommand::AttachDevice { device_id: "tcu-1".into(), kind: "tcu".into(), at: at() })
        .then_expect_error(VehicleError::InvalidTransition { from: "decommissioned", action: "fitted with a device" });
}

#[test]
fn a_device_replacement_swaps_the_devices_in_one_event() {
    Given::with(())
        .given(vec![registered(), tcu_attached()])
        .when(VehicleCommand::ReplaceDevice { old_device_id: "tcu-1".into(), new_device_id: "tcu-2".into(), at: at() })
        .then_expect_events(vec![VehicleEvent::DeviceSwapped {
            old_device_id: "tcu-1".into(),
            new_device_id: "tcu-2".into(),
            at: at(),
        }]);
}

#[test]
fn replacing_a_device_that_is_not_fitted_is_refused() {
    Given::with(())
        .given(vec![registered()])
        .when(VehicleCommand::ReplaceDevice { old_device_id: "tcu-9".into(), new_device_id: "tcu-2".into(), at: at() })
        .then_expect_error(VehicleError::DeviceNotAttached("tcu-9".into()));
}

#[test]
fn a_fitted_device_is_detached_once() {
    let detach = || VehicleCommand::DetachDevice { device_id: "tcu-1".into(), at: at() };
    Given::with(())
        .given(vec![registered(), tcu_attached()])
        .when(detach())
        .then_expect_events(vec![VehicleEvent::DeviceDetached { device_id: "tcu-1".into(), at: at() }]);
    Given::with(())
        .given(vec![registered(), tcu_attached(), VehicleEvent::DeviceDetached { device_id: "tcu-1".into(), at: at() }])
        .when(detach())
        .then_expect_error(VehicleError::DeviceNotAttached("tcu-1".into()));
}
