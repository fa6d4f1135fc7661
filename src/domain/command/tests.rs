//! Given/when/then tests of requests, dispatch and the requester's side; fixtures for `answer_tests`.

use super::*;
use crate::domain::vehicle::VehicleStatus;
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

pub(super) const VIN: &str = "1HGCM82633A004352";
pub(super) const OTHER_VIN: &str = "WVWZZZ1JZXW000001";

struct Fake {
    vehicle: Option<VehicleStatus>,
    consent: Option<u32>,
}

#[async_trait::async_trait]
impl CommandPreconditions for Fake {
    async fn vehicle_status(&self, _vin: &str) -> Result<Option<VehicleStatus>, PreconditionError> {
        Ok(self.vehicle)
    }
    async fn consent_version(
        &self,
        _vin: &str,
        _subject: &str,
        _purpose: &str,
        _at: DateTime<Utc>,
    ) -> Result<Option<u32>, PreconditionError> {
        Ok(self.consent)
    }
}

pub(super) fn given(vehicle: Option<VehicleStatus>, consent: Option<u32>) -> TestFramework<Command> {
    TestFramework::with(Arc::new(Fake { vehicle, consent }) as CommandServices)
}

pub(super) fn ready() -> TestFramework<Command> {
    given(Some(VehicleStatus::Active), Some(3))
}

pub(super) fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date") + Duration::seconds(seconds)
}

pub(super) fn id() -> Uuid {
    Uuid::from_u128(7)
}

pub(super) fn request_named(name: &str, params: serde_json::Value, store_and_forward: bool) -> CommandCommand {
    CommandCommand::Request(RequestCommand {
        command_id: id(),
        vin: VIN.into(),
        name: name.into(),
        params,
        timeout_s: 30,
        store_and_forward,
        ttl_s: 3600,
        requester: "alice".into(),
        idempotency_key: None,
        at: at(0),
    })
}

pub(super) fn request() -> CommandCommand {
    request_named("lock_doors", json!(null), false)
}

pub(super) fn requested(consent_version: Option<u32>, store_and_forward: bool) -> CommandEvent {
    CommandEvent::CommandRequested {
        command_id: id(),
        vin: VIN.into(),
        name: "lock_doors".into(),
        params: json!({}),
        timeout_s: 30,
        store_and_forward,
        ttl_s: 3600,
        requester: "alice".into(),
        idempotency_key: None,
        consent_version,
        at: at(0),
    }
}

pub(super) fn dispatched() -> Vec<CommandEvent> {
    vec![requested(Some(3), false), CommandEvent::CommandDispatched { at: at(1) }]
}

pub(super) fn accepted() -> Vec<CommandEvent> {
    let mut events = dispatched();
    events.push(CommandEvent::CommandAccepted { vehicle_ts: None, at: at(2) });
    events
}

pub(super) fn answer(status: AnswerStatus, seconds: i64) -> CommandCommand {
    CommandCommand::RecordAnswer(VehicleAnswer {
        topic_vin: VIN.into(),
        status,
        code: None,
        message: None,
        result: None,
        vehicle_ts: None,
        at: at(seconds),
    })
}

pub(super) fn rejected_by_tacho(code: &str, message: &str) -> CommandEvent {
    CommandEvent::CommandRejected {
        by: RejectedBy::Tacho,
        code: code.into(),
        message: Some(message.into()),
        vehicle_ts: None,
        at: at(0),
    }
}

#[test]
fn a_command_is_requested_with_the_consent_version_that_allowed_it() {
    ready().given_no_previous_events().when(request()).then_expect_events(vec![requested(Some(3), false)]);
}

#[test]
fn unlock_is_rejected_without_remote_command_consent_and_the_rejection_is_recorded() {
    given(Some(VehicleStatus::Active), None).given_no_previous_events().when(request()).then_expect_events(vec![
        requested(None, false),
        rejected_by_tacho("consent_missing", "no remote_commands consent of the requester is in force"),
    ]);
}

#[test]
fn a_command_for_a_suspended_vehicle_is_rejected() {
    given(Some(VehicleStatus::Suspended), Some(3)).given_no_previous_events().when(request()).then_expect_events(vec![
        requested(Some(3), false),
        rejected_by_tacho("vehicle_not_active", "the vehicle is suspended"),
    ]);
}

