//! How many long-lived requests (server-sent event streams, long polls) are open, in all and per
//! caller: beyond a caller's share the answer is 429, beyond the total 503, so one client cannot
//! hold every connection or task.

use super::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open requests of one kind.
#[derive(Debug)]
pub struct Capacity {
    what: &'static str,
    total: usize,
    per_caller: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
    metrics: Arc<Metrics>,
}

/// One open request; its place is given back when dropped.
#[derive(Debug)]
pub struct Held {
    capacity: Arc<Capacity>,
    caller: String,
}

impl Capacity {
    /// At most `total` of `what` open, `per_caller` of them per caller.
    pub fn new(what: &'static str, total: usize, per_caller: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { what, total: total.max(1), per_caller: per_caller.max(1), open: Default::default(), metrics })
    }

    /// Takes a place for `caller`, or says why there is none.
    pub fn hold(self: &Arc<Self>, caller: &str) -> Result<Held, ApiError> {
        let Ok(mut open) = self.open.lock() else {
            return Err(ApiError::internal("capacity lock poisoned"));
        };
        let mine = open.1.get(caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            self.metrics.inc("tacho_http_refused_total", &[("full", "per_caller")]);
            let detail = format!("at most {} {} open per caller; close one first", self.per_caller, self.what);
            return Err(ApiError::new(ErrorCode::TooManyRequests, detail));
        }
        if open.0 >= self.total {
            self.metrics.inc("tacho_http_refused_total", &[("full", "total")]);
            return Err(ApiError::new(ErrorCode::Unavailable, format!("too many {} open; retry later", self.what)));
        }
        open.0 += 1;
        *open.1.entry(caller.to_owned()).or_default() += 1;
        Ok(Held { capacity: Arc::clone(self), caller: caller.to_owned() })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut open) = self.capacity.open.lock() {
            open.0 = open.0.saturating_sub(1);
            if let Some(mine) = open.1.get_mut(&self.caller) {
                *mine -= 1;
                if *mine == 0 {
                    open.1.remove(&self.caller);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_share_and_the_total_is_kept_and_places_come_back() {
        let capacity = Capacity::new("streams", 3, 2, Arc::default());
        let a1 = capacity.hold("a").unwrap();
        let _a2 = capacity.hold("a").unwrap();
        assert_eq!(capacity.hold("a").unwrap_err().code(), ErrorCode::TooManyRequests);
        let _b1 = capacity.hold("b").unwrap();
        assert_eq!(capacity.hold("c").unwrap_err().code(), ErrorCode::Unavailable);
        drop(a1);
        assert!(capacity.hold("c").is_ok());
    }
}
