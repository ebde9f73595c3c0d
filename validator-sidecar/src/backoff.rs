//! Reconnection delays: exponential backoff with full jitter ("Exponential Backoff And
//! Jitter", AWS Architecture Blog), so a fleet of sidecars that lost the issuer at the
//! same instant does not reconnect in lockstep.

use std::time::Duration;

/// First ceiling of the delay.
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// Largest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// Returns the ceiling of the delay before attempt `attempt` (0 for the first retry):
/// `min(cap, base · 2^attempt)`.
pub fn ceiling(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// Returns the delay before attempt `attempt`: uniform in `[0, ceiling]` ("full
/// jitter"), where `unit` is a uniform sample in `[0, 1)`.
pub fn full_jitter(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    ceiling(attempt, base, cap).mul_f64(unit.clamp(0.0, 1.0))
}

/// Returns a uniform sample in `[0, 1)` from the system's random source.
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    // The system random source does not fail on Linux once the process runs; should it,
    // the delay falls back to the midpoint of its range, still bounded by the cap.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits make every double in [0, 1) equally likely.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay schedule of one reconnecting client.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Returns a schedule with the default base and cap.
    pub fn new() -> Self {
        Backoff::with_bounds(BASE_DELAY, MAX_DELAY)
    }

    /// Returns a schedule starting at `base` and capped at `cap`.
    pub fn with_bounds(base: Duration, cap: Duration) -> Self {
        Backoff {
            attempt: 0,
            base,
            cap,
        }
    }

    /// Returns the next delay and moves one step up the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let delay = full_jitter(self.attempt, self.base, self.cap, random_unit());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Goes back to the first step (after a connection that delivered a message).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_stays_at_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        assert_eq!(ceiling(0, base, cap), Duration::from_millis(100));
        assert_eq!(ceiling(1, base, cap), Duration::from_millis(200));
        assert_eq!(ceiling(6, base, cap), Duration::from_millis(6_400));
        assert_eq!(ceiling(7, base, cap), cap);
        assert_eq!(ceiling(u32::MAX, base, cap), cap);
    }

    #[test]
    fn jittered_delays_stay_within_zero_and_the_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        assert_eq!(full_jitter(3, base, cap, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(3, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(full_jitter(40, base, cap, 0.5), Duration::from_secs(5));
        let mut backoff = Backoff::new();
        for attempt in 0..100 {
            let delay = backoff.next_delay();
            assert!(
                delay <= ceiling(attempt, BASE_DELAY, MAX_DELAY),
                "{attempt}: {delay:?}"
            );
            assert!(delay <= MAX_DELAY);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= BASE_DELAY);
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let samples: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(samples.iter().all(|unit| (0.0..1.0).contains(unit)));
        assert!(samples.iter().any(|unit| *unit != samples[0]));
    }
}
