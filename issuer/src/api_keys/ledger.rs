//! The issuer's own rate-limit budget per key (in memory, per replica). The issuer is a
//! holder like any sidecar: its validations spend admissions leased from the store in
//! slices of [`RateLimits::slice`], valid until the minute window of the lease ends, so
//! a validation costs a store write only once per slice. One lease per key is in flight
//! at a time (single flight): concurrent validations of one key wait for it instead of
//! each leasing.
//!
//! A refusal is remembered until the minute window ends (or the refusing window does, if
//! sooner), so a key hammered past its limit costs no store write per call; a change of
//! the key's limits (seen on the record each validation reads) drops the remembered
//! budget and refusal at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tessera_common::UnixMillis;

use super::ratelimit::{Exhausted, Lease, RateLimits, Window};
use crate::store::{RateLimitStore, StoreError};

/// Budgets kept before expired ones are swept (then the bound doubles with the live ones).
const SWEEP_AT: usize = 1024;

/// Admissions granted by the ledger and until when they may be spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// Admissions leased to the caller beyond its own validation's.
    pub leased: u32,
    pub valid_until: UnixMillis,
}

/// What this replica holds of one key's windows.
#[derive(Debug)]
struct Budget {
    /// The limits the budget was leased under.
    limits: RateLimits,
    remaining: u32,
    /// Spendable until then (the end of the minute window of the lease).
    valid_until: UnixMillis,
    /// The store's last refusal, remembered until `valid_until`.
    refused: Option<Exhausted>,
}

impl Budget {
    fn empty(limits: RateLimits) -> Budget {
        Budget {
            limits,
            remaining: 0,
            valid_until: UnixMillis(i64::MIN),
            refused: None,
        }
    }

    /// Drops what is no longer spendable at `now` or was leased under other limits.
    fn refresh(&mut self, limits: RateLimits, now: UnixMillis) {
        if self.limits != limits || self.valid_until <= now {
            *self = Budget::empty(limits);
        }
        if self.refused.is_some_and(|refused| refused.until <= now) {
            self.refused = None;
        }
    }

    fn take_lease(&mut self, lease: &Lease, spent: u32) {
        self.valid_until = self.valid_until.max(lease.valid_until);
        self.remaining += lease.granted.saturating_sub(spent);
        self.refused = lease.exhausted;
    }
}

/// The per-replica ledger.
pub struct Ledger {
    store: Arc<dyn RateLimitStore>,
    budgets: Mutex<Budgets>,
}

struct Budgets {
    by_key: HashMap<String, Arc<tokio::sync::Mutex<Budget>>>,
    sweep_at: usize,
}

