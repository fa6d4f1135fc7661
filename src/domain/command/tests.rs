//! Given/when/then tests for every Command transition and refusal.

use super::*;
use crate::domain::vehicle::VehicleStatus;
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

const VIN: &str = "1HGCM82633A004352";
const OTHER_VIN: &str = "WVWZZZ1JZXW000001";

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

fn given(vehicle: Option<VehicleStatus>, consent: Option<u32>) -> TestFramework<Command> {
    TestFramework::with(Arc::new(Fake { vehicle, consent }) as CommandServices)
}

fn ready() -> TestFramework<Command> {
    given(Some(VehicleStatus::Active), Some(3))
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date") + Duration::seconds(seconds)
}

fn id() -> Uuid {
    Uuid::from_u128(7)
}

fn request_named(name: &str, params: serde_json::Value, store_and_forward: bool) -> CommandCommand {
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

fn request() -> CommandCommand {
    request_named("lock_doors", json!(null), false)
}

fn requested(consent_version: Option<u32>, store_and_forward: bool) -> CommandEvent {
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

fn dispatched() -> Vec<CommandEvent> {
    vec![requested(Some(3), false), CommandEvent::CommandDispatched { at: at(1) }]
}

fn accepted() -> Vec<CommandEvent> {
    let mut events = dispatched();
    events.push(CommandEvent::CommandAccepted { vehicle_ts: None, at: at(2) });
    events
}

fn answer(status: AnswerStatus, seconds: i64) -> CommandCommand {
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

fn rejected_by_tacho(code: &str, message: &str) -> CommandEvent {
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
fn the_vehicle_accepts_then_reports_progress_then_succeeds() {
    ready()
        .given(dispatched())
        .when(answer(AnswerStatus::Accepted, 2))
        .then_expect_events(vec![CommandEvent::CommandAccepted { vehicle_ts: None, at: at(2) }]);
    ready()
        .given(accepted())
        .when(answer(AnswerStatus::InProgress, 3))
        .then_expect_events(vec![CommandEvent::CommandInProgress { message: None, vehicle_ts: None, at: at(3) }]);
    let CommandCommand::RecordAnswer(mut done) = answer(AnswerStatus::Succeeded, 4) else { unreachable!() };
    done.result = Some(json!({"locked": true}));
    ready().given(accepted()).when(CommandCommand::RecordAnswer(done)).then_expect_events(vec![
        CommandEvent::CommandSucceeded { result: Some(json!({"locked": true})), vehicle_ts: None, at: at(4) },
    ]);
}

#[test]
fn the_vehicle_fails_with_its_code() {
    let CommandCommand::RecordAnswer(mut failed) = answer(AnswerStatus::Failed, 4) else { unreachable!() };
    failed.code = Some("door_ajar".into());
    ready().given(accepted()).when(CommandCommand::RecordAnswer(failed)).then_expect_events(vec![
        CommandEvent::CommandFailed { code: "door_ajar".into(), message: None, vehicle_ts: None, at: at(4) },
    ]);
}

#[test]
fn the_vehicle_rejects_a_dispatched_command() {
    ready().given(dispatched()).when(answer(AnswerStatus::Rejected, 2)).then_expect_events(vec![
        CommandEvent::CommandRejected {
            by: RejectedBy::Vehicle,
            code: "rejected_by_vehicle".into(),
            message: None,
            vehicle_ts: None,
            at: at(2),
        },
    ]);
}

#[test]
fn a_duplicate_vehicle_status_adds_no_event() {
    ready().given(accepted()).when(answer(AnswerStatus::Accepted, 3)).then_expect_events(vec![]);
}

#[test]
fn a_stale_accepted_after_progress_adds_no_event() {
    let mut events = accepted();
    events.push(CommandEvent::CommandInProgress { message: None, vehicle_ts: None, at: at(3) });
    ready().given(events).when(answer(AnswerStatus::Accepted, 4)).then_expect_events(vec![]);
}

#[test]
fn a_final_answer_after_a_missing_accepted_is_still_taken() {
    ready()
        .given(dispatched())
        .when(answer(AnswerStatus::Succeeded, 3))
        .then_expect_events(vec![CommandEvent::CommandSucceeded { result: None, vehicle_ts: None, at: at(3) }]);
}

#[test]
fn an_answer_that_overtakes_the_puback_is_taken() {
    ready()
        .given(vec![requested(Some(3), false)])
        .when(answer(AnswerStatus::Accepted, 1))
        .then_expect_events(vec![CommandEvent::CommandAccepted { vehicle_ts: None, at: at(1) }]);
}

#[test]
fn a_repeated_final_answer_adds_no_event() {
    let mut events = accepted();
    events.push(CommandEvent::CommandSucceeded { result: None, vehicle_ts: None, at: at(4) });
    ready().given(events).when(answer(AnswerStatus::Succeeded, 5)).then_expect_events(vec![]);
}

#[test]
fn an_answer_on_another_vehicles_topic_is_refused() {
    let CommandCommand::RecordAnswer(mut a) = answer(AnswerStatus::Accepted, 2) else { unreachable!() };
    a.topic_vin = OTHER_VIN.into();
    ready()
        .given(dispatched())
        .when(CommandCommand::RecordAnswer(a))
        .then_expect_error(CommandError::WrongVehicle { vin: VIN.into(), topic_vin: OTHER_VIN.into() });
}

#[test]
fn a_command_times_out_only_after_its_deadline() {
    ready()
        .given(accepted())
        .when(CommandCommand::TimeOut { at: at(30) })
        .then_expect_error(CommandError::DeadlineNotReached);
    ready()
        .given(accepted())
        .when(CommandCommand::TimeOut { at: at(31) })
        .then_expect_events(vec![CommandEvent::CommandTimedOut { at: at(31) }]);
}

#[test]
fn a_final_answer_after_a_timeout_is_recorded_not_applied() {
    let mut events = accepted();
    events.push(CommandEvent::CommandTimedOut { at: at(31) });
    let late = CommandEvent::LateAnswerRecorded {
        status: AnswerStatus::Succeeded,
        code: None,
        message: None,
        result: None,
        vehicle_ts: None,
        at: at(40),
    };
    ready().given(events.clone()).when(answer(AnswerStatus::Succeeded, 40)).then_expect_events(vec![late.clone()]);
    events.push(late);
    ready().given(events).when(answer(AnswerStatus::Succeeded, 41)).then_expect_events(vec![]);
}

#[test]
fn the_last_will_interrupts_an_in_flight_command() {
    ready()
        .given(accepted())
        .when(CommandCommand::Interrupt { at: at(5) })
        .then_expect_events(vec![CommandEvent::CommandInterrupted { at: at(5) }]);
    ready()
        .given(vec![requested(Some(3), true)])
        .when(CommandCommand::Interrupt { at: at(5) })
        .then_expect_events(vec![]);
}

#[test]
fn a_dispatched_command_can_be_canceled() {
    ready()
        .given(dispatched())
        .when(CommandCommand::Cancel { by: "alice".into(), at: at(2) })
        .then_expect_events(vec![CommandEvent::CommandCanceled { by: "alice".into(), at: at(2) }]);
}

#[test]
fn cancel_after_accept_is_refused() {
    ready()
        .given(accepted())
        .when(CommandCommand::Cancel { by: "alice".into(), at: at(3) })
        .then_expect_error(CommandError::NotCancelable("accepted"));
}

#[test]
fn commands_on_an_unknown_command_id_are_refused() {
    ready()
        .given_no_previous_events()
        .when(CommandCommand::Cancel { by: "alice".into(), at: at(3) })
        .then_expect_error(CommandError::NotFound);
}

#[test]
fn a_queued_command_can_be_canceled_and_canceling_twice_adds_nothing() {
    let queued = vec![requested(Some(3), true), CommandEvent::CommandQueued { at: at(1) }];
    ready()
        .given(queued.clone())
        .when(CommandCommand::Cancel { by: "alice".into(), at: at(2) })
        .then_expect_events(vec![CommandEvent::CommandCanceled { by: "alice".into(), at: at(2) }]);
    let mut canceled = queued;
    canceled.push(CommandEvent::CommandCanceled { by: "alice".into(), at: at(2) });
    ready().given(canceled).when(CommandCommand::Cancel { by: "alice".into(), at: at(3) }).then_expect_events(vec![]);
}

#[test]
fn a_finished_command_cannot_be_canceled() {
    let mut done = accepted();
    done.push(CommandEvent::CommandSucceeded { result: None, vehicle_ts: None, at: at(4) });
    ready()
        .given(done)
        .when(CommandCommand::Cancel { by: "alice".into(), at: at(5) })
        .then_expect_error(CommandError::NotCancelable("succeeded"));
}

#[test]
fn a_requested_command_never_published_times_out_from_its_request_time() {
    ready()
        .given(vec![requested(Some(3), false)])
        .when(CommandCommand::TimeOut { at: at(30) })
        .then_expect_events(vec![CommandEvent::CommandTimedOut { at: at(30) }]);
}

#[test]
fn a_queued_command_does_not_time_out_it_expires() {
    ready()
        .given(vec![requested(Some(3), true), CommandEvent::CommandQueued { at: at(1) }])
        .when(CommandCommand::TimeOut { at: at(100) })
        .then_expect_events(vec![]);
}

#[test]
fn a_puback_after_a_cancel_records_nothing() {
    let mut canceled = vec![requested(Some(3), false)];
    canceled.push(CommandEvent::CommandCanceled { by: "alice".into(), at: at(1) });
    ready().given(canceled).when(CommandCommand::MarkDispatched { at: at(2) }).then_expect_events(vec![]);
}

#[test]
fn fail_offline_applies_only_before_dispatch() {
    ready()
        .given(dispatched())
        .when(CommandCommand::FailOffline { at: at(2) })
        .then_expect_error(CommandError::InvalidTransition { from: "dispatched", action: "failed as offline" });
}

#[test]
fn expiry_and_interrupt_leave_other_states_alone() {
    ready().given(dispatched()).when(CommandCommand::Expire { at: at(4000) }).then_expect_events(vec![]);
    let mut done = accepted();
    done.push(CommandEvent::CommandSucceeded { result: None, vehicle_ts: None, at: at(4) });
    ready().given(done).when(CommandCommand::Interrupt { at: at(5) }).then_expect_events(vec![]);
}

#[test]
fn a_progress_report_without_accepted_is_taken() {
    ready()
        .given(dispatched())
        .when(answer(AnswerStatus::InProgress, 2))
        .then_expect_events(vec![CommandEvent::CommandInProgress { message: None, vehicle_ts: None, at: at(2) }]);
}

#[test]
fn a_non_final_answer_after_the_end_is_ignored() {
    let mut timed_out = accepted();
    timed_out.push(CommandEvent::CommandTimedOut { at: at(31) });
    ready().given(timed_out).when(answer(AnswerStatus::InProgress, 40)).then_expect_events(vec![]);
}
