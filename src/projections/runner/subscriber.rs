//! One subscriber of the runner: what it is (a read model or a process), its progress and turn, and
//! the events it passes over because they do not decode.

use super::{Process, Projection};
use crate::metrics::Metrics;
use crate::store::log::{Checkpoint, StoredEvent, Undecodable};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

pub(super) enum Kind {
    Projection(Arc<dyn Projection>),
    Process(Arc<dyn Process>),
}

impl Kind {
    /// Whether it is a process (else a read model).
    pub(super) fn is_process(&self) -> bool {
        matches!(self, Self::Process(_))
    }

    /// The aggregate types it reads; `None` for all (an empty list).
    pub(super) fn types(&self) -> Option<&'static [&'static str]> {
        let types = match self {
            Self::Projection(p) => p.aggregate_types(),
            Self::Process(p) => p.aggregate_types(),
        };
        Some(types).filter(|t| !t.is_empty())
    }
}

pub(super) struct Subscriber {
    pub(super) kind: Kind,
    pub(super) progress: watch::Sender<Checkpoint>,
    /// One batch at a time within this instance (across instances: an advisory lock).
    pub(super) turn: tokio::sync::Mutex<()>,
    /// Positions of events that do not decode for this subscriber: reported once, then passed over.
    pub(super) passed_over: std::sync::Mutex<HashSet<i64>>,
}

impl Subscriber {
    /// The events of `events` this subscriber takes: not those it passed over before, nor rows
    /// that do not parse unless it takes them (each reported the first time it is passed over).
    pub(super) fn takes(&self, name: &str, events: Vec<StoredEvent>, metrics: &Metrics) -> Vec<StoredEvent> {
        let takes_unreadable = matches!(&self.kind, Kind::Projection(p) if p.takes_unreadable());
        let Ok(mut passed_over) = self.passed_over.lock() else { return events };
        events
            .into_iter()
            .filter(|event| {
                if passed_over.contains(&event.position) {
                    return false;
                }
                let Some(unreadable) = event.unreadable.as_ref().filter(|_| !takes_unreadable) else { return true };
                passed_over.insert(event.position);
                report(name, &event.undecodable(&unreadable.reason), metrics);
                false
            })
            .collect()
    }

    /// Whether it takes `event` as it is (not passed over, readable or taken unreadable): a batch of
    /// only such events is handed over without copying.
    pub(super) fn takes_as_is(&self, event: &StoredEvent) -> bool {
        let takes_unreadable = matches!(&self.kind, Kind::Projection(p) if p.takes_unreadable());
        (event.unreadable.is_none() || takes_unreadable)
            && self.passed_over.lock().is_ok_and(|p| !p.contains(&event.position))
    }

    /// Passes over the event `undecodable` names from now on.
    pub(super) fn pass_over(&self, name: &str, undecodable: &Undecodable, metrics: &Metrics) {
        if let Ok(mut passed_over) = self.passed_over.lock() {
            if passed_over.insert(undecodable.position) {
                report(name, undecodable, metrics);
            }
        }
    }
}

/// Says that subscriber `name` passes over an event it cannot decode: an error naming the event, a
/// `/metrics` counter. `audit verify` names it too.
fn report(name: &str, undecodable: &Undecodable, metrics: &Metrics) {
    tracing::error!(
        subscriber = name,
        aggregate_type = %undecodable.aggregate_type,
        aggregate_id = %undecodable.aggregate_id,
        sequence = undecodable.sequence,
        position = undecodable.position,
        reason = %undecodable.reason,
        "passing over an event that does not decode"
    );
    metrics.inc("tacho_events_passed_over_total", &[("subscriber", name)]);
}
