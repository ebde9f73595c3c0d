//! The bundle hub: keeps the current trust bundle and a window of recent events in
//! memory, follows the store's event log (woken by local commits and, on PostgreSQL, by
//! NOTIFY from other replicas) and fans every event out to stream subscribers.
//!
//! Subscribers register with RAII (`Subscription`) and are counted; one that lags behind
//! the broadcast buffer is resynchronised with a snapshot, never silently left behind.
//!
//! Each new bundle comes with its [`Verifier`] (the published keys parsed once, reusing
//! the previous revision's), so introspection never parses a key per call.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_common::Clock;
use tessera_common::bundle::{BundleChange, BundleEvent, Revision, TrustBundle, ValidationPolicy};
use tessera_common::keys::KeySetName;
use tessera_common::revocation::RevocationEntry;
use tessera_common::verify::Verifier;
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::keys::KeyManager;
use crate::store::{Store, StoreError};

/// Events kept in memory for delta resumption.
pub const RETAINED_EVENTS: usize = 4096;
/// Broadcast buffer per hub; a subscriber further behind gets a snapshot.
const BROADCAST_CAPACITY: usize = 1024;
/// How often the pump polls the log even without a wake-up (lost NOTIFY insurance).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Returns `bundle` with only the revocation entries `visible` keeps. Keys and policy are
/// public (any JWT library can fetch the JWKS) and stay whole.
pub fn restrict(bundle: &TrustBundle, visible: impl Fn(&RevocationEntry) -> bool) -> TrustBundle {
    let revocations: Vec<RevocationEntry> = bundle
        .revocations
        .entries()
        .filter(|entry| visible(entry))
        .cloned()
        .collect();
    TrustBundle {
        revocations: revocations.into(),
        ..bundle.clone()
    }
}

/// Returns whether `event` may be sent to a subscriber that sees the entries `visible`
/// keeps: every key and policy change, the revocations it may see, and the credential
/// changes of the tenants it may act on (`tenant_visible`).
pub fn event_visible(
    event: &BundleEvent,
    visible: impl Fn(&RevocationEntry) -> bool,
    tenant_visible: impl Fn(&str) -> bool,
) -> bool {
    match &event.change {
        BundleChange::RevocationAdded { entry } => visible(entry),
        // A credential's id and state are its tenant's business only.
        BundleChange::CredentialChanged { change } => tenant_visible(&change.tenant_id),
        _ => true,
    }
}

/// What a new subscriber receives first.
#[derive(Debug)]
pub enum Initial {
    /// The whole bundle.
    Snapshot(Arc<TrustBundle>),
    /// The events after the subscriber's revision (possibly none).
    Deltas(Vec<Arc<BundleEvent>>, Revision),
}

/// One revision of the bundle and its keys, parsed: what tokens are verified against.
#[derive(Clone, Debug)]
pub struct Verification {
    pub bundle: Arc<TrustBundle>,
    pub verifier: Arc<Verifier>,
}

struct HubState {
    bundle: Arc<TrustBundle>,
    /// The keys of `bundle`, parsed; replaced together with it.
    verifier: Arc<Verifier>,
    recent: VecDeque<Arc<BundleEvent>>,
}

/// The in-memory trust bundle and its subscribers.
pub struct BundleHub {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    state: Mutex<HubState>,
    sender: broadcast::Sender<Arc<BundleEvent>>,
}

