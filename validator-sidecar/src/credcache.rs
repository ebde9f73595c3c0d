//! The cache of issuer answers about standing opaque credentials (`tbk_` API keys,
//! `tbs_` service and `tbw_` webhook tokens), and what purges it.
//!
//! An answer is found by a keyed digest of the full credential: HMAC-SHA256 under a key
//! drawn at random when the process starts and never stored or sent. The credential
//! itself is never kept, and neither is anything the issuer stores (its HMAC under the
//! pepper): the sidecar never holds the pepper or an issuer hash. A memory dump of the
//! sidecar therefore yields digests that nobody can check a guess against offline — the
//! HMAC key lives only in this process's memory, is different in every process, and
//! changes at every restart — and, with 256-bit secrets, no guess could succeed anyway;
//! the digest is a lookup key, not a verifier. (A dump that also captured the HMAC key
//! still gives nothing usable against the issuer: a digest is not a credential.)
//!
//! An answer is used only while it is current ([`Purges::is_current`]):
//! - the issuer pushed no `CredentialChanged` for its credential id since it was verified
//!   (any state: rotated, revoked, expired or expiring sends the next use back to the
//!   issuer — simple, and never wrong);
//! - no tenant emergency revocation (a `tenant` entry, or an `all` entry) of its tenant
//!   was applied since, and the bundle holds no such entry revoked at or after its
//!   verification;
//! - no snapshot replaced the bundle since (a snapshot follows a gap in which events may
//!   have been missed, so every answer is dropped).
//!
//! Each mark records the sidecar's clock when the event was applied, and an answer's
//! `verified_at` is the sidecar's clock when the issuer call started; an answer verified
//! at or before a mark is stale. A call in flight while an event arrives is thus never
//! trusted, whichever finished first.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use moka::Expiry;
use tessera_common::bundle::{BundleChange, BundleEvent, TrustBundle};
use tessera_common::revocation::RevocationKind;
use tessera_common::{Clock, UnixMillis};
use tonic::Status;

use crate::listen::BundleListener;
use crate::state::BundleState;

/// Most answers held per cache.
pub const CAPACITY: u64 = 100_000;
/// Most purge marks held per map; marks older than an answer's longest life are useless
/// and expire first.
const MARK_CAPACITY: u64 = 200_000;

/// The keyed digest an answer is found by. Says nothing about the credential to anyone
/// without this process's key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(..)")
    }
}

/// The per-process HMAC key of [`Digest`]s.
pub struct Keyer(hmac::Key);

impl Keyer {
    /// Draws a fresh random key.
    pub fn random() -> Self {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        // The system random source does not fail on Linux once the process runs; a sidecar
        // without one could not be trusted with any secret.
        aws_lc_rs::rand::fill(bytes.as_mut()).expect("operating system random source failed");
        Keyer(hmac::Key::new(hmac::HMAC_SHA256, bytes.as_ref()))
    }

    /// Returns the digest of `credential`.
    pub fn digest(&self, credential: &str) -> Digest {
        let tag = hmac::sign(&self.0, credential.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Digest(out)
    }
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyer(<redacted>)")
    }
}

/// One cached answer, positive or negative.
#[derive(Debug)]
pub struct Entry<V> {
    pub value: V,
    /// The credential's public id (parsed locally, so negative answers have it too).
    pub credential_id: String,
    /// The tenant, for positive answers.
    pub tenant_id: Option<String>,
    /// The sidecar's clock when the issuer call that produced it started.
    pub verified_at: UnixMillis,
    /// How long the cache may keep it.
    pub ttl: Duration,
}

struct EntryExpiry;

impl<V> Expiry<Digest, Arc<Entry<V>>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &Arc<Entry<V>>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Returns how long an answer verified at `now` may be cached: `ttl`, never past any of
/// `deadlines` (the credential's expiry, the end of its grace period); zero when one has
/// passed.
pub fn bounded_ttl(now: UnixMillis, ttl: Duration, deadlines: &[Option<UnixMillis>]) -> Duration {
    deadlines
        .iter()
        .flatten()
        .map(|deadline| deadline.since(now))
        .fold(ttl, Duration::min)
}

