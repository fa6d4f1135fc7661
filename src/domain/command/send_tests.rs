//! Given/when/then tests of what is decided when a command is actually published: the last checks,
//! the broker's answer, and what a Last Will or a cancel may still do then.

use super::tests::{at, dispatched, given, ready, requested};
use super::*;
use crate::domain::vehicle::VehicleStatus;

fn release(seconds: i64) -> CommandCommand {
    CommandCommand::Release { at: at(seconds) }
}

fn released() -> Vec<CommandEvent> {
    vec![requested(Some(3), false), CommandEvent::CommandReleased { at: at(1) }]
}

#[test]
fn a_command_still_allowed_is_released_just_before_it_is_published() {
    ready().given(vec![requested(Some(3), false)]).when(release(1)).then_expect_events(released()[1..].to_vec());
}

#[test]
fn a_command_whose_consent_was_revoked_or_ran_out_while_it_waited_is_rejected_instead() {
    given(Some(VehicleStatus::Active), None).given(vec![requested(Some(3), true)]).when(release(5)).then_expect_events(
        vec![CommandEvent::CommandRejected {
            by: RejectedBy::Tacho,
            code: Rejection::CONSENT_MISSING.into(),
            message: Some("the requester's remote_commands consent is no longer in force".into()),
            vehicle_ts: None,
            at: at(5),
        }],
    );
}

#[test]
fn a_command_whose_vehicle_was_suspended_while_it_waited_is_rejected_instead() {
    given(Some(VehicleStatus::Suspended), Some(3))
        .given(vec![requested(Some(3), true)])
        .when(release(5))
        .then_expect_events(vec![CommandEvent::CommandRejected {
            by: RejectedBy::Tacho,
            code: Rejection::VEHICLE_NOT_ACTIVE.into(),
            message: Some("the vehicle is no longer active".into()),
            vehicle_ts: None,
            at: at(5),
        }]);
}

#[test]
fn a_queued_command_past_its_ttl_expires_instead_of_going_out() {
    let queued = vec![requested(Some(3), true), CommandEvent::CommandQueued { at: at(1) }];
    ready().given(queued).when(release(3600)).then_expect_events(vec![CommandEvent::CommandExpired { at: at(3600) }]);
}

#[test]
fn a_requested_command_past_its_deadline_times_out_instead_of_going_out() {
    ready()
        .given(vec![requested(Some(3), false)])
        .when(release(30))
        .then_expect_events(vec![CommandEvent::CommandTimedOut { at: at(30) }]);
}

#[test]
fn releasing_again_after_a_crash_adds_nothing_and_a_dispatched_command_is_not_released() {
    ready().given(released()).when(release(2)).then_expect_events(vec![]);
    ready()
        .given(dispatched())
        .when(release(2))
        .then_expect_error(CommandError::InvalidTransition { from: "dispatched", action: "released" });
}

#[test]
fn a_released_command_can_no_longer_be_canceled() {
    ready()
        .given(released())
        .when(CommandCommand::Cancel { by: "alice".into(), at: at(2) })
        .then_expect_error(CommandError::NotCancelable(super::aggregate::RELEASED));
}

#[test]
fn a_publish_the_broker_refuses_fails_that_command_with_the_brokers_reason() {
    let refused = CommandCommand::FailUndelivered {
        undelivered: Undelivered::PublishRefused,
        reason: "NotAuthorized".into(),
        at: at(2),
    };
    ready().given(released()).when(refused).then_expect_events(vec![CommandEvent::CommandFailed {
        code: "publish_refused".into(),
        message: Some("NotAuthorized".into()),
        vehicle_ts: None,
        at: at(2),
    }]);
}

#[test]
fn a_publish_nobody_subscribed_to_queues_a_store_and_forward_command_and_fails_the_others() {
    let unreachable = || CommandCommand::FailUndelivered {
        undelivered: Undelivered::VehicleUnreachable,
        reason: "none".into(),
        at: at(2),
    };
    let store_and_forward = vec![requested(Some(3), true), CommandEvent::CommandReleased { at: at(1) }];
    ready()
        .given(store_and_forward)
        .when(unreachable())
        .then_expect_events(vec![CommandEvent::CommandQueued { at: at(2) }]);
    ready().given(released()).when(unreachable()).then_expect_events(vec![CommandEvent::CommandFailed {
        code: "vehicle_unreachable".into(),
        message: Some("none".into()),
        vehicle_ts: None,
        at: at(2),
    }]);
}

#[test]
fn a_store_and_forward_command_queued_again_is_cancelable_again() {
    let queued_again = vec![
        requested(Some(3), true),
        CommandEvent::CommandReleased { at: at(1) },
        CommandEvent::CommandQueued { at: at(2) },
    ];
    ready()
        .given(queued_again)
        .when(CommandCommand::Cancel { by: "alice".into(), at: at(3) })
        .then_expect_events(vec![CommandEvent::CommandCanceled { by: "alice".into(), at: at(3) }]);
}

#[test]
fn a_last_will_interrupts_only_what_was_dispatched_before_it() {
    // dispatched at 1: a Last Will received at 0.5 (handled late) belongs to an earlier session.
    let late = at(0) + chrono::Duration::milliseconds(500);
    ready().given(dispatched()).when(CommandCommand::Interrupt { at: late }).then_expect_events(vec![]);
    ready()
        .given(dispatched())
        .when(CommandCommand::Interrupt { at: at(4) })
        .then_expect_events(vec![CommandEvent::CommandInterrupted { at: at(4) }]);
}