#[test]
fn a_rejected_command_knows_why_and_who_refused_it() {
    use cqrs_es::Aggregate;
    let mut command = Command::default();
    command.apply(requested(None, false));
    command.apply(rejected_by_tacho("consent_missing", "no consent"));
    assert_eq!(command.rejection, Some(Rejection::ConsentMissing));
    let by_vehicle = Rejection::of(RejectedBy::Vehicle, "consent_missing");
    assert_eq!(by_vehicle, Rejection::ByVehicle("consent_missing".into()), "a vehicle's code is its own");
    assert_eq!((by_vehicle.code(), by_vehicle.by()), ("consent_missing", RejectedBy::Vehicle));
    let inactive = Rejection::of(RejectedBy::Tacho, Rejection::VEHICLE_NOT_ACTIVE);
    assert_eq!((inactive.code(), inactive.by()), ("vehicle_not_active", RejectedBy::Tacho));
}

#[test]
fn a_command_for_an_unregistered_vehicle_is_refused_unrecorded() {
    given(None, None).given_no_previous_events().when(request()).then_expect_error(CommandError::VehicleNotFound);
}

#[test]
fn an_unknown_command_name_is_refused() {
    ready()
        .given_no_previous_events()
        .when(request_named("self_destruct", json!(null), false))
        .then_expect_error(CommandError::UnknownCommand("self_destruct".into()));
}

#[test]
fn a_climate_temperature_out_of_range_is_refused() {
    let result = ready()
        .given_no_previous_events()
        .when(request_named("set_climate", json!({"temperature_c": 40, "on": true}), false))
        .inspect_result();
    assert!(matches!(result, Err(CommandError::InvalidParameters(_))));
}

#[test]
fn a_timeout_beyond_an_hour_is_refused() {
    let CommandCommand::Request(mut r) = request() else { unreachable!("request() builds a Request") };
    r.timeout_s = 3601;
    let result = ready().given_no_previous_events().when(CommandCommand::Request(r)).inspect_result();
    assert!(matches!(result, Err(CommandError::InvalidParameters(_))));
}

#[test]
fn requesting_the_same_command_id_twice_is_refused() {
    ready().given(vec![requested(Some(3), false)]).when(request()).then_expect_error(CommandError::AlreadyRequested);
}

#[test]
fn a_requested_command_becomes_dispatched_on_puback() {
    ready()
        .given(vec![requested(Some(3), false)])
        .when(CommandCommand::MarkDispatched { at: at(1) })
        .then_expect_events(vec![CommandEvent::CommandDispatched { at: at(1) }]);
}

#[test]
fn a_second_puback_after_a_republish_adds_nothing() {
    ready().given(dispatched()).when(CommandCommand::MarkDispatched { at: at(5) }).then_expect_events(vec![]);
}

#[test]
fn an_offline_vehicle_queues_a_store_and_forward_command() {
    ready()
        .given(vec![requested(Some(3), true)])
        .when(CommandCommand::Queue { at: at(1) })
        .then_expect_events(vec![CommandEvent::CommandQueued { at: at(1) }]);
}

#[test]
fn an_offline_vehicle_fails_a_command_without_store_and_forward() {
    ready()
        .given(vec![requested(Some(3), false)])
        .when(CommandCommand::Queue { at: at(1) })
        .then_expect_error(CommandError::InvalidTransition { from: "requested", action: "queued" });
    let result = ready()
        .given(vec![requested(Some(3), false)])
        .when(CommandCommand::FailOffline { at: at(1) })
        .inspect_result()
        .expect("fail offline is allowed");
    assert!(matches!(&result[..], [CommandEvent::CommandFailed { code, .. }] if code == "vehicle_offline"));
}

#[test]
fn a_queued_command_is_dispatched_when_the_vehicle_comes_online() {
    ready()
        .given(vec![requested(Some(3), true), CommandEvent::CommandQueued { at: at(1) }])
        .when(CommandCommand::MarkDispatched { at: at(60) })
        .then_expect_events(vec![CommandEvent::CommandDispatched { at: at(60) }]);
}

#[test]
fn a_queued_command_expires_only_after_its_ttl() {
    let queued = vec![requested(Some(3), true), CommandEvent::CommandQueued { at: at(1) }];
    ready()
        .given(queued.clone())
        .when(CommandCommand::Expire { at: at(3599) })
        .then_expect_error(CommandError::DeadlineNotReached);
    ready()
        .given(queued)
        .when(CommandCommand::Expire { at: at(3600) })
        .then_expect_events(vec![CommandEvent::CommandExpired { at: at(3600) }]);
}

#[test]
fn the_folded_command_keeps_what_the_dispatcher_publishes() {
    let mut command = Command::default();
    cqrs_es::Aggregate::apply(&mut command, requested(Some(3), false));
    assert_eq!(command.params, json!({}));
    assert_eq!(command.consent_version, Some(3));
    assert_eq!(command.name, "lock_doors");
    assert_eq!(command.deadline(), Some(at(30)));
}