/// The marks that make cached answers stale, fed by the trust-bundle stream.
pub struct Purges {
    by_id: moka::sync::Cache<String, UnixMillis>,
    by_tenant: moka::sync::Cache<String, UnixMillis>,
    /// The latest `all` entry or snapshot: every answer verified at or before is stale.
    floor: AtomicI64,
    bundle: Arc<BundleState>,
    /// Caches to empty at once on a snapshot (marks already make their answers unusable;
    /// this frees the memory).
    on_snapshot: std::sync::Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Purges {
    /// Returns empty marks; `longest_life` bounds how long any answer can be cached
    /// after its verification started (cache TTL plus an issuer call), after which a mark
    /// can no longer matter.
    pub fn new(bundle: Arc<BundleState>, longest_life: Duration) -> Self {
        let marks = || {
            moka::sync::Cache::builder()
                .max_capacity(MARK_CAPACITY)
                .time_to_live(longest_life)
                .build()
        };
        Purges {
            by_id: marks(),
            by_tenant: marks(),
            floor: AtomicI64::new(i64::MIN),
            bundle,
            on_snapshot: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Returns whether an answer about `credential_id` (of `tenant_id`, when known)
    /// verified at `verified_at` may still be used.
    pub fn is_current(
        &self,
        credential_id: &str,
        tenant_id: Option<&str>,
        verified_at: UnixMillis,
    ) -> bool {
        let after = |mark: Option<UnixMillis>| mark.is_none_or(|mark| mark < verified_at);
        if self.floor.load(Ordering::Acquire) >= verified_at.0 {
            return false;
        }
        if !after(self.by_id.get(credential_id)) {
            return false;
        }
        let Some(tenant_id) = tenant_id else {
            return true;
        };
        if !after(self.by_tenant.get(tenant_id)) {
            return false;
        }
        // The entry itself, in case its delta was applied before this answer's call
        // started but the issuer's clock puts it later (the issuer refuses from then on).
        let cutoff = self
            .bundle
            .view()
            .and_then(|view| view.bundle.revocations.tenant_cutoff(tenant_id));
        after(cutoff)
    }

    /// Registers a cache to empty on every snapshot.
    pub fn register_cache_clear(&self, clear: impl Fn() + Send + Sync + 'static) {
        self.on_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(clear));
    }

    fn raise_floor(&self, now: UnixMillis) {
        self.floor.fetch_max(now.0, Ordering::AcqRel);
    }
}

impl BundleListener for Purges {
    fn on_snapshot(&self, now: UnixMillis, _bundle: &TrustBundle) {
        self.raise_floor(now);
        for clear in self
            .on_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            clear();
        }
    }

    fn on_event(&self, now: UnixMillis, event: &BundleEvent) {
        match &event.change {
            BundleChange::CredentialChanged { change } => {
                tracing::debug!(
                    credential_id = %change.credential_id,
                    state = %change.state,
                    "dropping cached answers of a changed credential"
                );
                self.by_id.insert(change.credential_id.clone(), now);
            }
            BundleChange::RevocationAdded { entry } => match entry.kind {
                RevocationKind::Tenant => match &entry.tenant_id {
                    // A tenant entry confined to another tenant matches nothing.
                    Some(scope) if *scope != entry.value => {}
                    _ => self.by_tenant.insert(entry.value.clone(), now),
                },
                RevocationKind::All => match &entry.tenant_id {
                    Some(tenant) => self.by_tenant.insert(tenant.clone(), now),
                    None => self.raise_floor(now),
                },
                _ => {}
            },
            _ => {}
        }
    }
}

impl std::fmt::Debug for Purges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purges")
            .field("ids", &self.by_id.entry_count())
            .field("tenants", &self.by_tenant.entry_count())
            .finish_non_exhaustive()
    }
}

/// Answers about one family of credentials, by digest, each used only while current.
pub struct CredentialCache<V> {
    keyer: Keyer,
    entries: moka::future::Cache<Digest, Arc<Entry<V>>>,
    purges: Arc<Purges>,
    clock: Arc<dyn Clock>,
}

/// Where an answer came from.
pub struct Found<V> {
    pub entry: Arc<Entry<V>>,
    /// True when this very call made the issuer call (false for a cache hit, or for a
    /// caller that waited on another caller's issuer call).
    pub fetched_here: bool,
}

