//! A vehicle's connection as tacho knows it, and how each message from the vehicle moves it.
//!
//! Messages do not arrive in the order they were sent: a broker that stops publishes every Last Will,
//! and one tacho reads late (after its own restart, from a persistent session) may describe a session
//! the vehicle has long replaced. So connection messages are compared by their times, not by their
//! arrival: a vehicle sends `{"state": "online", "ts": T}` when it connects and sets
//! `{"state": "offline", "ts": T}` as its Last Will with the same `T`, the time the session began. A
//! message of a session older than the one tacho knows is stale; a Last Will of a session already
//! ended is a repeat. And any message from the vehicle (state, event, answer) received after tacho
//! learned it went offline shows that it is connected again, even when its `online` message was lost
//! (a broker that restarted without its sessions drops what vehicles send before tacho resubscribes).

use chrono::{DateTime, Utc};

/// What tacho knows of one vehicle's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Connected now.
    pub connected: bool,
    /// Vehicle time of the latest session tacho heard of (its connection messages' `ts`).
    pub session: Option<DateTime<Utc>>,
    /// Vehicle time of the latest session tacho knows ended.
    pub ended: Option<DateTime<Utc>>,
    /// When tacho received the message that last changed `connected`.
    pub changed_at: DateTime<Utc>,
}

/// What tacho heard from a vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A connection message (or the Last Will), with its vehicle time when it has one.
    Connection {
        /// `online` or `offline`.
        online: bool,
        /// Its `ts`: when the session began (or, for an `offline` the vehicle sends itself, ended).
        ts: Option<DateTime<Utc>>,
    },
    /// Any other message from the vehicle: a state report, an event, an answer.
    Message,
}

/// How a message moved the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What tacho knows now.
    pub link: Link,
    /// `Some(connected)` when the connection changed: a `ConnectionChanged` fact to record.
    pub change: Option<bool>,
    /// Why the message says nothing new, when it is stale (`stale`) or a repeat (`repeat`).
    pub ignored: Option<&'static str>,
}

impl Step {
    fn keep(link: &Link) -> Self {
        Self { link: link.clone(), change: None, ignored: None }
    }

    fn ignore(link: &Link, why: &'static str) -> Self {
        Self { link: link.clone(), change: None, ignored: Some(why) }
    }
}

