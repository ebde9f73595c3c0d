//! Time as an argument: a millisecond instant type and the `Clock` that background jobs
//! read, so tests move time by hand (`ManualClock`) instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An instant as milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// Returns the instant `seconds` after the epoch.
    pub const fn from_secs(seconds: i64) -> Self {
        UnixMillis(seconds.saturating_mul(1000))
    }

    /// Returns whole seconds since the epoch (rounded down), as JWT `NumericDate`s use.
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Returns the instant `duration` later, saturating at the end of time.
    pub fn plus(self, duration: Duration) -> Self {
        UnixMillis(self.0.saturating_add(duration_millis(duration)))
    }

    /// Returns the instant `duration` earlier, saturating at the start of time.
    pub fn minus(self, duration: Duration) -> Self {
        UnixMillis(self.0.saturating_sub(duration_millis(duration)))
    }

    /// Returns the time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl std::fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Returns the current instant.
    fn now(&self) -> UnixMillis;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        UnixMillis(duration_millis(since_epoch))
    }
}

/// A clock that moves only when told to; for tests and simulations.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// Returns a clock stopped at `start`.
    pub fn new(start: UnixMillis) -> Self {
        ManualClock {
            now: Arc::new(AtomicI64::new(start.0)),
        }
    }

    /// Moves the clock forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        self.now
            .fetch_add(duration_millis(duration), Ordering::SeqCst);
    }

    /// Sets the clock to `instant`.
    pub fn set(&self, instant: UnixMillis) {
        self.now.store(instant.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.now.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_down_even_before_the_epoch() {
        assert_eq!(UnixMillis(1_999).as_secs(), 1);
        assert_eq!(UnixMillis(-1).as_secs(), -1);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(UnixMillis(10));
        assert_eq!(clock.now(), UnixMillis(10));
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), UnixMillis(2_010));
    }
}