impl<V: Send + Sync + 'static> CredentialCache<V> {
    /// Returns an empty cache that consults `purges` (and is emptied on snapshots).
    pub fn new(purges: Arc<Purges>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let entries = moka::future::Cache::builder()
            .max_capacity(CAPACITY)
            .expire_after(EntryExpiry)
            .build();
        let cache = Arc::new(CredentialCache {
            keyer: Keyer::random(),
            entries,
            purges: purges.clone(),
            clock,
        });
        let weak = Arc::downgrade(&cache);
        purges.register_cache_clear(move || {
            if let Some(cache) = weak.upgrade() {
                cache.entries.invalidate_all();
            }
        });
        cache
    }

    /// Returns the sidecar's clock.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Returns the current answer about `credential`, asking `fetch` (given the instant
    /// the call starts) on a miss. Concurrent misses of one credential make one `fetch`
    /// between them; a failed fetch is not cached and its error goes to every waiter.
    /// `usable` rejects a cached answer for a reason of its own (past an expiry).
    pub async fn get_or_fetch<F, Fut>(
        &self,
        credential: &str,
        usable: impl Fn(&Entry<V>, UnixMillis) -> bool,
        fetch: F,
    ) -> Result<Found<V>, Status>
    where
        F: FnOnce(UnixMillis) -> Fut,
        Fut: Future<Output = Result<Entry<V>, Status>>,
    {
        let digest = self.keyer.digest(credential);
        if let Some(entry) = self.entries.get(&digest).await {
            if self.is_current(&entry) && usable(&entry, self.clock.now()) {
                return Ok(Found {
                    entry,
                    fetched_here: false,
                });
            }
            self.entries.invalidate(&digest).await;
        }
        let fetched_here = std::sync::atomic::AtomicBool::new(false);
        let clock = self.clock.clone();
        let init = async {
            fetched_here.store(true, Ordering::Relaxed);
            fetch(clock.now()).await.map(Arc::new)
        };
        let entry = self
            .entries
            .try_get_with(digest, init)
            .await
            .map_err(|error: Arc<Status>| (*error).clone())?;
        Ok(Found {
            entry,
            fetched_here: fetched_here.load(Ordering::Relaxed),
        })
    }

    /// Drops the answer about `credential`.
    pub async fn forget(&self, credential: &str) {
        self.entries
            .invalidate(&self.keyer.digest(credential))
            .await;
    }

    fn is_current(&self, entry: &Entry<V>) -> bool {
        self.purges.is_current(
            &entry.credential_id,
            entry.tenant_id.as_deref(),
            entry.verified_at,
        )
    }
}

