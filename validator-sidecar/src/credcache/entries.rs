//! The map behind [`super::CredentialCache`]: answers by [`Digest`], each kept until its own
//! deadline, bounded in number, with one fetch at a time per digest.
//!
//! Built for the hit path of `ValidateApiKey`, which runs once per application request:
//! a read lock on one of [`N_SHARDS`] shards, one lookup with the digest's own bits as the
//! hash (the digest is already a keyed PRF output, so hashing it again buys nothing), one
//! reference-count increment. (It replaced a moka cache whose read bookkeeping cost as
//! much as the rest of the hit.) Expiry is checked on read; expired answers are swept
//! when a shard fills up, and if a shard is still full, an arbitrary answer goes —
//! arbitrary because the map's order follows the keyed digests. Losing an answer costs
//! one issuer call, never a wrong answer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use tokio::sync::OnceCell;
use tonic::Status;

use super::Digest;

/// Shards of the map (a power of two).
const N_SHARDS: usize = 16;

/// One fetch in flight for a digest, shared by every caller waiting for it.
type Flight<T> = Arc<OnceCell<Result<Arc<T>, Status>>>;

/// Answers by digest.
pub struct Entries<T> {
    shards: Box<[RwLock<Shard<T>>]>,
    per_shard: usize,
    flights: Mutex<HashMap<Digest, Flight<T>, DigestHash>>,
}

type Shard<T> = HashMap<Digest, Slot<T>, DigestHash>;

struct Slot<T> {
    value: Arc<T>,
    until: Instant,
}

impl<T> Entries<T> {
    /// Returns how many answers are held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl<T: Send + Sync + 'static> Entries<T> {
    /// Returns an empty map holding at most about `capacity` answers.
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(N_SHARDS).max(1);
        Entries {
            shards: (0..N_SHARDS).map(|_| RwLock::default()).collect(),
            per_shard,
            flights: Mutex::default(),
        }
    }

    /// Returns the answer under `digest` unless its deadline has passed at `now`.
    pub fn get(&self, digest: &Digest, now: Instant) -> Option<Arc<T>> {
        let shard = self
            .shard(digest)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .get(digest)
            .filter(|slot| now < slot.until)
            .map(|slot| Arc::clone(&slot.value))
    }

    /// Keeps `value` under `digest` until `until`.
    pub fn insert(&self, digest: Digest, value: Arc<T>, until: Instant) {
        let mut shard = self
            .shard(&digest)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            let now = Instant::now();
            shard.retain(|_, slot| now < slot.until);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(digest, Slot { value, until });
    }

    /// Drops the answer under `digest`.
    pub fn remove(&self, digest: &Digest) {
        self.shard(digest)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
    }

    /// Drops every answer.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Runs `fetch` for `digest` unless a fetch for it is already in flight, in which case
    /// this call waits for that one's result instead. A failed fetch's error goes to every
    /// waiter and is not kept: the next call after it fetches again. If the caller running
    /// the fetch goes away, a waiter takes over.
    pub async fn fetch_once<F>(&self, digest: Digest, fetch: F) -> Result<Arc<T>, Status>
    where
        F: Future<Output = Result<Arc<T>, Status>>,
    {
        let flight = Arc::clone(
            self.flights
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(digest)
                .or_default(),
        );
        let result = flight.get_or_init(|| fetch).await.clone();
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights
            .get(&digest)
            .is_some_and(|current| Arc::ptr_eq(current, &flight))
        {
            flights.remove(&digest);
        }
        result
    }

    fn shard(&self, digest: &Digest) -> &RwLock<Shard<T>> {
        // The low bits of a keyed PRF output are uniform.
        &self.shards[(digest.low_bits() as usize) & (N_SHARDS - 1)]
    }
}

/// Hashes a [`Digest`] to its own bits.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `Digest`'s derived `Hash` calls this, with its 16 bytes; fold them anyway
        // so any input hashes to all of its bits.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
}

type DigestHash = BuildHasherDefault<DigestHasher>;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::credcache::Keyer;

    #[test]
    fn answers_expire_on_their_own_deadline_and_the_map_stays_bounded() {
        let keyer = Keyer::random();
        let entries: Entries<u32> = Entries::new(64);
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        entries.insert(keyer.digest("a"), Arc::new(1), later);
        assert_eq!(entries.get(&keyer.digest("a"), now).as_deref(), Some(&1));
        assert_eq!(entries.get(&keyer.digest("a"), later), None);
        assert_eq!(entries.get(&keyer.digest("b"), now), None);
        for n in 0..10_000 {
            entries.insert(keyer.digest(&format!("k{n}")), Arc::new(n), later);
        }
        assert!(entries.len() <= 64, "{} answers held", entries.len());
        entries.remove(&keyer.digest("k9999"));
        assert_eq!(entries.get(&keyer.digest("k9999"), now), None);
        entries.clear();
        assert_eq!(entries.len(), 0);
    }

    #[tokio::test]
    async fn one_fetch_per_digest_at_a_time_and_errors_are_not_kept() {
        let keyer = Keyer::random();
        let entries: Arc<Entries<u32>> = Arc::new(Entries::new(64));
        let calls = Arc::new(AtomicUsize::new(0));
        let waiters = (0..20).map(|_| {
            let entries = entries.clone();
            let calls = calls.clone();
            let digest = keyer.digest("x");
            async move {
                entries
                    .fetch_once(digest, async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        Err(Status::unavailable("down"))
                    })
                    .await
            }
        });
        let results = futures_util::future::join_all(waiters).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(Result::is_err));
        let again = entries
            .fetch_once(keyer.digest("x"), async { Ok(Arc::new(5)) })
            .await;
        assert_eq!(again.ok().as_deref(), Some(&5));
    }
}
