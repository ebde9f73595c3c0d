//! The verified-token cache: tokens whose signature checked out, keyed by the SHA-256 of
//! the token, each kept no longer than the token's own expiry (plus leeway). Only the
//! signature work is cached: claims, revocation and authorization are re-checked on
//! every hit, so a revocation applies to cached tokens at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use tessera_common::claims::{AnyClaims, TokenClaims};
use tessera_common::verify::Verified;
use tessera_common::{Clock, UnixMillis};

/// The SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// Returns the cache key of `token`.
pub fn token_hash(token: &str) -> TokenHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// A token whose signature verified, with its claims decoded for the type it names (the
/// pipeline's own result, so a hit re-runs exactly the checks a miss runs).
pub type VerifiedToken = Verified<AnyClaims>;

/// Returns how long a token expiring at `exp_seconds` may stay cached at `now`: until
/// `exp + leeway`, or `None` when that instant has passed.
pub fn time_to_live(exp_seconds: i64, leeway: Duration, now: UnixMillis) -> Option<Duration> {
    let until = UnixMillis::from_secs(exp_seconds).plus(leeway);
    (until > now).then(|| until.since(now))
}

/// A bounded cache of verified tokens.
#[derive(Clone)]
pub struct VerifiedCache {
    cache: Cache<TokenHash, Arc<VerifiedToken>>,
    enabled: bool,
}

/// Per-entry expiry: each entry lives until its token expires (plus leeway).
struct TokenExpiry {
    clock: Arc<dyn Clock>,
    leeway: Duration,
}

impl Expiry<TokenHash, Arc<VerifiedToken>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Arc<VerifiedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(
            time_to_live(value.claims.registered().exp, self.leeway, self.clock.now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

impl VerifiedCache {
    /// Returns a cache of at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: u64, leeway: Duration, clock: Arc<dyn Clock>) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(TokenExpiry { clock, leeway })
            .build();
        VerifiedCache {
            cache,
            enabled: capacity > 0,
        }
    }

    /// Returns the cached verification of the token hashed to `hash`.
    pub fn get(&self, hash: &TokenHash) -> Option<Arc<VerifiedToken>> {
        if !self.enabled {
            return None;
        }
        self.cache.get(hash)
    }

    /// Caches `token` unless it has already expired at `now`.
    pub fn insert(
        &self,
        hash: TokenHash,
        token: Arc<VerifiedToken>,
        leeway: Duration,
        now: UnixMillis,
    ) {
        if self.enabled && time_to_live(token.claims.registered().exp, leeway, now).is_some() {
            self.cache.insert(hash, token);
        }
    }

    /// Forgets the token hashed to `hash`.
    pub fn invalidate(&self, hash: &TokenHash) {
        self.cache.invalidate(hash);
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

    fn verified(exp: i64) -> Arc<VerifiedToken> {
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
        Arc::new(VerifiedToken {
            kid: "k1".into(),
            header: JwsHeader {
                alg: "EdDSA".into(),
                kid: Some("k1".into()),
                typ: Some(TokenType::Access.jws_typ().into()),
            },
            token_type: TokenType::Access,
            claims: AnyClaims::Access(AccessClaims {
                iss: "tessera".into(),
                sub: "u".into(),
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
        })
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
        // Expires within the next second (exp is whole seconds).
        let short = verified(now.as_secs() + 1);
        let long = verified(now.as_secs() + 3_600);
        cache.insert([1; 32], short, Duration::ZERO, now);
        cache.insert([2; 32], long, Duration::ZERO, now);
        // An already expired token is never cached.
        cache.insert([3; 32], verified(now.as_secs() - 10), Duration::ZERO, now);
        assert!(cache.get(&[1; 32]).is_some());
        assert!(cache.get(&[3; 32]).is_none());
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(
            cache.get(&[1; 32]).is_none(),
            "the entry outlived its token"
        );
        assert!(cache.get(&[2; 32]).is_some());
        cache.invalidate(&[2; 32]);
        assert!(cache.get(&[2; 32]).is_none());
    }

    #[test]
    fn zero_capacity_disables_the_cache() {
        let cache = VerifiedCache::new(0, Duration::ZERO, Arc::new(SystemClock));
        let now = SystemClock.now();
        cache.insert([1; 32], verified(now.as_secs() + 60), Duration::ZERO, now);
        assert!(cache.get(&[1; 32]).is_none());
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn token_hash_is_sha256() {
        let hash = token_hash("abc");
        assert_eq!(hash[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
