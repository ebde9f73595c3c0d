//! The trust bundle held in memory. Every change builds a new immutable [`BundleView`]
//! (the bundle plus its [`Verifier`]: the keys parsed once, reusing the previous view's)
//! and swaps it in, so the hot path takes a read lock only long enough to clone an `Arc`
//! and never parses a JWK.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::bundle::TrustBundle;
use tessera_common::verify::{Audiences, KeyEntry, Verifier};
use tokio::sync::watch;

use crate::config::StalePolicy;

/// One revision of the bundle, ready for validation.
#[derive(Debug)]
pub struct BundleView {
    pub bundle: TrustBundle,
    /// Every key of the bundle by kid, with its JWK parsed once.
    verifier: Verifier,
    /// Audiences accepted after the operator's narrowing.
    accepted_audiences: Vec<String>,
    /// True when the operator's audiences and the bundle's have nothing in common: every
    /// token is then refused for its audience (an empty list would mean "any").
    audiences_unsatisfiable: bool,
}

/// Whether the sidecar can validate right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// No bundle yet, from the stream or the cache file.
    NoBundle,
    /// Older than `max_staleness` under the fail-closed policy.
    Stale,
    /// Validating (possibly with a stale bundle, under the serve policy).
    Ready,
}

/// The shared bundle state: the current view, and when the issuer was last heard from.
#[derive(Debug)]
pub struct BundleState {
    view: RwLock<Option<Arc<BundleView>>>,
    /// Milliseconds since the epoch of the last message from the issuer; `i64::MIN` when
    /// never (not even in a loaded cache file).
    last_contact_ms: AtomicI64,
    /// Carries the revision of the current view; changes on every swap.
    revision_tx: watch::Sender<u64>,
    narrowed_audiences: Vec<String>,
}

// === impl BundleView ===

impl BundleView {
    /// Builds the view of `bundle`, reusing the parsed keys of `previous` whose schedule
    /// did not change.
    pub fn build(
        bundle: TrustBundle,
        previous: Option<&BundleView>,
        narrowed_audiences: &[String],
    ) -> Self {
        let verifier = Verifier::build(&bundle.keys, previous.map(|previous| &previous.verifier));
        let policy_audiences = &bundle.policy.audiences;
        let (accepted_audiences, audiences_unsatisfiable) = if narrowed_audiences.is_empty() {
            (policy_audiences.clone(), false)
        } else if policy_audiences.is_empty() {
            (narrowed_audiences.to_vec(), false)
        } else {
            let both: Vec<String> = narrowed_audiences
                .iter()
                .filter(|aud| policy_audiences.contains(aud))
                .cloned()
                .collect();
            let unsatisfiable = both.is_empty();
            if unsatisfiable {
                tracing::error!(
                    "no configured audience is accepted by the issuer; every token will be refused"
                );
            }
            (both, unsatisfiable)
        };
        BundleView {
            bundle,
            verifier,
            accepted_audiences,
            audiences_unsatisfiable,
        }
    }

    /// Returns the key `kid`, if the bundle holds it.
    pub fn key(&self, kid: &str) -> Option<&KeyEntry> {
        self.verifier.key(kid)
    }

    /// Returns the audiences accepted (none at all when the operator's narrowing and the
    /// issuer's audiences are disjoint).
    pub fn audiences(&self) -> Audiences<'_> {
        if self.audiences_unsatisfiable {
            Audiences::None
        } else {
            Audiences::from_list(&self.accepted_audiences)
        }
    }
}

// === impl BundleState ===

impl BundleState {
    /// Returns an empty state; `narrowed_audiences` restricts the bundle's audiences.
    pub fn new(narrowed_audiences: Vec<String>) -> Self {
        let (revision_tx, _) = watch::channel(0);
        BundleState {
            view: RwLock::new(None),
            last_contact_ms: AtomicI64::new(i64::MIN),
            revision_tx,
            narrowed_audiences,
        }
    }

