//! Polling with a deadline instead of fixed sleeps, and the patience knob for slow machines.

use std::time::{Duration, Instant};

/// Scales a start-up or tooling deadline by `TESSERA_E2E_PATIENCE` (a positive factor,
/// default 1). Deadlines that *are* a requirement under test (for example "a delta within
/// 2 s") are never scaled.
pub fn patience(base: Duration) -> Duration {
    let factor = std::env::var("TESSERA_E2E_PATIENCE")
        .ok()
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|factor| factor.is_finite() && *factor > 0.0)
        .unwrap_or(1.0);
    base.mul_f64(factor)
}

/// Calls `probe` every `interval` until it returns `Some` or `deadline` has passed; the
/// probe always runs at least once, and once more at the deadline.
pub fn poll_until<T>(
    deadline: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        std::thread::sleep(interval.min(end - now));
    }
}
