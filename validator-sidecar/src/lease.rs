//! Rate-limit budget leased from the issuer for one API key (DESIGN §4, issue 10).
//!
//! The issuer charges admissions to a key's windows when it leases them, so the sidecar
//! may spend a lease on cache hits without asking again: the sum over every sidecar never
//! exceeds a limit. A lease is spendable for `valid_for` from its receipt (a relative
//! duration, so clock skew between the issuer and the sidecar cannot stretch it). When the
//! issuer grants nothing, the refusal is remembered until its `retry_after`, so a client
//! hammering an exhausted key costs no issuer call per request — and never longer, since
//! `retry_after` is where the exhausted window ends.
//!
//! Time is an argument (`now`), so the rules are tested without sleeping.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What spending one admission found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// One admission was taken from the lease.
    Admitted,
    /// The issuer refused more budget, and the refusal still holds: answer
    /// RESOURCE_EXHAUSTED with `retry-after` of this many whole seconds (at least 1).
    Exhausted { retry_after_secs: u64 },
    /// The lease is spent or past its validity: ask the issuer for more.
    NeedLease,
}

/// The lease of one key at one sidecar. The lock is held for a few comparisons only.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<LeaseState>,
    /// Held while one caller asks the issuer for more budget, so concurrent callers that
    /// found the lease empty make one issuer call between them (single flight).
    pub refill: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct LeaseState {
    remaining: u32,
    /// The lease is spendable before this instant.
    until: Instant,
    /// Set while the issuer's refusal holds.
    refused_until: Option<Instant>,
}

impl Budget {
    /// Returns the budget of a lease of `granted` admissions received at `now`, valid for
    /// `valid_for`.
    pub fn new(now: Instant, granted: u32, valid_for: Duration) -> Self {
        Budget {
            state: Mutex::new(LeaseState {
                remaining: granted,
                until: now + valid_for,
                refused_until: None,
            }),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes one admission at `now`, if the lease allows it.
    pub fn try_spend(&self, now: Instant) -> Spend {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(refused_until) = state.refused_until {
            if now < refused_until {
                return Spend::Exhausted {
                    retry_after_secs: whole_seconds(refused_until - now),
                };
            }
            state.refused_until = None;
        }
        if state.remaining > 0 && now < state.until {
            state.remaining -= 1;
            return Spend::Admitted;
        }
        Spend::NeedLease
    }

    /// Installs a new lease of `granted` admissions (at least 1) received at `now`, and
    /// takes one of them for the request that asked for it.
    pub fn grant(&self, now: Instant, granted: u32, valid_for: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.remaining = granted.saturating_sub(1);
        state.until = now + valid_for;
        state.refused_until = None;
    }

    /// Records that the issuer granted nothing at `now` and said to retry after
    /// `retry_after_secs` (taken as at least 1 s). Returns the seconds to tell the client.
    pub fn refuse(&self, now: Instant, retry_after_secs: u32) -> u64 {
        let seconds = u64::from(retry_after_secs.max(1));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.remaining = 0;
        state.refused_until = Some(now + Duration::from_secs(seconds));
        seconds
    }
}

/// Rounds `duration` up to whole seconds, at least 1 (as the issuer's `retry-after`).
fn whole_seconds(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_spent_once_per_admission_and_only_while_valid() {
        let start = Instant::now();
        let budget = Budget::new(start, 2, Duration::from_secs(10));
        assert_eq!(budget.try_spend(start), Spend::Admitted);
        assert_eq!(budget.try_spend(start), Spend::Admitted);
        assert_eq!(budget.try_spend(start), Spend::NeedLease);
        // A fresh grant spends one admission for the request that asked for it.
        budget.grant(start, 2, Duration::from_secs(10));
        assert_eq!(budget.try_spend(start), Spend::Admitted);
        assert_eq!(budget.try_spend(start), Spend::NeedLease);
        // Past its validity a lease with admissions left is not spendable.
        budget.grant(start, 50, Duration::from_secs(10));
        let later = start + Duration::from_secs(10);
        assert_eq!(budget.try_spend(later), Spend::NeedLease);
    }

    #[test]
    fn a_refusal_holds_until_retry_after_and_not_beyond() {
        let start = Instant::now();
        let budget = Budget::new(start, 0, Duration::ZERO);
        assert_eq!(budget.try_spend(start), Spend::NeedLease);
        assert_eq!(budget.refuse(start, 7), 7);
        assert_eq!(
            budget.try_spend(start + Duration::from_millis(100)),
            Spend::Exhausted {
                retry_after_secs: 7
            }
        );
        assert_eq!(
            budget.try_spend(start + Duration::from_millis(6_500)),
            Spend::Exhausted {
                retry_after_secs: 1
            }
        );
        assert_eq!(
            budget.try_spend(start + Duration::from_secs(7)),
            Spend::NeedLease
        );
        // A zero retry-after still refuses for a second rather than inviting a busy loop.
        assert_eq!(budget.refuse(start, 0), 1);
    }
}
