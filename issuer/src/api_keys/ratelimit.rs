//! Per-key rate limits over fixed UTC windows (minute, hour, day, aligned to the epoch),
//! and the pure arithmetic of a lease: how many admissions a request may be granted from
//! what the windows have already charged. Both stores and the in-memory ledger use it;
//! nothing here reads a clock or a database.
//!
//! Admissions are charged when leased, so the charges of one window never exceed its
//! limit, whoever holds them. A holder may spend a lease until the minute window it was
//! granted in ends (on the issuer's clock, sent as a relative duration), so spending may
//! run into the next window by at most one-way latency: with `H` holders (sidecars and
//! issuer replicas) of slices of at most [`RateLimits::slice`] admissions, a fixed window
//! sees at most `limit + H × slice` admissions spent, and budget stranded at holders when
//! a window ends never exceeds `H × slice` either.

use std::time::Duration;

use tessera_common::UnixMillis;

/// Admissions per minute when a key states none (the seed's default).
pub const DEFAULT_PER_MINUTE: u32 = 100;
/// Admissions per hour when a key states none.
pub const DEFAULT_PER_HOUR: u32 = 1_000;
/// Admissions per day when a key states none.
pub const DEFAULT_PER_DAY: u32 = 10_000;
/// The highest limit of any window.
pub const MAX_LIMIT: u32 = 1_000_000;
/// The most admissions one lease request may ask for (larger is INVALID_ARGUMENT).
pub const MAX_LEASE_REQUEST: u32 = 1_000;
/// The largest slice a holder is ever granted by one lease: a key allowed 20,000 a minute
/// or more leases 1,000 at a time, so a sidecar validating it at tens of thousands a second
/// asks the issuer a few dozen times a second, not hundreds (with 50, the lease round trips
/// held cached validation at the sidecar to 0.38 of the empty RPC — BENCHMARKS.md).
pub const MAX_SLICE: u32 = MAX_LEASE_REQUEST;

/// A fixed UTC window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    Minute,
    Hour,
    Day,
}

impl Window {
    /// Every window, in the order counters are kept.
    pub const ALL: [Window; 3] = [Window::Minute, Window::Hour, Window::Day];

    /// Returns the window's length in milliseconds.
    pub const fn millis(self) -> i64 {
        match self {
            Window::Minute => 60_000,
            Window::Hour => 3_600_000,
            Window::Day => 86_400_000,
        }
    }

    /// Returns the wire name (`exhausted_window`, the refusal message).
    pub const fn as_str(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }

    /// Returns the start of the window holding `now` (inclusive).
    pub const fn start(self, now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0 - now.0.rem_euclid(self.millis()))
    }

    /// Returns the end of the window holding `now` (exclusive: the next one's start).
    pub const fn end(self, now: UnixMillis) -> UnixMillis {
        UnixMillis(self.start(now).0.saturating_add(self.millis()))
    }

    const fn index(self) -> usize {
        match self {
            Window::Minute => 0,
            Window::Hour => 1,
            Window::Day => 2,
        }
    }
}

/// Whole seconds from `now` until `until`, rounded up and at least 1 (HTTP's
/// `Retry-After`: waiting that long is always enough).
pub fn retry_after_seconds(now: UnixMillis, until: UnixMillis) -> u32 {
    let millis = until.0.saturating_sub(now.0).max(0);
    let seconds = millis.div_euclid(1000) + i64::from(millis.rem_euclid(1000) > 0);
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
}

/// A limit of a window out of bounds; names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate_limits.{field}: at most {MAX_LIMIT}")]
pub struct LimitError {
    pub field: &'static str,
}

/// A key's limits: admissions per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub per_minute: u32,
    pub per_hour: u32,
    pub per_day: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_minute: DEFAULT_PER_MINUTE,
            per_hour: DEFAULT_PER_HOUR,
            per_day: DEFAULT_PER_DAY,
        }
    }
}

impl RateLimits {
    /// Reads limits as a request states them: 0 is the window's default, and no limit may
    /// exceed [`MAX_LIMIT`]. A limit per hour below the one per minute is allowed (the
    /// smaller simply binds).
    pub fn from_request(
        per_minute: u32,
        per_hour: u32,
        per_day: u32,
    ) -> Result<RateLimits, LimitError> {
        let pick = |value: u32, default: u32, field: &'static str| match value {
            0 => Ok(default),
            v if v > MAX_LIMIT => Err(LimitError { field }),
            v => Ok(v),
        };
        Ok(RateLimits {
            per_minute: pick(per_minute, DEFAULT_PER_MINUTE, "per_minute")?,
            per_hour: pick(per_hour, DEFAULT_PER_HOUR, "per_hour")?,
            per_day: pick(per_day, DEFAULT_PER_DAY, "per_day")?,
        })
    }

    /// Returns the limit of `window`.
    pub const fn limit(self, window: Window) -> u32 {
        match window {
            Window::Minute => self.per_minute,
            Window::Hour => self.per_hour,
            Window::Day => self.per_day,
        }
    }

    /// The most admissions a holder gets per lease: a twentieth of the minute's limit,
    /// between 1 and [`MAX_SLICE`] (100 per minute → 5). Slices of 5 % keep the bound
    /// `limit + H × slice` close to the limit; the ledger needs one store write per slice.
    pub fn slice(self) -> u32 {
        (self.per_minute / 20).clamp(1, MAX_SLICE)
    }
}