    /// Returns the current view, if any bundle was ever received or loaded.
    pub fn view(&self) -> Option<Arc<BundleView>> {
        // A poisoned lock only means a writer panicked between swaps; the Arc inside is
        // always a complete view, so reading it is still sound.
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Returns the current bundle's revision (0 when none).
    pub fn revision(&self) -> u64 {
        self.view().map_or(0, |view| view.bundle.revision.0)
    }

    /// Replaces the whole bundle (snapshot or cache load).
    pub fn replace(&self, bundle: TrustBundle) {
        let previous = self.view();
        let view = BundleView::build(bundle, previous.as_deref(), &self.narrowed_audiences);
        self.swap(view);
    }

    /// Applies `change` to a copy of the current bundle and swaps it in when `change`
    /// returns true. Does nothing when no bundle is held.
    pub fn update(&self, change: impl FnOnce(&mut TrustBundle) -> bool) -> bool {
        let Some(previous) = self.view() else {
            return false;
        };
        let mut bundle = previous.bundle.clone();
        if !change(&mut bundle) {
            return false;
        }
        let view = BundleView::build(bundle, Some(&previous), &self.narrowed_audiences);
        self.swap(view);
        true
    }

    fn swap(&self, view: BundleView) {
        let revision = view.bundle.revision.0;
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(view));
        self.revision_tx.send_modify(|current| *current = revision);
    }

    /// Records a message from the issuer at `now`.
    pub fn touch(&self, now: UnixMillis) {
        self.last_contact_ms.fetch_max(now.0, Ordering::Relaxed);
    }

    /// Returns when the issuer was last heard from.
    pub fn last_contact(&self) -> Option<UnixMillis> {
        match self.last_contact_ms.load(Ordering::Relaxed) {
            i64::MIN => None,
            millis => Some(UnixMillis(millis)),
        }
    }

    /// Returns how long since the issuer was last heard from (`None`: never).
    pub fn staleness(&self, now: UnixMillis) -> Option<Duration> {
        self.last_contact().map(|last| now.since(last))
    }

    /// Returns whether validation can proceed at `now`.
    pub fn readiness(
        &self,
        now: UnixMillis,
        max_staleness: Duration,
        policy: StalePolicy,
    ) -> Readiness {
        if self
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return Readiness::NoBundle;
        }
        let stale = self
            .staleness(now)
            .is_none_or(|staleness| staleness > max_staleness);
        if stale && policy == StalePolicy::FailClosed {
            Readiness::Stale
        } else {
            Readiness::Ready
        }
    }

    /// Returns a receiver that sees every swap (its value is the new revision).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use tessera_common::bundle::ValidationPolicy;

    use super::*;

    fn policy(audiences: &[&str]) -> ValidationPolicy {
        ValidationPolicy::new(
            "tessera".into(),
            audiences.iter().map(|aud| (*aud).to_owned()).collect(),
            Duration::from_secs(30),
            Duration::from_secs(900),
        )
    }

    #[test]
    fn narrowing_intersects_and_flags_an_empty_intersection() {
        let narrowed = vec!["a".to_owned()];
        let view = BundleView::build(TrustBundle::empty(policy(&["a", "b"])), None, &narrowed);
        let a = ["a".to_owned()];
        assert_eq!(view.audiences(), Audiences::OneOf(&a));
        let view = BundleView::build(TrustBundle::empty(policy(&["b"])), None, &narrowed);
        assert_eq!(view.audiences(), Audiences::None);
        let view = BundleView::build(TrustBundle::empty(policy(&["b"])), None, &[]);
        assert_eq!(view.audiences(), Audiences::OneOf(&["b".to_owned()]));
    }

    #[test]
    fn readiness_needs_a_bundle_and_fresh_contact_under_fail_closed() {
        let state = BundleState::new(Vec::new());
        let max = Duration::from_secs(10);
        let now = UnixMillis(100_000);
        assert_eq!(
            state.readiness(now, max, StalePolicy::FailClosed),
            Readiness::NoBundle
        );
        state.replace(TrustBundle::empty(policy(&[])));
        assert_eq!(
            state.readiness(now, max, StalePolicy::FailClosed),
            Readiness::Stale
        );
        state.touch(UnixMillis(95_000));
        assert_eq!(
            state.readiness(now, max, StalePolicy::FailClosed),
            Readiness::Ready
        );
        let later = UnixMillis(106_000);
        assert_eq!(
            state.readiness(later, max, StalePolicy::FailClosed),
            Readiness::Stale
        );
        assert_eq!(
            state.readiness(later, max, StalePolicy::Serve),
            Readiness::Ready
        );
        assert_eq!(state.staleness(later), Some(Duration::from_secs(11)));
    }
}