impl<V> std::fmt::Debug for CredentialCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use tessera_common::bundle::{CredentialChange, Revision, StandingKind, ValidationPolicy};
    use tessera_common::revocation::RevocationEntry;

    use super::*;

    fn purges() -> Purges {
        let state = Arc::new(BundleState::new(Vec::new()));
        state.replace(TrustBundle::empty(ValidationPolicy::new(
            "tessera".into(),
            vec![],
            Duration::from_secs(30),
            Duration::from_secs(900),
        )));
        Purges::new(state, Duration::from_secs(60))
    }

    fn event(change: BundleChange) -> BundleEvent {
        BundleEvent {
            revision: Revision(2),
            at: UnixMillis(0),
            change,
        }
    }

    fn changed(id: &str) -> BundleEvent {
        event(BundleChange::CredentialChanged {
            change: CredentialChange {
                kind: StandingKind::ApiKey,
                credential_id: id.into(),
                tenant_id: "t1".into(),
                state: "revoked".into(),
                grace_until: None,
                expires_at: UnixMillis(10_000_000),
            },
        })
    }

    fn tenant_entry(kind: RevocationKind, value: &str, revoked_at: i64) -> BundleEvent {
        event(BundleChange::RevocationAdded {
            entry: RevocationEntry {
                kind,
                value: value.into(),
                tenant_id: None,
                revoked_at: UnixMillis(revoked_at),
                drop_after: UnixMillis(revoked_at + 3_600_000),
            },
        })
    }

    #[test]
    fn digests_are_keyed_per_process_and_never_the_credential() {
        let one = Keyer::random();
        let other = Keyer::random();
        let text = "tbk_0123456789abcdef_secret";
        assert_eq!(one.digest(text), one.digest(text));
        assert_ne!(one.digest(text), one.digest("tbk_0123456789abcdef_secreT"));
        // Another process (another key) finds nothing under this process's digests.
        assert_ne!(one.digest(text), other.digest(text));
        assert!(!format!("{:?}{:?}", one, one.digest(text)).contains("secret"));
        // Not HMAC(empty key) or a plain hash of the text: the key matters.
        let unkeyed = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b""), text.as_bytes());
        assert_ne!(&one.digest(text).0[..], unkeyed.as_ref());
    }

    #[test]
    fn ttl_never_outlives_the_credential() {
        let now = UnixMillis(1_000_000);
        let ttl = Duration::from_secs(30);
        assert_eq!(bounded_ttl(now, ttl, &[None, None]), ttl);
        assert_eq!(
            bounded_ttl(now, ttl, &[Some(UnixMillis(1_010_000)), None]),
            Duration::from_secs(10)
        );
        assert_eq!(
            bounded_ttl(
                now,
                ttl,
                &[Some(UnixMillis(9_000_000)), Some(UnixMillis(1_002_000))]
            ),
            Duration::from_secs(2)
        );
        assert_eq!(
            bounded_ttl(now, ttl, &[Some(UnixMillis(999_000))]),
            Duration::ZERO
        );
    }

    #[test]
    fn a_credential_change_stales_answers_verified_at_or_before_it() {
        let purges = purges();
        assert!(purges.is_current("k1", Some("t1"), UnixMillis(1_000)));
        purges.on_event(UnixMillis(2_000), &changed("k1"));
        assert!(!purges.is_current("k1", Some("t1"), UnixMillis(1_000)));
        assert!(!purges.is_current("k1", None, UnixMillis(2_000)));
        assert!(purges.is_current("k1", Some("t1"), UnixMillis(2_001)));
        assert!(purges.is_current("k2", Some("t1"), UnixMillis(1_000)));
    }

    #[test]
    fn tenant_and_all_entries_stale_their_tenants_answers() {
        let purges = purges();
        purges.on_event(
            UnixMillis(5_000),
            &tenant_entry(RevocationKind::Tenant, "t1", 1),
        );
        assert!(!purges.is_current("k1", Some("t1"), UnixMillis(4_000)));
        assert!(purges.is_current("k1", Some("t2"), UnixMillis(4_000)));
        assert!(purges.is_current("k1", Some("t1"), UnixMillis(5_001)));
        // Negative answers have no tenant: only their id and the floor apply.
        assert!(purges.is_current("k1", None, UnixMillis(4_000)));
        purges.on_event(UnixMillis(6_000), &tenant_entry(RevocationKind::All, "", 1));
        assert!(!purges.is_current("k1", Some("t2"), UnixMillis(5_500)));
        assert!(!purges.is_current("k1", None, UnixMillis(5_500)));
        // Other kinds of entry concern tokens, not standing credentials.
        purges.on_event(
            UnixMillis(9_000),
            &tenant_entry(RevocationKind::User, "t3", 1),
        );
        assert!(purges.is_current("k1", Some("t3"), UnixMillis(7_000)));
    }

    #[test]
    fn the_bundles_tenant_entry_stales_answers_verified_before_it() {
        let purges = purges();
        purges.bundle.update(|bundle| {
            let BundleChange::RevocationAdded { entry } =
                tenant_entry(RevocationKind::Tenant, "t1", 50_000).change
            else {
                unreachable!()
            };
            bundle.revocations.insert(entry);
            true
        });
        assert!(!purges.is_current("k1", Some("t1"), UnixMillis(50_000)));
        assert!(purges.is_current("k1", Some("t1"), UnixMillis(50_001)));
        assert!(purges.is_current("k1", Some("t2"), UnixMillis(1)));
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_fetch_and_a_snapshot_drops_everything() {
        let purges = Arc::new(purges());
        let clock: Arc<dyn Clock> = Arc::new(tessera_common::SystemClock);
        let cache: Arc<CredentialCache<u32>> = CredentialCache::new(purges.clone(), clock);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let lookups = (0..50).map(|_| {
            let cache = cache.clone();
            let calls = calls.clone();
            async move {
                cache
                    .get_or_fetch(
                        "tbk_x",
                        |_, _| true,
                        |now| async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(Entry {
                                value: 7,
                                credential_id: "x".into(),
                                tenant_id: Some("t1".into()),
                                verified_at: now,
                                ttl: Duration::from_secs(30),
                            })
                        },
                    )
                    .await
                    .unwrap()
            }
        });
        let found = futures_util::future::join_all(lookups).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(found.iter().filter(|found| found.fetched_here).count(), 1);
        assert!(found.iter().all(|found| found.entry.value == 7));
        // A failed fetch is not cached; a snapshot makes the answer stale.
        purges.on_snapshot(cache.now().plus(Duration::from_millis(1)), &purges_bundle());
        let again = cache
            .get_or_fetch(
                "tbk_x",
                |_, _| true,
                |_| async { Err(Status::unavailable("down")) },
            )
            .await;
        assert_eq!(
            again.err().map(|status| status.code()),
            Some(tonic::Code::Unavailable)
        );
    }

    fn purges_bundle() -> TrustBundle {
        TrustBundle::empty(ValidationPolicy::new(
            "tessera".into(),
            vec![],
            Duration::from_secs(30),
            Duration::from_secs(900),
        ))
    }
}
