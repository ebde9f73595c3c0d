//! Resynchronisations an unknown `kid` triggers: the rate limit (at most one per kid per
//! interval, and at most one per global interval whatever the kids, so a flood of tokens
//! with random kids cannot turn into a flood of issuer requests), and the signal that
//! wakes the subscription task with the trace context of the request that asked.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tessera_common::limits::MAX_ID_BYTES;
use tessera_common::trace_context::TraceParent;
use tokio::sync::Notify;

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

/// Wakes the subscription task for a resync. The request that asks hands over its trace
/// context, so the resubscription (and the issuer's work for it) joins that request's
/// trace: one trace from the application through the sidecar to the issuer's store.
#[derive(Debug, Default)]
pub struct ResyncSignal {
    notify: Notify,
    /// The trace context of the latest request that asked, until the subscription takes it.
    requester: Mutex<Option<TraceParent>>,
}

impl ResyncSignal {
    /// Returns a signal nobody has raised.
    pub fn new() -> Self {
        ResyncSignal::default()
    }

    /// Asks for a resync on behalf of the current span (the validation that found an
    /// unknown kid). Called at most once per [`GLOBAL_INTERVAL`], after the limiter.
    pub fn notify_one(&self) {
        if let Some(parent) = TraceParent::current() {
            *self
                .requester
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(parent);
        }
        self.notify.notify_one();
    }

    /// Resolves once a resync is asked for (at once when one was asked meanwhile).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Takes the trace context of the request that asked for the pending resync, if that
    /// request was traced.
    pub fn take_requester(&self) -> Option<TraceParent> {
        self.requester
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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

    #[tokio::test]
    async fn the_signal_wakes_the_subscription_even_when_nothing_is_traced() {
        let signal = ResyncSignal::new();
        signal.notify_one();
        tokio::time::timeout(Duration::from_secs(1), signal.notified())
            .await
            .expect("a raised signal wakes the waiter, even one that came later");
        // No OpenTelemetry layer: no trace context to hand over.
        assert!(signal.take_requester().is_none());
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