/// Moves `current` (none: tacho never heard of this vehicle's connection) by `heard`, received at `at`.
pub fn observe(current: Option<&Link>, heard: Heard, at: DateTime<Utc>) -> Step {
    let Some(link) = current else {
        let (connected, ts) = match heard {
            Heard::Connection { online, ts } => (online, ts),
            Heard::Message => (true, None),
        };
        let ended = if connected { None } else { ts };
        return Step {
            link: Link { connected, session: ts, ended, changed_at: at },
            change: Some(connected),
            ignored: None,
        };
    };
    let moved = |connected: bool, session: Option<DateTime<Utc>>, ended: Option<DateTime<Utc>>| {
        let changed = connected != link.connected;
        let changed_at = if changed { at } else { link.changed_at };
        Step {
            link: Link { connected, session, ended, changed_at },
            change: changed.then_some(connected),
            ignored: None,
        }
    };
    match heard {
        Heard::Connection { ts: Some(ts), .. } if link.session.is_some_and(|known| ts < known) => {
            Step::ignore(link, "stale")
        }
        Heard::Connection { online: true, ts: Some(ts) } => match link.ended {
            // The `online` of a session that already ended (delivered again, or late).
            Some(ended) if ts <= ended => Step::ignore(link, "stale"),
            _ => moved(true, Some(ts), link.ended),
        },
        Heard::Connection { online: false, ts: Some(ts) } => match link.ended {
            Some(ended) if ts == ended => Step::ignore(link, "repeat"),
            _ => moved(false, Some(ts).max(link.session), Some(ts)),
        },
        // Without a time (a vehicle that does not follow the contract fully): arrival order.
        Heard::Connection { online, ts: None } if online == link.connected => Step::ignore(link, "repeat"),
        Heard::Connection { online, ts: None } => {
            let ended = if online { link.ended } else { link.session.or(link.ended) };
            moved(online, link.session, ended)
        }
        Heard::Message if link.connected => Step::keep(link),
        // Sent before tacho learned it went offline: says nothing of now.
        Heard::Message if at <= link.changed_at => Step::ignore(link, "stale"),
        Heard::Message => moved(true, link.session, link.ended),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).single().expect("valid date") + Duration::seconds(seconds)
    }

    fn online(ts: i64) -> Heard {
        Heard::Connection { online: true, ts: Some(t(ts)) }
    }

    fn will(ts: i64) -> Heard {
        Heard::Connection { online: false, ts: Some(t(ts)) }
    }

    /// Applies `messages` (what was heard, when received) from nothing; the changes recorded.
    fn run(messages: &[(Heard, i64)]) -> (Option<Link>, Vec<bool>) {
        let mut link: Option<Link> = None;
        let mut changes = vec![];
        for (heard, at) in messages {
            let step = observe(link.as_ref(), *heard, t(*at));
            changes.extend(step.change);
            link = Some(step.link);
        }
        (link, changes)
    }

    #[test]
    fn a_session_connects_and_its_last_will_ends_it() {
        let (link, changes) = run(&[(online(0), 1), (Heard::Message, 5), (will(0), 60)]);
        assert_eq!(changes, [true, false]);
        assert!(!link.unwrap().connected);
    }

    #[test]
    fn a_last_will_of_an_older_session_read_late_is_ignored() {
        // The broker stopped (publishing the Last Will of session 0) and tacho read it only after the
        // vehicle's new session 100 was known.
        let (link, changes) = run(&[(online(0), 1), (online(100), 101), (will(0), 102)]);
        assert_eq!(changes, [true]);
        assert!(link.unwrap().connected);
    }

    #[test]
    fn any_message_after_the_last_will_shows_the_vehicle_connected_again() {
        // The broker restarted without its sessions: the vehicle's new `online` was lost, its state
        // reports come through.
        let (link, changes) = run(&[(online(0), 1), (will(0), 50), (Heard::Message, 70)]);
        assert_eq!(changes, [true, false, true]);
        let link = link.unwrap();
        assert!(link.connected);
        assert_eq!(link.changed_at, t(70));
    }

    #[test]
    fn a_repeated_last_will_does_not_take_back_what_later_messages_showed() {
        let (link, changes) = run(&[(online(0), 1), (will(0), 50), (Heard::Message, 70), (will(0), 80)]);
        assert_eq!(changes, [true, false, true]);
        assert!(link.unwrap().connected);
    }

    #[test]
    fn the_next_session_ending_is_heard_again() {
        let (link, changes) =
            run(&[(online(0), 1), (will(0), 50), (Heard::Message, 70), (online(60), 71), (will(60), 90)]);
        assert_eq!(changes, [true, false, true, false]);
        assert!(!link.unwrap().connected);
    }

    #[test]
    fn a_message_sent_before_the_disconnect_was_heard_says_nothing_of_now() {
        let (link, changes) = run(&[(online(0), 1), (will(0), 50), (Heard::Message, 50)]);
        assert_eq!(changes, [true, false]);
        assert!(!link.unwrap().connected);
    }

    #[test]
    fn a_late_online_of_an_ended_session_is_ignored_and_repeats_record_nothing() {
        let (link, changes) = run(&[(online(0), 1), (online(0), 2), (will(0), 50), (online(0), 51)]);
        assert_eq!(changes, [true, false]);
        assert!(!link.unwrap().connected);
    }

    #[test]
    fn without_times_connection_messages_go_by_arrival() {
        let plain = |online| Heard::Connection { online, ts: None };
        let (link, changes) = run(&[(plain(true), 1), (plain(true), 2), (plain(false), 3), (plain(true), 4)]);
        assert_eq!(changes, [true, false, true]);
        assert!(link.unwrap().connected);
    }

    #[test]
    fn the_first_message_of_an_unknown_vehicle_decides() {
        assert_eq!(run(&[(Heard::Message, 1)]).1, [true]);
        assert_eq!(run(&[(will(0), 1)]).1, [false]);
    }
}
