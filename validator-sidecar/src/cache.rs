//! The verified-token cache: tokens whose signature checked out, each kept no longer than
//! the token's own expiry (plus leeway), with their answer's claims encoded once. Only the
//! signature work and that encoding are cached: claims, revocation and authorization are
//! re-checked on every hit, so a revocation applies to cached tokens at once.
//!
//! An entry is found by a keyed 64-bit hash of the token (foldhash seeded at random per
//! process: fast, and not predictable from outside the process), but the hash only picks
//! the slot. A hit counts only when the token stored in the entry equals the presented
//! token byte for byte, compared in full without an early exit; so the cache never vouches
//! for another token. Two tokens with the same hash share a slot and evict each other: a
//! lost hit, never a wrong answer.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use tessera_common::claims::{AnyClaims, TokenClaims};
use tessera_common::verify::Verified;
use tessera_common::{Clock, UnixMillis};

use crate::answer::EncodedClaims;

/// Where a token's entry would be: its keyed hash. Finding an entry there proves nothing
/// by itself (see [`VerifiedCache::get`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenKey(u64);

/// A token whose signature verified: the pipeline's own result (claims decoded for the
/// type it names, so a hit re-runs exactly the checks a miss runs), the answer's claims
/// encoded once, and the token itself, which a hit must match.
pub struct VerifiedToken {
    token: Box<[u8]>,
    pub verified: Verified<AnyClaims>,
    /// The `TokenClaims` message of every answer about this token.
    pub answer: EncodedClaims,
}

impl VerifiedToken {
    /// Wraps the verification of `token`, encoding its answer's claims.
    pub fn new(token: &str, verified: Verified<AnyClaims>) -> Self {
        let answer = EncodedClaims::encode(&verified);
        VerifiedToken {
            token: token.as_bytes().into(),
            verified,
            answer,
        }
    }

    /// Returns true when `token` is the token this entry verified: same length and every
    /// byte equal. The comparison reads every byte whatever it finds, so its time does not
    /// tell how long a prefix of a cached bearer token a probe got right.
    pub fn is_token(&self, token: &str) -> bool {
        let presented = token.as_bytes();
        if presented.len() != self.token.len() {
            return false;
        }
        let difference = self
            .token
            .iter()
            .zip(presented)
            .fold(0u8, |difference, (stored, presented)| {
                difference | (stored ^ presented)
            });
        std::hint::black_box(difference) == 0
    }
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a bearer credential and the claims identify users.
        f.debug_struct("VerifiedToken")
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

/// Returns how long a token expiring at `exp_seconds` may stay cached at `now`: until
/// `exp + leeway`, or `None` when that instant has passed.
pub fn time_to_live(exp_seconds: i64, leeway: Duration, now: UnixMillis) -> Option<Duration> {
    let until = UnixMillis::from_secs(exp_seconds).plus(leeway);
    (until > now).then(|| until.since(now))
}

/// Hashes tokens into [`TokenKey`]s.
#[derive(Clone)]
enum KeyHasher {
    /// foldhash with a random per-process seed.
    Seeded(foldhash::quality::RandomState),
    /// Every token in one slot: lets the tests force collisions.
    #[cfg(test)]
    Constant,
}

/// A bounded cache of verified tokens.
#[derive(Clone)]
pub struct VerifiedCache {
    cache: Cache<u64, Arc<VerifiedToken>>,
    hasher: KeyHasher,
    enabled: bool,
}

/// Per-entry expiry: each entry lives until its token expires (plus leeway).
struct TokenExpiry {
    clock: Arc<dyn Clock>,
    leeway: Duration,
}

impl Expiry<u64, Arc<VerifiedToken>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &u64,
        value: &Arc<VerifiedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(
            time_to_live(
                value.verified.claims.registered().exp,
                self.leeway,
                self.clock.now(),
            )
            .unwrap_or(Duration::ZERO),
        )
    }
}

