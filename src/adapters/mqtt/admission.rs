//! What a vehicle may send beyond the payload budgets of [`super::codec`]: its message ids, how
//! many signals it has, how far its clock may run ahead.

use super::codec::{self, Refused};
use crate::store::facts;
use crate::store::Db;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A vehicle-side message id, or why it is refused.
pub fn valid_msg_id(id: &str) -> Result<(), Refused> {
    match codec::valid_msg_id(id) {
        true => Ok(()),
        false => Err(Refused::new("malformed", "msg_id must be 1 to 128 printable characters")),
    }
}

/// What one vehicle may send, beyond the payload budgets of [`codec`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Signals in one state report.
    pub signals_per_report: usize,
    /// Distinct signals one vehicle may have.
    pub signals_per_vehicle: usize,
    /// How far a vehicle's clock may run ahead of tacho's.
    pub clock_skew: chrono::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { signals_per_report: 200, signals_per_vehicle: 2000, clock_skew: chrono::Duration::minutes(5) }
    }
}

impl Limits {
    /// Refuses a vehicle time further ahead of `received_at` than the allowed skew: one bad clock
    /// would otherwise pin a signal's last-known value (newest vehicle time wins) for as long.
    pub fn check_clock(&self, vehicle_ts: DateTime<Utc>, received_at: DateTime<Utc>) -> Result<(), Refused> {
        if vehicle_ts > received_at + self.clock_skew {
            return Err(Refused::new(
                "clock_skew",
                format!("vehicle time {vehicle_ts} is more than {} s ahead of tacho's", self.clock_skew.num_seconds()),
            ));
        }
        // Before the Unix epoch (a year like -5000 parses): no vehicle clock says so, and the read
        // models' time columns could not store it, which would stop them for good.
        if vehicle_ts < DateTime::UNIX_EPOCH {
            return Err(Refused::new("clock_skew", format!("vehicle time {vehicle_ts} is before 1970")));
        }
        Ok(())
    }
}

/// The distinct signals each vehicle of a batch has, against [`Limits::signals_per_vehicle`]. Counted
/// from the state read model (which may lag the log by a batch or so: the bound is that close);
/// the names are read only for a vehicle near its limit.
pub struct SignalBudget {
    counts: HashMap<String, i64>,
    names: HashMap<String, std::collections::HashSet<String>>,
    limit: usize,
}

impl SignalBudget {
    /// The budget of vehicles with `counts` signals each, at most `limit`.
    pub fn new(counts: HashMap<String, i64>, limit: usize) -> Self {
        Self { counts, names: HashMap::new(), limit }
    }

    /// Admits a report of `signals` for `vin`, or says why not.
    pub async fn admit(
        &mut self,
        db: &Db,
        vin: &str,
        signals: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Result<(), Refused>, sqlx::Error> {
        let known = self.counts.get(vin).copied().unwrap_or(0).max(0) as usize;
        if !self.names.contains_key(vin) && known + signals.len() <= self.limit {
            // Far from the limit: whatever is new fits. Count it as if all were new.
            self.counts.insert(vin.to_owned(), (known + signals.len()) as i64);
            return Ok(Ok(()));
        }
        if !self.names.contains_key(vin) {
            self.names.insert(vin.to_owned(), facts::signal_names(db, vin).await?);
        }
        let names = self.names.entry(vin.to_owned()).or_default();
        let new: Vec<&String> = signals.keys().filter(|k| !names.contains(*k)).collect();
        if names.len() + new.len() > self.limit {
            let detail =
                format!("{vin} would have {} distinct signals, at most {}", names.len() + new.len(), self.limit);
            return Ok(Err(Refused::new("too_many_signals", detail)));
        }
        names.extend(new.into_iter().cloned());
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn vehicle_time_is_refused_ahead_of_the_skew_and_before_1970() {
        let limits = Limits::default();
        let now = Utc::now();
        assert!(limits.check_clock(now + chrono::Duration::minutes(4), now).is_ok());
        assert!(limits.check_clock(DateTime::UNIX_EPOCH, now).is_ok(), "an unset clock still stores");
        assert_eq!(limits.check_clock(now + chrono::Duration::minutes(6), now).unwrap_err().reason, "clock_skew");
        let ancient = Utc.with_ymd_and_hms(-5000, 1, 1, 0, 0, 0).single().expect("a proleptic date");
        assert_eq!(limits.check_clock(ancient, now).unwrap_err().reason, "clock_skew");
        let parsed: DateTime<Utc> = serde_json::from_str("\"-5000-01-01T00:00:00Z\"").unwrap_or(ancient);
        assert!(limits.check_clock(parsed, now).is_err(), "what a payload can carry is refused too");
    }
}
