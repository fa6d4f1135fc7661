//! Given/when/then tests of the vehicle's answers, deadlines, Last Will and cancel.

use super::tests::*;
use super::*;
use serde_json::json;

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
fn an_answer_that_overtakes_the_puback_is_taken_and_implies_the_dispatch() {
    ready().given(vec![requested(Some(3), false)]).when(answer(AnswerStatus::Accepted, 1)).then_expect_events(vec![
        CommandEvent::CommandDispatched { at: at(1) },
        CommandEvent::CommandAccepted { vehicle_ts: None, at: at(1) },
    ]);
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
fn a_dispatched_command_is_no_longer_cancelable() {
    ready()
        .given(dispatched())
        .when(CommandCommand::Cancel { by: "alice".into(), at: at(2) })
        .then_expect_error(CommandError::NotCancelable("dispatched"));
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