impl BundleHub {
    /// Loads the bundle from the store: current revision, published and recently revoked
    /// keys, and the recent event window.
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policy: ValidationPolicy,
        live_revocations: Vec<RevocationEntry>,
    ) -> Result<Arc<BundleHub>, StoreError> {
        let now = clock.now();
        // Read the revision before the keys: replaying events past it is idempotent.
        let revision = store.latest_revision().await?;
        let mut bundle = TrustBundle::empty(policy);
        // Only published sets: an HMAC key's record must never reach a subscriber.
        for key_set in KeySetName::PUBLISHED {
            for key in store.key_set(key_set).await?.keys {
                let state = key.schedule.state_at(now);
                if state.is_published() || key.schedule.revoked_at.is_some() {
                    bundle.keys.insert(key.schedule.kid.clone(), key.schedule);
                }
            }
        }
        for entry in live_revocations {
            bundle.revocations.insert(entry);
        }
        bundle.revision = revision;
        bundle.prune(now);
        let first = Revision(revision.0.saturating_sub(RETAINED_EVENTS as u64));
        let recent: VecDeque<Arc<BundleEvent>> = store
            .events_after(first, RETAINED_EVENTS)
            .await?
            .into_iter()
            .filter(|event| event.revision <= revision)
            .map(Arc::new)
            .collect();
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let verifier = Arc::new(Verifier::build(&bundle.keys, None));
        Ok(Arc::new(BundleHub {
            store,
            clock,
            state: Mutex::new(HubState {
                bundle: Arc::new(bundle),
                verifier,
                recent,
            }),
            sender,
        }))
    }

    /// Returns the current bundle.
    pub fn current(&self) -> Arc<TrustBundle> {
        self.lock().bundle.clone()
    }

    /// Returns the current bundle with its parsed keys.
    pub fn verification(&self) -> Verification {
        let state = self.lock();
        Verification {
            bundle: state.bundle.clone(),
            verifier: state.verifier.clone(),
        }
    }

    /// Returns the current revision.
    pub fn revision(&self) -> Revision {
        self.lock().bundle.revision
    }

    /// Registers a subscriber that has applied `since`. The receiver is created under the
    /// same lock as the initial message, so no event falls between them.
    pub fn subscribe(&self, since: Revision) -> (Initial, broadcast::Receiver<Arc<BundleEvent>>) {
        let state = self.lock();
        let receiver = self.sender.subscribe();
        let current = state.bundle.revision;
        let oldest_retained = state.recent.front().map(|event| event.revision);
        let initial = if since.0 == 0 || since > current {
            Initial::Snapshot(state.bundle.clone())
        } else if since == current {
            Initial::Deltas(Vec::new(), current)
        } else if oldest_retained.is_some_and(|oldest| oldest.0 <= since.0 + 1) {
            let deltas = state
                .recent
                .iter()
                .filter(|event| event.revision > since)
                .cloned()
                .collect();
            Initial::Deltas(deltas, current)
        } else {
            Initial::Snapshot(state.bundle.clone())
        };
        (initial, receiver)
    }

    /// Returns how many subscribers are connected.
    pub fn n_subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Follows the event log until `shutdown` fires. Key events reload the key manager, so
    /// a rotation committed by another replica is signed with here too.
    pub async fn run_pump(
        self: Arc<Self>,
        keys: Arc<KeyManager>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let signal = self.store.change_signal();
        loop {
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            match self.catch_up().await {
                Ok(true) => {
                    if let Err(error) = keys.reload().await {
                        warn!(%error, "reloading keys after a key event failed");
                    }
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "reading the event log failed"),
            }
        }
    }

    /// Applies every new event from the store; returns whether any touched keys.
    pub async fn catch_up(&self) -> Result<bool, StoreError> {
        let mut touched_keys = false;
        loop {
            let after = self.revision();
            let events = self.store.events_after(after, 512).await?;
            if events.is_empty() {
                return Ok(touched_keys);
            }
            let now = self.clock.now();
            let mut state = self.lock();
            let mut bundle = (*state.bundle).clone();
            for event in events {
                touched_keys |= !matches!(
                    event.change,
                    BundleChange::RevocationAdded { .. }
                        | BundleChange::CredentialChanged { .. }
                        | BundleChange::SecretRotated { .. }
                );
                if !bundle.apply(&event) {
                    continue;
                }
                let event = Arc::new(event);
                state.recent.push_back(event.clone());
                while state.recent.len() > RETAINED_EVENTS {
                    state.recent.pop_front();
                }
                // No receivers is fine: nobody is subscribed yet.
                let _ = self.sender.send(event);
            }
            bundle.prune(now);
            debug!(revision = bundle.revision.0, "bundle advanced");
            metrics::gauge!("tessera_trust_bundle_revision").set(bundle.revision.0 as f64);
            state.verifier = Arc::new(Verifier::build(&bundle.keys, Some(&state.verifier)));
            state.bundle = Arc::new(bundle);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
