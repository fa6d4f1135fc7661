//! Given/when/then tests for every Consent rule.

use super::*;
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

type Given = TestFramework<Consent>;
const VIN: &str = "1HGCM82633A004352";

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date")
}

fn remote() -> Purpose {
    Purpose::parse("remote_commands").expect("known purpose")
}

fn grant(expires_at: Option<DateTime<Utc>>) -> ConsentCommand {
    ConsentCommand::Grant {
        vin: VIN.into(),
        subject: "alice".into(),
        purpose: remote(),
        legal_basis: "consent".into(),
        expires_at,
        granted_by: "alice".into(),
        at: at(),
    }
}

fn granted(version: u32, expires_at: Option<DateTime<Utc>>) -> ConsentEvent {
    ConsentEvent::ConsentGranted {
        vin: VIN.into(),
        subject: "alice".into(),
        purpose: remote(),
        version,
        legal_basis: "consent".into(),
        expires_at,
        granted_by: "alice".into(),
        at: at(),
    }
}

#[test]
fn a_consent_is_granted_with_version_one() {
    Given::with(()).given_no_previous_events().when(grant(None)).then_expect_events(vec![granted(1, None)]);
}

#[test]
fn granting_the_same_terms_again_changes_nothing() {
    Given::with(()).given(vec![granted(1, None)]).when(grant(None)).then_expect_events(vec![]);
}

#[test]
fn granting_new_terms_bumps_the_version() {
    let end = at() + Duration::days(30);
    Given::with(())
        .given(vec![granted(1, None)])
        .when(grant(Some(end)))
        .then_expect_events(vec![granted(2, Some(end))]);
}

#[test]
fn a_grant_that_already_expired_is_refused() {
    Given::with(())
        .given_no_previous_events()
        .when(grant(Some(at() - Duration::seconds(1))))
        .then_expect_error(ConsentError::AlreadyExpired);
}

#[test]
fn a_granted_consent_is_revoked_with_a_new_version() {
    Given::with(())
        .given(vec![granted(1, None)])
        .when(ConsentCommand::Revoke { subject: "alice".into(), purpose: remote(), at: at() })
        .then_expect_events(vec![ConsentEvent::ConsentRevoked {
            subject: "alice".into(),
            purpose: remote(),
            version: 2,
            at: at(),
        }]);
}

#[test]
fn revoking_a_consent_never_granted_changes_nothing() {
    Given::with(())
        .given_no_previous_events()
        .when(ConsentCommand::Revoke { subject: "alice".into(), purpose: remote(), at: at() })
        .then_expect_events(vec![]);
}

#[test]
fn unknown_purposes_are_refused_and_partners_are_allowed() {
    assert_eq!(Purpose::parse("marketing"), Err(ConsentError::UnknownPurpose("marketing".into())));
    assert!(Purpose::parse("data_sharing:").is_err());
    assert!(Purpose::parse("data_sharing:acme-insurance").is_ok());
}

#[test]
fn a_consent_allows_only_its_subject_until_it_expires() {
    let end = at() + Duration::hours(1);
    let mut consent = Consent::default();
    cqrs_es::Aggregate::apply(&mut consent, granted(1, Some(end)));
    assert_eq!(consent.allows("alice", "remote_commands", at()), Some(1));
    assert_eq!(consent.allows("bob", "remote_commands", at()), None);
    assert_eq!(consent.allows("alice", "location", at()), None);
    assert_eq!(consent.allows("alice", "remote_commands", end), None);
}

#[test]
fn a_grant_without_a_subject_or_legal_basis_is_refused() {
    let ConsentCommand::Grant { vin, purpose, expires_at, at, .. } = grant(None) else { unreachable!() };
    let no_subject = ConsentCommand::Grant {
        vin: vin.clone(),
        subject: " ".into(),
        purpose: purpose.clone(),
        legal_basis: "consent".into(),
        expires_at,
        granted_by: "alice".into(),
        at,
    };
    assert!(matches!(
        Given::with(()).given_no_previous_events().when(no_subject).inspect_result(),
        Err(ConsentError::Invalid(_))
    ));
    let no_basis = ConsentCommand::Grant {
        vin,
        subject: "alice".into(),
        purpose,
        legal_basis: String::new(),
        expires_at,
        granted_by: "alice".into(),
        at,
    };
    assert!(matches!(
        Given::with(()).given_no_previous_events().when(no_basis).inspect_result(),
        Err(ConsentError::Invalid(_))
    ));
}