impl Ledger {
    pub fn new(store: Arc<dyn RateLimitStore>) -> Ledger {
        Ledger {
            store,
            budgets: Mutex::new(Budgets {
                by_key: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }

    /// Admits one validation of `key_id` and, with `lease > 0`, leases up to that many
    /// more admissions to the caller (the caller caps `lease` at the slice). `Err` names
    /// the exhausted window when not even the validation's own admission is left.
    pub async fn admit(
        &self,
        key_id: &str,
        limits: RateLimits,
        lease: u32,
        now: UnixMillis,
    ) -> Result<Result<Granted, Exhausted>, StoreError> {
        let budget = self.budget(key_id, now);
        let mut budget = budget.lock().await;
        budget.refresh(limits, now);
        let need = lease.saturating_add(1);
        if budget.remaining >= need {
            budget.remaining -= need;
            return Ok(Ok(Granted {
                leased: lease,
                valid_until: budget.valid_until,
            }));
        }
        if let Some(refused) = budget.refused
            && budget.remaining == 0
        {
            return Ok(Err(refused));
        }
        // What this replica holds does not cover the call: lease from the store — a
        // slice for this replica's own later validations, or exactly what a caller
        // asking for a lease needs (its share goes straight to it).
        let want = if lease == 0 { limits.slice() } else { need };
        let leased = self.store.lease(key_id, limits, want, now).await?;
        if lease == 0 {
            budget.take_lease(&leased, 0);
            if budget.remaining == 0 {
                return Ok(Err(refused_by(&leased, now)));
            }
            budget.remaining -= 1;
            return Ok(Ok(Granted {
                leased: 0,
                valid_until: budget.valid_until,
            }));
        }
        // Remembered like a slice's refusal: until the minute of the lease ends.
        budget.refused = leased.exhausted;
        budget.valid_until = budget.valid_until.max(leased.valid_until);
        if leased.granted > 0 {
            return Ok(Ok(Granted {
                leased: leased.granted - 1,
                valid_until: leased.valid_until,
            }));
        }
        // The store has nothing left; the validation itself may still spend what this
        // replica holds.
        if budget.remaining > 0 {
            budget.remaining -= 1;
            return Ok(Ok(Granted {
                leased: 0,
                valid_until: budget.valid_until,
            }));
        }
        Ok(Err(refused_by(&leased, now)))
    }

    /// Returns the budget of `key_id`, made empty if new; sweeps budgets no longer
    /// spendable when the map has grown past its bound.
    fn budget(&self, key_id: &str, now: UnixMillis) -> Arc<tokio::sync::Mutex<Budget>> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = budgets.by_key.get(key_id) {
            return Arc::clone(budget);
        }
        if budgets.by_key.len() >= budgets.sweep_at {
            // A budget in use (locked) is kept; an idle one only while spendable.
            budgets.by_key.retain(|_, budget| {
                budget
                    .try_lock()
                    .map_or(true, |budget| budget.valid_until > now)
            });
            budgets.sweep_at = (budgets.by_key.len() * 2).max(SWEEP_AT);
        }
        let budget = Arc::new(tokio::sync::Mutex::new(
            Budget::empty(RateLimits::default()),
        ));
        budgets
            .by_key
            .insert(key_id.to_owned(), Arc::clone(&budget));
        budget
    }
}

/// The refusal a lease that granted nothing means (the minute, should the store not name
/// a window — it always does when something was wanted).
fn refused_by(lease: &Lease, now: UnixMillis) -> Exhausted {
    lease.exhausted.unwrap_or(Exhausted {
        window: Window::Minute,
        until: Window::Minute.end(now),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::api_keys::ratelimit::{Counters, charge};

    /// A store of one key's counters that counts its leases.
    #[derive(Default)]
    struct CountingStore {
        counters: Mutex<Option<Counters>>,
        leases: AtomicU32,
    }

    #[async_trait]
    impl RateLimitStore for CountingStore {
        async fn lease(
            &self,
            _key_id: &str,
            limits: RateLimits,
            want: u32,
            now: UnixMillis,
        ) -> Result<Lease, StoreError> {
            self.leases.fetch_add(1, Ordering::SeqCst);
            let mut counters = self.counters.lock().unwrap();
            let (after, lease) = charge(counters.as_ref(), limits, want, now);
            *counters = Some(after);
            Ok(lease)
        }
    }

    const T0: UnixMillis = UnixMillis(1_700_000_040_000);
    const LIMITS: RateLimits = RateLimits {
        per_minute: 100,
        per_hour: 1_000,
        per_day: 10_000,
    };

    #[tokio::test]
    async fn validations_spend_slices_and_the_101st_of_a_minute_is_refused() {
        let store = Arc::new(CountingStore::default());
        let ledger = Ledger::new(store.clone());
        for n in 0..100 {
            let admitted = ledger.admit("k", LIMITS, 0, T0).await.unwrap();
            assert!(admitted.is_ok(), "validation {n} admitted");
        }
        assert_eq!(
            store.leases.load(Ordering::SeqCst),
            20,
            "one lease per slice of 5"
        );
        let refused = ledger.admit("k", LIMITS, 0, T0).await.unwrap().unwrap_err();
        assert_eq!(refused.window, Window::Minute);
        // The refusal is remembered: no store write per refused call.
        ledger.admit("k", LIMITS, 0, T0).await.unwrap().unwrap_err();
        assert_eq!(store.leases.load(Ordering::SeqCst), 21);
        // The next minute brings the budget back.
        let next = Window::Minute.end(T0);
        assert!(ledger.admit("k", LIMITS, 0, next).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_caller_asking_for_a_lease_gets_it_with_its_own_admission() {
        let store = Arc::new(CountingStore::default());
        let ledger = Ledger::new(store.clone());
        let granted = ledger.admit("k", LIMITS, 5, T0).await.unwrap().unwrap();
        assert_eq!(granted.leased, 5);
        assert_eq!(granted.valid_until, Window::Minute.end(T0));
        let counters = store.counters.lock().unwrap().unwrap();
        assert_eq!(
            counters[0].used, 6,
            "the validation and the lease are charged"
        );
    }

    #[tokio::test]
    async fn a_refused_first_sight_is_remembered_without_another_store_write() {
        let store = Arc::new(CountingStore::default());
        let ledger = Ledger::new(store.clone());
        let tight = RateLimits {
            per_minute: 2,
            ..LIMITS
        };
        let granted = ledger.admit("k", tight, 1, T0).await.unwrap().unwrap();
        assert_eq!(granted.leased, 1);
        assert!(ledger.admit("k", tight, 1, T0).await.unwrap().is_err());
        assert!(ledger.admit("k", tight, 1, T0).await.unwrap().is_err());
        assert_eq!(store.leases.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn new_limits_drop_the_remembered_refusal() {
        let store = Arc::new(CountingStore::default());
        let ledger = Ledger::new(store.clone());
        let tight = RateLimits {
            per_minute: 1,
            ..LIMITS
        };
        assert!(ledger.admit("k", tight, 0, T0).await.unwrap().is_ok());
        assert!(ledger.admit("k", tight, 0, T0).await.unwrap().is_err());
        let wider = RateLimits {
            per_minute: 3,
            ..LIMITS
        };
        assert!(ledger.admit("k", wider, 0, T0).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn concurrent_validations_of_one_key_lease_once_per_slice() {
        let store = Arc::new(CountingStore::default());
        let ledger = Arc::new(Ledger::new(store.clone()));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let ledger = Arc::clone(&ledger);
                tokio::spawn(async move { ledger.admit("k", LIMITS, 0, T0).await })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            if task.await.unwrap().unwrap().is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 50);
        assert_eq!(store.leases.load(Ordering::SeqCst), 10);
    }
}