/// What the store holds for one window of a key: its start and the admissions charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    pub start: UnixMillis,
    pub used: u64,
}

/// The three windows' counters of a key, in [`Window::ALL`] order.
pub type Counters = [Counter; 3];

/// The window a lease found spent, and when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    pub window: Window,
    pub until: UnixMillis,
}

impl Exhausted {
    /// Whole seconds from `now` until the window ends (at least 1).
    pub fn retry_after_seconds(&self, now: UnixMillis) -> u32 {
        retry_after_seconds(now, self.until)
    }
}

/// What a lease granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Admissions charged to every window and handed to the holder.
    pub granted: u32,
    /// Until when they may be spent: the end of the minute window of the lease.
    pub valid_until: UnixMillis,
    /// With `granted = 0` (and something wanted): the window that refused, the one
    /// ending last when several are spent.
    pub exhausted: Option<Exhausted>,
}

impl Lease {
    /// Milliseconds the lease stays spendable after `now` (relative, so the holder's
    /// clock does not matter).
    pub fn valid_for(&self, now: UnixMillis) -> Duration {
        self.valid_until.since(now)
    }
}

/// The admissions already charged to `window` at `now`: the stored count when the
/// stored window is the current one, or a later one (a replica whose clock runs ahead
/// opened it; never reset what a faster clock started), 0 when it is an earlier one.
fn used_now(stored: Option<&Counters>, window: Window, now: UnixMillis) -> (UnixMillis, u64) {
    let start = window.start(now);
    match stored.map(|counters| counters[window.index()]) {
        Some(counter) if counter.start >= start => (counter.start, counter.used),
        _ => (start, 0),
    }
}

/// Grants `min(want, remaining of every window)` against `stored` at `now` and returns
/// the counters to store with that grant charged to all three windows.
pub fn charge(
    stored: Option<&Counters>,
    limits: RateLimits,
    want: u32,
    now: UnixMillis,
) -> (Counters, Lease) {
    let current = Window::ALL.map(|window| used_now(stored, window, now));
    let granted = Window::ALL
        .iter()
        .zip(current.iter())
        .map(|(window, (_, used))| u64::from(limits.limit(*window)).saturating_sub(*used))
        .fold(u64::from(want), u64::min);
    let counters = current.map(|(start, used)| Counter {
        start,
        used: used + granted,
    });
    let granted = u32::try_from(granted).unwrap_or(want);
    (counters, outcome(&counters, limits, want, granted, now))
}