impl VerifiedCache {
    /// Returns a cache of at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: u64, leeway: Duration, clock: Arc<dyn Clock>) -> Self {
        Self::with_hasher(
            capacity,
            leeway,
            clock,
            KeyHasher::Seeded(foldhash::quality::RandomState::default()),
        )
    }

    /// Like [`VerifiedCache::new`], with every token hashed to the same key.
    #[cfg(test)]
    pub(crate) fn colliding(capacity: u64, leeway: Duration, clock: Arc<dyn Clock>) -> Self {
        Self::with_hasher(capacity, leeway, clock, KeyHasher::Constant)
    }

    fn with_hasher(
        capacity: u64,
        leeway: Duration,
        clock: Arc<dyn Clock>,
        hasher: KeyHasher,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(TokenExpiry { clock, leeway })
            .build();
        VerifiedCache {
            cache,
            hasher,
            enabled: capacity > 0,
        }
    }

    /// Returns the slot of `token`.
    pub fn key(&self, token: &str) -> TokenKey {
        match &self.hasher {
            KeyHasher::Seeded(state) => TokenKey(state.hash_one(token.as_bytes())),
            #[cfg(test)]
            KeyHasher::Constant => TokenKey(0),
        }
    }

    /// Returns the cached verification of `token`, whose slot is `key`: only an entry
    /// holding this very token (compared in full) counts.
    pub fn get(&self, key: TokenKey, token: &str) -> Option<Arc<VerifiedToken>> {
        if !self.enabled {
            return None;
        }
        self.cache.get(&key.0).filter(|entry| entry.is_token(token))
    }

    /// Caches `entry` in slot `key` (the slot of the token it holds) unless the token has
    /// already expired at `now`.
    pub fn insert(
        &self,
        key: TokenKey,
        entry: Arc<VerifiedToken>,
        leeway: Duration,
        now: UnixMillis,
    ) {
        let exp = entry.verified.claims.registered().exp;
        if self.enabled && time_to_live(exp, leeway, now).is_some() {
            self.cache.insert(key.0, entry);
        }
    }

    /// Empties slot `key`.
    pub fn invalidate(&self, key: TokenKey) {
        self.cache.invalidate(&key.0);
    }

    /// Returns the number of cached tokens (approximate until pending work runs).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use tessera_common::SystemClock;
    use tessera_common::claims::{AccessClaims, JwsHeader, TokenType};
    use tessera_common::jwk::Jwk;
    use tessera_common::keys::{Algorithm, KeySchedule, KeySetName};

    use super::*;
    use tessera_common::verify::VerifyingKey;

    /// A verified access token for subject `sub` expiring at `exp`: the cache neither
    /// signs nor parses, so the token text is whatever the test says it is.
    fn verified(sub: &str, exp: i64) -> Verified<AnyClaims> {
        let key_pair = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        use aws_lc_rs::signature::KeyPair;
        use base64::Engine;
        let x =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key_pair.public_key().as_ref());
        let schedule = KeySchedule {
            kid: tessera_common::ids::KeyId::new("k1").unwrap(),
            key_set: KeySetName::Access,
            algorithm: Algorithm::EdDsa,
            created_at: UnixMillis(0),
            activates_at: UnixMillis(0),
            deactivates_at: None,
            verify_until: None,
            revoked_at: None,
            public_jwk: Jwk {
                kty: "OKP".into(),
                kid: "k1".into(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
                n: None,
                e: None,
                crv: Some("Ed25519".into()),
                x: Some(x),
                y: None,
            },
        };
        Verified {
            kid: "k1".into(),
            header: JwsHeader {
                alg: "EdDSA".into(),
                kid: Some("k1".into()),
                typ: Some(TokenType::Access.jws_typ().into()),
            },
            token_type: TokenType::Access,
            claims: AnyClaims::Access(AccessClaims {
                iss: "tessera".into(),
                sub: sub.into(),
                aud: "a".into(),
                iat: 0,
                exp,
                nbf: 0,
                jti: "j".into(),
                iat_ms: 0,
                tenant_id: "t".into(),
                role: "r".into(),
                permissions: vec![],
                session_id: "s".into(),
                token_type: TokenType::Access.as_str().into(),
                device_fingerprint: None,
                ip_address: None,
                mfa_verified: false,
                last_password_change: 0,
                features: vec![],
                family_id: None,
            }),
            claims_json: "{}".into(),
            verifying_key: Arc::new(VerifyingKey::from_schedule(&schedule).unwrap()),
        }
    }

    fn entry(token: &str, exp: i64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken::new(token, verified(token, exp)))
    }

    fn subject(entry: &VerifiedToken) -> &str {
        entry.verified.claims.registered().sub
    }

    #[test]
    fn time_to_live_ends_at_expiry_plus_leeway() {
        let leeway = Duration::from_secs(30);
        let now = UnixMillis::from_secs(1_000);
        assert_eq!(
            time_to_live(1_060, leeway, now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(time_to_live(970, leeway, now), None);
        assert_eq!(time_to_live(969, leeway, now), None);
        assert_eq!(time_to_live(971, leeway, now), Some(Duration::from_secs(1)));
    }

    #[test]
    fn entries_expire_with_their_token() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let cache = VerifiedCache::new(100, Duration::ZERO, clock.clone());
        let now = clock.now();
        let (short, long, old) = ("short.token.a", "long.token.b", "old.token.c");
        // Expires within the next second (exp is whole seconds).
        cache.insert(
            cache.key(short),
            entry(short, now.as_secs() + 1),
            Duration::ZERO,
            now,
        );
        cache.insert(
            cache.key(long),
            entry(long, now.as_secs() + 3_600),
            Duration::ZERO,
            now,
        );
        // An already expired token is never cached.
        cache.insert(
            cache.key(old),
            entry(old, now.as_secs() - 10),
            Duration::ZERO,
            now,
        );
        assert!(cache.get(cache.key(short), short).is_some());
        assert!(cache.get(cache.key(old), old).is_none());
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(
            cache.get(cache.key(short), short).is_none(),
            "the entry outlived its token"
        );
        assert!(cache.get(cache.key(long), long).is_some());
        cache.invalidate(cache.key(long));
        assert!(cache.get(cache.key(long), long).is_none());
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let cache = VerifiedCache::new(0, Duration::ZERO, Arc::new(SystemClock));
        let now = SystemClock.now();
        let token = "a.b.c";
        cache.insert(
            cache.key(token),
            entry(token, now.as_secs() + 60),
            Duration::ZERO,
            now,
        );
        assert!(cache.get(cache.key(token), token).is_none());
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn tokens_sharing_a_slot_never_share_an_answer() {
        let cache = VerifiedCache::colliding(100, Duration::ZERO, Arc::new(SystemClock));
        let now = SystemClock.now();
        let exp = now.as_secs() + 60;
        let first = "header.first-claims.signature";
        // Same length and prefix, one byte apart at the very end; then other lengths.
        let neighbours = [
            "header.first-claims.signaturf",
            "header.first-claims.signatur",
            "header.first-claims.signaturee",
            "",
        ];
        assert_eq!(cache.key(first), cache.key(neighbours[0]));
        cache.insert(cache.key(first), entry(first, exp), Duration::ZERO, now);
        for other in neighbours {
            assert!(
                cache.get(cache.key(other), other).is_none(),
                "the entry of another token answered for {other:?}"
            );
        }
        let hit = cache.get(cache.key(first), first).unwrap();
        assert_eq!(subject(&hit), first);
        // The second token takes the slot; each token still only ever gets its own entry.
        let second = neighbours[0];
        cache.insert(cache.key(second), entry(second, exp), Duration::ZERO, now);
        assert_eq!(
            subject(&cache.get(cache.key(second), second).unwrap()),
            second
        );
        assert!(cache.get(cache.key(first), first).is_none());
    }

    #[test]
    fn seeded_keys_differ_between_caches_and_between_tokens() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let one = VerifiedCache::new(10, Duration::ZERO, clock.clone());
        let two = VerifiedCache::new(10, Duration::ZERO, clock);
        assert_eq!(one.key("a.b.c"), one.key("a.b.c"));
        assert_ne!(one.key("a.b.c"), one.key("a.b.d"));
        // Each cache draws its own seed: a key learnt from one says nothing of another.
        assert_ne!(one.key("a.b.c"), two.key("a.b.c"));
    }
}
