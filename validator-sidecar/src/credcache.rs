//! The cache of issuer answers about standing opaque credentials (`tbk_` API keys,
//! `tbs_` service and `tbw_` webhook tokens), and what purges it.
//!
//! An answer is found by a keyed digest of the full credential: SipHash-2-4 with a 128-bit
//! output (a pseudo-random function) under a key drawn at random when the process starts
//! and never stored or sent. Without the key nobody can aim two credentials at one
//! digest: a collision by chance needs about 2^64 cached answers. The hit also compares
//! the credential's public id with the answer's. The credential
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

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use siphasher::sip128::{Hasher128, SipHasher24};
use tessera_common::bundle::{BundleChange, BundleEvent, TrustBundle};
use tessera_common::revocation::RevocationKind;
use tessera_common::{Clock, UnixMillis};
use tonic::Status;

use crate::listen::BundleListener;
use crate::state::BundleState;

mod entries;

use entries::Entries;

/// Most answers held per cache.
pub const CAPACITY: usize = 100_000;
/// Most purge marks held per map; marks older than an answer's longest life are useless
/// and expire first.
const MARK_CAPACITY: u64 = 200_000;

/// The keyed digest an answer is found by. Says nothing about the credential to anyone
/// without this process's key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(u128);

impl Digest {
    /// Returns the digest's low 64 bits (uniform: it is a keyed PRF output).
    fn low_bits(self) -> u64 {
        self.0 as u64
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(..)")
    }
}

/// The per-process key of [`Digest`]s.
pub struct Keyer(SipHasher24);

impl Keyer {
    /// Draws a fresh random key.
    pub fn random() -> Self {
        let mut bytes = zeroize::Zeroizing::new([0u8; 16]);
        // The system random source does not fail on Linux once the process runs; a sidecar
        // without one could not be trusted with any secret.
        aws_lc_rs::rand::fill(bytes.as_mut()).expect("operating system random source failed");
        Keyer(SipHasher24::new_with_key(&bytes))
    }