/// Returns the lease a grant of `granted` (of `want`) makes, given the counters after it.
/// Shared by the backend that charges in SQL, so both name the exhausted window alike.
pub fn outcome(
    after: &Counters,
    limits: RateLimits,
    want: u32,
    granted: u32,
    now: UnixMillis,
) -> Lease {
    let exhausted = (granted == 0 && want > 0)
        .then(|| {
            Window::ALL
                .into_iter()
                .filter(|window| after[window.index()].used >= u64::from(limits.limit(*window)))
                .map(|window| Exhausted {
                    window,
                    until: UnixMillis(after[window.index()].start.0 + window.millis()),
                })
                .max_by_key(|exhausted| exhausted.until)
        })
        .flatten();
    Lease {
        granted,
        valid_until: Window::Minute.end(now),
        exhausted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_040_000; // 2023-11-14T22:14:00Z, a minute boundary
    const fn limits(per_minute: u32, per_hour: u32, per_day: u32) -> RateLimits {
        RateLimits {
            per_minute,
            per_hour,
            per_day,
        }
    }

    #[test]
    fn windows_are_aligned_to_the_epoch_and_a_boundary_opens_the_next_one() {
        assert_eq!(T0 % 60_000, 0);
        let at = UnixMillis(T0);
        assert_eq!(Window::Minute.start(at), at);
        assert_eq!(Window::Minute.end(at), UnixMillis(T0 + 60_000));
        let before = UnixMillis(T0 - 1);
        assert_eq!(Window::Minute.start(before), UnixMillis(T0 - 60_000));
        assert_eq!(Window::Minute.end(before), at);
        let day = Window::Day.start(at);
        assert_eq!(day.0 % 86_400_000, 0);
        assert!(day <= at && at < Window::Day.end(at));
        assert_eq!(Window::Day.end(at).0 - day.0, 86_400_000);
        assert_eq!(Window::Hour.start(UnixMillis(-1)), UnixMillis(-3_600_000));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        let at = UnixMillis(T0);
        assert_eq!(retry_after_seconds(at, at), 1);
        assert_eq!(retry_after_seconds(at, UnixMillis(T0 + 1)), 1);
        assert_eq!(retry_after_seconds(at, UnixMillis(T0 + 1_000)), 1);
        assert_eq!(retry_after_seconds(at, UnixMillis(T0 + 1_001)), 2);
        assert_eq!(retry_after_seconds(at, UnixMillis(T0 + 60_000)), 60);
        assert_eq!(retry_after_seconds(at, UnixMillis(T0 - 5)), 1);
    }

    #[test]
    fn request_limits_take_defaults_for_zero_and_refuse_above_the_maximum() {
        assert_eq!(RateLimits::from_request(0, 0, 0), Ok(RateLimits::default()));
        assert_eq!(
            RateLimits::from_request(5, 0, MAX_LIMIT),
            Ok(limits(5, DEFAULT_PER_HOUR, MAX_LIMIT))
        );
        // An hour's limit below the minute's is allowed: the smaller binds.
        assert_eq!(
            RateLimits::from_request(500, 10, 0),
            Ok(limits(500, 10, DEFAULT_PER_DAY))
        );
        assert_eq!(
            RateLimits::from_request(0, MAX_LIMIT + 1, 0),
            Err(LimitError { field: "per_hour" })
        );
    }

    #[test]
    fn slices_are_a_twentieth_of_the_minute_between_one_and_a_thousand() {
        assert_eq!(RateLimits::default().slice(), 5);
        assert_eq!(limits(1, 1, 1).slice(), 1);
        assert_eq!(limits(39, 1, 1).slice(), 1);
        assert_eq!(limits(40, 1, 1).slice(), 2);
        assert_eq!(limits(10_000, 1, 1).slice(), 500);
        assert_eq!(limits(MAX_LIMIT, 1, 1).slice(), MAX_SLICE);
        assert_eq!(MAX_SLICE, 1_000);
    }

    #[test]
    fn a_lease_grants_what_every_window_has_left_and_charges_all_three() {
        let now = UnixMillis(T0 + 1_500);
        let (counters, lease) = charge(None, limits(10, 12, 100), 7, now);
        assert_eq!(lease.granted, 7);
        assert_eq!(lease.valid_until, UnixMillis(T0 + 60_000));
        assert_eq!(lease.valid_for(now), Duration::from_millis(58_500));
        assert!(counters.iter().all(|counter| counter.used == 7));
        // The minute has 3 left.
        let (counters, lease) = charge(Some(&counters), limits(10, 12, 100), 7, now);
        assert_eq!((lease.granted, lease.exhausted), (3, None));
        // Next minute: the minute resets, the hour has 2 left.
        let later = UnixMillis(T0 + 60_000);
        let (counters, lease) = charge(Some(&counters), limits(10, 12, 100), 7, later);
        assert_eq!(lease.granted, 2);
        assert_eq!(
            counters.map(|counter| counter.used),
            [2, 12, 12],
            "minute reset, hour and day kept"
        );
        let (_, lease) = charge(Some(&counters), limits(10, 12, 100), 1, later);
        assert_eq!(lease.granted, 0);
        let exhausted = lease.exhausted.expect("the hour is spent");
        assert_eq!(exhausted.window, Window::Hour);
        assert_eq!(exhausted.until, Window::Hour.end(later));
    }

    #[test]
    fn a_spent_minute_refuses_until_its_end_and_the_last_ending_window_is_named() {
        let now = UnixMillis(T0 + 59_999);
        let (counters, _) = charge(None, limits(2, 2, 100), 2, now);
        let (_, lease) = charge(Some(&counters), limits(2, 2, 100), 1, now);
        let exhausted = lease.exhausted.expect("spent");
        // Minute and hour are both spent: waiting for the minute would not help.
        assert_eq!(exhausted.window, Window::Hour);
        let (_, lease) = charge(Some(&counters), limits(2, 50, 100), 1, now);
        let exhausted = lease.exhausted.expect("spent");
        assert_eq!(exhausted.window, Window::Minute);
        assert_eq!(exhausted.retry_after_seconds(now), 1);
        // Exactly at the boundary the next minute has its whole limit again.
        let (_, lease) = charge(
            Some(&counters),
            limits(2, 50, 100),
            5,
            UnixMillis(T0 + 60_000),
        );
        assert_eq!(lease.granted, 2);
    }

    #[test]
    fn a_window_opened_by_a_clock_running_ahead_is_not_reset_by_a_slower_one() {
        let ahead = UnixMillis(T0 + 60_000);
        let (counters, _) = charge(None, limits(3, 100, 100), 3, ahead);
        let (_, lease) = charge(
            Some(&counters),
            limits(3, 100, 100),
            1,
            UnixMillis(T0 + 59_000),
        );
        assert_eq!(lease.granted, 0, "the newer minute's count stands");
    }

    #[test]
    fn nothing_wanted_is_nothing_granted_and_nothing_exhausted() {
        let (counters, lease) = charge(None, RateLimits::default(), 0, UnixMillis(T0));
        assert_eq!((lease.granted, lease.exhausted), (0, None));
        assert!(counters.iter().all(|counter| counter.used == 0));
    }
}
