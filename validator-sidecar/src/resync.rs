//! Rate limiting of the resynchronisations an unknown `kid` may trigger: at most one per
//! kid per interval, and at most one per global interval whatever the kids, so a flood of
//! tokens with random kids cannot turn into a flood of issuer requests.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tessera_common::limits::MAX_ID_BYTES;

/// Minimum time between two resyncs for the same kid.
pub const PER_KID_INTERVAL: Duration = Duration::from_secs(5);
/// Minimum time between two resyncs, any kids.
pub const GLOBAL_INTERVAL: Duration = Duration::from_secs(2);
/// Kids remembered at most; beyond it, old entries are forgotten (the global interval
/// still bounds the resync rate).
const MAX_TRACKED_KIDS: usize = 4096;

/// Decides whether an unknown kid may trigger a resync.
#[derive(Debug)]
pub struct ResyncLimiter {
    per_kid_interval: Duration,
    global_interval: Duration,
    inner: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last_by_kid: HashMap<String, Instant>,
    last_global: Option<Instant>,
}

impl ResyncLimiter {
    /// Returns a limiter with the default intervals.
    pub fn new() -> Self {
        ResyncLimiter::with_intervals(PER_KID_INTERVAL, GLOBAL_INTERVAL)
    }

    /// Returns a limiter with the given intervals.
    pub fn with_intervals(per_kid_interval: Duration, global_interval: Duration) -> Self {
        ResyncLimiter {
            per_kid_interval,
            global_interval,
            inner: Mutex::new(LimiterState::default()),
        }
    }

    /// Returns true when an unknown `kid` seen at `now` may trigger a resync, and
    /// records it.
    pub fn allow(&self, kid: &str, now: Instant) -> bool {
        if kid.is_empty() || kid.len() > MAX_ID_BYTES {
            // Not a kid the issuer could have minted: never worth a resync.
            return false;
        }
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let recent =
            |at: &Instant, interval: Duration| now.saturating_duration_since(*at) < interval;
        if state
            .last_by_kid
            .get(kid)
            .is_some_and(|at| recent(at, self.per_kid_interval))
        {
            return false;
        }
        if state.last_by_kid.len() >= MAX_TRACKED_KIDS {
            let interval = self.per_kid_interval;
            state.last_by_kid.retain(|_, at| recent(at, interval));
            if state.last_by_kid.len() >= MAX_TRACKED_KIDS {
                state.last_by_kid.clear();
            }
        }
        state.last_by_kid.insert(kid.to_owned(), now);
        if state
            .last_global
            .is_some_and(|at| recent(&at, self.global_interval))
        {
            return false;
        }
        state.last_global = Some(now);
        true
    }
}

impl Default for ResyncLimiter {
    fn default() -> Self {
        ResyncLimiter::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_resync_per_kid_per_interval_and_one_per_global_interval() {
        let limiter = ResyncLimiter::with_intervals(Duration::from_secs(5), Duration::from_secs(1));
        let start = Instant::now();
        assert!(limiter.allow("k1", start));
        assert!(!limiter.allow("k1", start + Duration::from_secs(2)));
        // Another kid, but within the global interval.
        assert!(!limiter.allow("k2", start + Duration::from_millis(500)));
        assert!(limiter.allow("k3", start + Duration::from_millis(1_500)));
        assert!(limiter.allow("k1", start + Duration::from_secs(6)));
    }

    #[test]
    fn random_kids_are_bounded_by_the_global_interval() {
        let limiter = ResyncLimiter::new();
        let start = Instant::now();
        let n_allowed = (0..10_000u64)
            .filter(|i| limiter.allow(&format!("kid-{i}"), start + Duration::from_micros(i * 100)))
            .count();
        // 10,000 kids over one second: one resync.
        assert_eq!(n_allowed, 1);
        assert!(!limiter.allow(
            &"k".repeat(MAX_ID_BYTES + 1),
            start + Duration::from_secs(60)
        ));
    }
}