    /// Returns the digest of `credential`.
    pub fn digest(&self, credential: &str) -> Digest {
        let mut hasher = self.0;
        hasher.write(credential.as_bytes());
        Digest(hasher.finish128().as_u128())
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

/// A cached [`Entry`] and the purge epoch at which it was last found current.
#[derive(Debug)]
pub struct Cached<V> {
    entry: Entry<V>,
    /// [`Purges::epoch`] when [`Purges::is_current`] last said yes; `u64::MAX` before.
    checked_at_epoch: AtomicU64,
}

impl<V> std::ops::Deref for Cached<V> {
    type Target = Entry<V>;

    fn deref(&self) -> &Entry<V> {
        &self.entry
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
    /// Bumped after every change that can make an answer stale (a mark, the floor, a
    /// bundle change): an answer found current at this epoch is current until it moves.
    epoch: AtomicU64,
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
            epoch: AtomicU64::new(0),
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

    /// Returns whether `cached` may still be used, skipping the lookups of
    /// [`Purges::is_current`] when nothing changed since they last said yes. (The epoch is
    /// read before the lookups, and bumped after each change is in place: a change the
    /// lookups missed has moved the epoch past the one recorded.)
    fn is_current_cached<V>(&self, cached: &Cached<V>) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        if cached.checked_at_epoch.load(Ordering::Relaxed) == epoch {
            return true;
        }
        let current = self.is_current(
            &cached.credential_id,
            cached.tenant_id.as_deref(),
            cached.verified_at,
        );
        if current {
            cached.checked_at_epoch.store(epoch, Ordering::Relaxed);
        }
        current
    }

    fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
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
        self.bump_epoch();
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
        // Every event, not only those that left a mark: the bundle itself changed.
        self.bump_epoch();
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
    entries: Entries<Cached<V>>,
    purges: Arc<Purges>,
    clock: Arc<dyn Clock>,
}

/// Where an answer came from.
pub struct Found<V> {
    pub entry: Arc<Cached<V>>,
    /// True when this very call made the issuer call (false for a cache hit, or for a
    /// caller that waited on another caller's issuer call).
    pub fetched_here: bool,
}

impl<V: Send + Sync + 'static> CredentialCache<V> {
    /// Returns an empty cache that consults `purges` (and is emptied on snapshots).
    pub fn new(purges: Arc<Purges>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let entries = Entries::new(CAPACITY);
        let cache = Arc::new(CredentialCache {
            keyer: Keyer::random(),
            entries,
            purges: purges.clone(),
            clock,
        });
        let weak = Arc::downgrade(&cache);
        purges.register_cache_clear(move || {
            if let Some(cache) = weak.upgrade() {
                cache.entries.clear();
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
    /// `credential_id` is the credential's public id, parsed from it by the caller: an
    /// answer about another id is never returned.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        credential: &str,
        credential_id: &str,
        usable: impl Fn(&Entry<V>, UnixMillis) -> bool,
        fetch: F,
    ) -> Result<Found<V>, Status>
    where
        F: FnOnce(UnixMillis) -> Fut,
        Fut: Future<Output = Result<Entry<V>, Status>>,
    {
        let digest = self.keyer.digest(credential);
        if let Some(entry) = self.entries.get(&digest, Instant::now()) {
            if entry.credential_id == credential_id
                && self.purges.is_current_cached(&entry)
                && usable(&entry, self.clock.now())
            {
                return Ok(Found {
                    entry,
                    fetched_here: false,
                });
            }
            self.entries.remove(&digest);
        }
        let fetched_here = std::sync::atomic::AtomicBool::new(false);
        let clock = self.clock.clone();
        let init = async {
            fetched_here.store(true, Ordering::Relaxed);
            let entry = fetch(clock.now()).await?;
            let until = Instant::now() + entry.ttl;
            let cached = Arc::new(Cached {
                entry,
                checked_at_epoch: AtomicU64::new(u64::MAX),
            });
            self.entries.insert(digest, Arc::clone(&cached), until);
            Ok(cached)
        };
        let entry = self.entries.fetch_once(digest, init).await?;
        Ok(Found {
            entry,
            fetched_here: fetched_here.load(Ordering::Relaxed),
        })
    }

    /// Drops the answer about `credential`.
    pub async fn forget(&self, credential: &str) {
        self.entries.remove(&self.keyer.digest(credential));
    }
}

impl<V> std::fmt::Debug for CredentialCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("entries", &self.entries.len())
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
        // Not the unkeyed (all-zero key) SipHash of the text: the key matters.
        let mut unkeyed = SipHasher24::new();
        unkeyed.write(text.as_bytes());
        assert_ne!(one.digest(text).0, unkeyed.finish128().as_u128());
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
                        "x",
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
                "x",
                |_, _| true,
                |_| async { Err(Status::unavailable("down")) },
            )
            .await;
        assert_eq!(
            again.err().map(|status| status.code()),
            Some(tonic::Code::Unavailable)
        );
    }

    #[tokio::test]
    async fn an_answer_found_current_goes_stale_at_the_next_change_of_its_credential() {
        let purges = Arc::new(purges());
        let clock: Arc<dyn Clock> = Arc::new(tessera_common::SystemClock);
        let cache: Arc<CredentialCache<u32>> = CredentialCache::new(purges.clone(), clock);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let lookup = |id: &'static str| {
            let cache = cache.clone();
            let calls = calls.clone();
            async move {
                cache
                    .get_or_fetch(
                        "tbk_x",
                        id,
                        |_, _| true,
                        |now| async move {
                            calls.fetch_add(1, Ordering::SeqCst);
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
        };
        assert!(lookup("x").await.fetched_here);
        // Two hits: the first records the epoch, the second takes the shortcut.
        assert!(!lookup("x").await.fetched_here);
        assert!(!lookup("x").await.fetched_here);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A change of another credential moves the epoch; the full check still passes.
        tokio::time::sleep(Duration::from_millis(2)).await;
        purges.on_event(cache.now(), &changed("y"));
        assert!(!lookup("x").await.fetched_here);
        // A change of this one makes the cached answer stale, shortcut or not.
        purges.on_event(cache.now(), &changed("x"));
        assert!(lookup("x").await.fetched_here);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The same digest presented with another public id is never answered from cache.
        assert!(lookup("z").await.fetched_here);
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
