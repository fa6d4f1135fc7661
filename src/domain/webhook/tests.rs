//! Given/when/then tests for every Webhook rule.

use super::*;
use crate::domain::consent::Purpose;
use crate::domain::Vin;
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use std::collections::BTreeSet;
use uuid::Uuid;

type Given = TestFramework<Webhook>;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date")
}

fn id() -> Uuid {
    Uuid::from_u128(7)
}

fn endpoint() -> Endpoint {
    Endpoint::parse("https://partner.example/hooks/tacho").expect("valid endpoint")
}

fn telemetry() -> Option<Purpose> {
    Some(Purpose::parse("data_sharing:insurer").expect("known purpose"))
}

fn create(topics: &[Topic], purpose: Option<Purpose>) -> WebhookCommand {
    WebhookCommand::Create {
        id: id(),
        principal: "insurer".into(),
        endpoint: endpoint(),
        topics: topics.iter().copied().collect(),
        vins: BTreeSet::from([Vin::parse("1HGCM82633A004352").expect("valid VIN")]),
        purpose,
        secret: "fp1".into(),
        at: at(),
    }
}

fn created() -> WebhookEvent {
    WebhookEvent::WebhookCreated {
        id: id(),
        principal: "insurer".into(),
        endpoint: endpoint(),
        topics: BTreeSet::from([Topic::VehicleEvent]),
        vins: BTreeSet::from([Vin::parse("1HGCM82633A004352").expect("valid VIN")]),
        purpose: telemetry(),
        secret: "fp1".into(),
        at: at(),
    }
}

fn paused_by(by: &str) -> WebhookEvent {
    WebhookEvent::WebhookPaused { pause: Pause::Requested { by: by.into() }, at: at() }
}

fn deleted() -> WebhookEvent {
    WebhookEvent::WebhookDeleted { by: "insurer".into(), at: at() }
}

#[test]
fn a_subscription_to_vehicle_events_under_a_purpose_is_created() {
    Given::with(())
        .given_no_previous_events()
        .when(create(&[Topic::VehicleEvent], telemetry()))
        .then_expect_events(vec![created()]);
}

#[test]
fn vehicle_data_without_a_purpose_is_refused() {
    let refused = WebhookError::Invalid("vehicle data needs a purpose the owners grant the subscriber".into());
    Given::with(()).given_no_previous_events().when(create(&[Topic::VehicleState], None)).then_expect_error(refused);
}

#[test]
fn command_notifications_need_no_purpose() {
    let mut command = create(&[Topic::Command], None);
    if let WebhookCommand::Create { vins, .. } = &mut command {
        vins.clear();
    }
    let result = Given::with(()).given_no_previous_events().when(command).inspect_result();
    assert!(matches!(result.as_deref(), Ok([WebhookEvent::WebhookCreated { purpose: None, .. }])), "{result:?}");
}

#[test]
fn remote_commands_is_not_a_purpose_for_vehicle_data() {
    let purpose = Some(Purpose::parse("remote_commands").expect("known purpose"));
    let refused = WebhookError::Invalid("remote_commands is not a purpose for vehicle data".into());
    Given::with(()).given_no_previous_events().when(create(&[Topic::VehicleEvent], purpose)).then_expect_error(refused);
}

#[test]
fn a_subscription_without_event_types_is_refused() {
    let refused = WebhookError::Invalid("event_types must name at least one type".into());
    Given::with(()).given_no_previous_events().when(create(&[], telemetry())).then_expect_error(refused);
}

#[test]
fn a_second_create_on_one_id_is_refused() {
    Given::with(())
        .given(vec![created()])
        .when(create(&[Topic::VehicleEvent], telemetry()))
        .then_expect_error(WebhookError::Exists);
}

#[test]
fn pausing_twice_records_one_pause_and_resume_ends_it() {
    let pause = WebhookCommand::Pause { pause: Pause::Requested { by: "insurer".into() }, at: at() };
    Given::with(()).given(vec![created()]).when(pause.clone()).then_expect_events(vec![paused_by("insurer")]);
    Given::with(()).given(vec![created(), paused_by("insurer")]).when(pause).then_expect_events(vec![]);
    Given::with(())
        .given(vec![created(), paused_by("insurer")])
        .when(WebhookCommand::Resume { by: "insurer".into(), at: at() })
        .then_expect_events(vec![WebhookEvent::WebhookResumed { by: "insurer".into(), at: at() }]);
    Given::with(())
        .given(vec![created()])
        .when(WebhookCommand::Resume { by: "insurer".into(), at: at() })
        .then_expect_events(vec![]);
}

#[test]
fn a_failing_endpoint_pauses_with_its_last_error() {
    let pause = Pause::Failing { failures: 12, last_error: "connect timed out".into() };
    Given::with(())
        .given(vec![created()])
        .when(WebhookCommand::Pause { pause: pause.clone(), at: at() })
        .then_expect_events(vec![WebhookEvent::WebhookPaused { pause, at: at() }]);
}

#[test]
fn a_rotation_keeps_the_previous_secret_for_its_grace_period() {
    let until = at() + Duration::hours(24);
    let rotate = WebhookCommand::RotateSecret { secret: "fp2".into(), previous_until: until, at: at() };
    Given::with(()).given(vec![created()]).when(rotate).then_expect_events(vec![WebhookEvent::WebhookSecretRotated {
        secret: "fp2".into(),
        previous_until: until,
        at: at(),
    }]);
    let mut webhook = Webhook::default();
    cqrs_es::Aggregate::apply(&mut webhook, created());
    cqrs_es::Aggregate::apply(
        &mut webhook,
        WebhookEvent::WebhookSecretRotated { secret: "fp2".into(), previous_until: until, at: at() },
    );
    assert_eq!(webhook.secret, "fp2");
    assert_eq!(webhook.previous_secret, Some(("fp1".into(), until)));
}

#[test]
fn a_rotation_to_the_same_secret_or_ending_in_the_past_is_refused() {
    let same = WebhookCommand::RotateSecret { secret: "fp1".into(), previous_until: at(), at: at() };
    Given::with(())
        .given(vec![created()])
        .when(same)
        .then_expect_error(WebhookError::Invalid("the new secret must differ from the current one".into()));
    let past =
        WebhookCommand::RotateSecret { secret: "fp2".into(), previous_until: at() - Duration::seconds(1), at: at() };
    Given::with(())
        .given(vec![created()])
        .when(past)
        .then_expect_error(WebhookError::Invalid("the grace period cannot end before the rotation".into()));
}

#[test]
fn a_deleted_subscription_takes_no_more_commands_and_deleting_again_changes_nothing() {
    Given::with(())
        .given(vec![created()])
        .when(WebhookCommand::Delete { by: "insurer".into(), at: at() })
        .then_expect_events(vec![deleted()]);
    Given::with(())
        .given(vec![created(), deleted()])
        .when(WebhookCommand::Delete { by: "insurer".into(), at: at() })
        .then_expect_events(vec![]);
    Given::with(())
        .given(vec![created(), deleted()])
        .when(WebhookCommand::Resume { by: "insurer".into(), at: at() })
        .then_expect_error(WebhookError::NotFound);
    Given::with(())
        .given_no_previous_events()
        .when(WebhookCommand::Delete { by: "insurer".into(), at: at() })
        .then_expect_error(WebhookError::NotFound);
}

#[test]
fn endpoints_must_be_https_or_loopback_http_without_credentials() {
    for ok in ["https://partner.example/hook", "http://127.0.0.1:8080/hook", "http://localhost/h", "http://[::1]:9/h"] {
        assert!(Endpoint::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://partner.example/hook",
        "http://10.0.0.1/hook",
        "ftp://partner.example/",
        "https://user:pw@partner.example/",
        "https://partner.example/#frag",
        "not a url",
        "file:///etc/passwd",
    ] {
        assert!(matches!(Endpoint::parse(bad), Err(WebhookError::InvalidEndpoint(_))), "{bad}");
    }
    let long = format!("https://partner.example/{}", "a".repeat(MAX_ENDPOINT_BYTES));
    assert!(Endpoint::parse(&long).is_err());
}

#[test]
fn event_types_are_a_closed_set_of_stable_names() {
    for topic in Topic::ALL {
        assert_eq!(Topic::parse(topic.as_str()), Ok(topic));
        assert_eq!(serde_json::to_value(topic).expect("serializes"), topic.as_str());
    }
    assert!(Topic::parse("vehicle.everything").is_err());
}

#[test]
fn a_replay_is_recorded_with_who_asked_and_a_negative_position_refused() {
    Given::with(())
        .given(vec![created()])
        .when(WebhookCommand::Replay { from_position: 12, from_time: None, by: "insurer".into(), at: at() })
        .then_expect_events(vec![WebhookEvent::WebhookReplayRequested {
            from_position: 12,
            from_time: None,
            by: "insurer".into(),
            at: at(),
        }]);
    Given::with(())
        .given(vec![created()])
        .when(WebhookCommand::Replay { from_position: -1, from_time: None, by: "insurer".into(), at: at() })
        .then_expect_error(WebhookError::Invalid("from_position must be 0 or more".into()));
    Given::with(())
        .given(vec![created(), deleted()])
        .when(WebhookCommand::Replay { from_position: 1, from_time: None, by: "insurer".into(), at: at() })
        .then_expect_error(WebhookError::NotFound);
}
