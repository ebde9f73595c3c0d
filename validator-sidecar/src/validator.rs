//! Token validation against the bundle in memory, in DESIGN §7's order (detailed in
//! `tessera_common::verify`): staleness, size, header, kid, algorithm pinned by the key,
//! signature, then iss/aud/exp/nbf/iat, lifetime bound, token type, the key's signing
//! window, the required tenant, revocation, permissions and role. Only the signature work
//! is cached: everything after it depends on the instant or the query and runs on every
//! cache hit. Domain types only; the gRPC edge converts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_common::keys::KeyState;
use tessera_common::limits::MAX_TOKEN_BYTES;
use tessera_common::verify::{
    ClaimRules, Rejection, check_authorization, check_claims, check_revocation, check_signature,
    check_tenant, decode_claims, parse_compact,
};
use tessera_common::{Clock, UnixMillis};
use tokio::sync::Notify;

use crate::cache::{TokenHash, VerifiedCache, VerifiedToken, token_hash};
use crate::config::{StalePolicy, ValidationConfig};
use crate::metrics;
use crate::resync::ResyncLimiter;
use crate::state::{BundleState, BundleView};

/// How long the request that triggered a resync waits for the bundle to change.
pub const RESYNC_WAIT: Duration = Duration::from_millis(250);

/// What the caller asks about a token.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenQuery<'a> {
    pub token: &'a str,
    /// Required `aud` (`None`: any accepted audience).
    pub audience: Option<&'a str>,
    pub required_permissions: &'a [String],
    pub required_role: Option<&'a str>,
    /// Required `token_type` (`None`: `access`).
    pub token_type: Option<&'a str>,
    /// Tenant the token must belong to (`None`: any).
    pub tenant_id: Option<&'a str>,
}

/// The verdict on a token.
pub type Verdict = Result<Arc<VerifiedToken>, Rejection>;

/// Validates tokens; cheap to share (`Arc`).
pub struct Validator {
    state: Arc<BundleState>,
    cache: VerifiedCache,
    limiter: ResyncLimiter,
    /// Wakes the subscription task for a resync.
    resync: Arc<Notify>,
    config: ValidationConfig,
    clock: Arc<dyn Clock>,
}

/// The outcome of a validation attempt that may stop short of the expensive steps.
enum Attempt {
    Done(Verdict),
    /// The kid is unknown and a resync was started: worth one more look once it lands.
    ResyncStarted,
    /// The answer needs a signature check or a resync decision (only when `full` is
    /// false, from [`Validator::validate_cheap`]).
    NeedsFullPath,
}

impl Validator {
    /// Returns a validator over `state`; `resync` is notified when an unknown kid warrants
    /// a fresh subscription.
    pub fn new(
        state: Arc<BundleState>,
        resync: Arc<Notify>,
        config: ValidationConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cache = VerifiedCache::new(config.cache_capacity, config.leeway, clock.clone());
        Validator {
            state,
            cache,
            limiter: ResyncLimiter::new(),
            resync,
            config,
            clock,
        }
    }

    /// Validates `query`. When the kid is unknown and this request started a resync, waits
    /// up to [`RESYNC_WAIT`] for the bundle to change and looks once more.
    pub async fn validate(&self, query: &TokenQuery<'_>) -> Verdict {
        let hash = token_hash_checked(query.token);
        let mut changes = self.state.subscribe();
        let verdict = match self.attempt(query, hash.as_ref(), true, true) {
            Attempt::Done(verdict) => verdict,
            Attempt::ResyncStarted | Attempt::NeedsFullPath => {
                let _ = tokio::time::timeout(RESYNC_WAIT, changes.changed()).await;
                match self.attempt(query, hash.as_ref(), true, false) {
                    Attempt::Done(verdict) => verdict,
                    Attempt::ResyncStarted | Attempt::NeedsFullPath => Err(Rejection::UnknownKid),
                }
            }
        };
        metrics::record_validation(&verdict);
        verdict
    }

    /// Answers `query` when no signature needs verifying (a cache hit, or a rejection found
    /// before the signature step); `None` otherwise. Never waits.
    pub fn validate_cheap(&self, query: &TokenQuery<'_>) -> Option<Verdict> {
        let hash = token_hash_checked(query.token);
        match self.attempt(query, hash.as_ref(), false, false) {
            Attempt::Done(verdict) => {
                metrics::record_validation(&verdict);
                Some(verdict)
            }
            Attempt::ResyncStarted | Attempt::NeedsFullPath => None,
        }
    }

    /// Returns the number of cached verified tokens.
    pub fn cached_tokens(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs the checks. With `full` false it stops before any signature check or resync
    /// decision; with `may_resync` an unknown kid may start a resync.
    fn attempt(
        &self,
        query: &TokenQuery<'_>,
        hash: Option<&TokenHash>,
        full: bool,
        may_resync: bool,
    ) -> Attempt {
        let now = self.clock.now();
        let Some(view) = self.state.view() else {
            return Attempt::Done(Err(Rejection::BundleStale));
        };
        if self.config.stale_policy == StalePolicy::FailClosed
            && self
                .state
                .staleness(now)
                .is_none_or(|staleness| staleness > self.config.max_staleness)
        {
            return Attempt::Done(Err(Rejection::BundleStale));
        }
        let Some(hash) = hash else {
            return Attempt::Done(Err(Rejection::TooLarge));
        };
        if let Some(hit) = self.cache.get(hash) {
            let same_key = view.key(&hit.kid).filter(|entry| {
                entry
                    .verifying_key
                    .as_ref()
                    .is_some_and(|key| Arc::ptr_eq(key, &hit.verifying_key))
            });
            if let Some(entry) = same_key {
                if matches!(entry.schedule.state_at(now), KeyState::Retired { .. }) {
                    return Attempt::Done(Err(Rejection::UnknownKid));
                }
                return Attempt::Done(self.check_verified(&view, hit, query, now));
            }
            // The key changed or left the bundle since: verify afresh.
            self.cache.invalidate(hash);
        }
        let jws = match parse_compact(query.token) {
            Ok(jws) => jws,
            Err(rejection) => return Attempt::Done(Err(rejection)),
        };
        let Some(kid) = jws.header.kid.as_deref() else {
            return Attempt::Done(Err(Rejection::Malformed));
        };
        let Some(entry) = view.key(kid) else {
            if !full {
                return Attempt::NeedsFullPath;
            }
            if may_resync && self.limiter.allow(kid, Instant::now()) {
                tracing::info!(
                    kid_len = kid.len(),
                    "unknown kid; resynchronising the bundle"
                );
                metrics::record_resync();
                self.resync.notify_one();
                return Attempt::ResyncStarted;
            }
            return Attempt::Done(Err(Rejection::UnknownKid));
        };
        // A key past its overlap window no longer verifies, even before the issuer's
        // unpublish message arrives.
        if matches!(entry.schedule.state_at(now), KeyState::Retired { .. }) {
            return Attempt::Done(Err(Rejection::UnknownKid));
        }
        let Some(key) = entry.verifying_key.as_ref() else {
            return Attempt::Done(Err(Rejection::UnknownKid));
        };
        if jws.header.alg != key.algorithm.as_str() {
            return Attempt::Done(Err(Rejection::AlgorithmMismatch));
        }
        if !full {
            return Attempt::NeedsFullPath;
        }
        if let Err(rejection) = check_signature(&jws, key) {
            return Attempt::Done(Err(rejection));
        }
        let (claims, claims_json) = match decode_claims(&jws) {
            Ok(decoded) => decoded,
            Err(rejection) => return Attempt::Done(Err(rejection)),
        };
        let verified = Arc::new(VerifiedToken {
            kid: kid.to_owned(),
            header: jws.header.clone(),
            claims,
            claims_json,
            verifying_key: key.clone(),
        });
        self.cache
            .insert(*hash, verified.clone(), self.config.leeway, now);
        Attempt::Done(self.check_verified(&view, verified, query, now))
    }

    /// Runs the checks that follow the signature: claims, token type, the key's signing
    /// window, the required tenant, revocation (entries and the key's own), permissions
    /// and role. Runs on every cache hit: all of it depends on `now` or on the query.
    fn check_verified(
        &self,
        view: &BundleView,
        verified: Arc<VerifiedToken>,
        query: &TokenQuery<'_>,
        now: UnixMillis,
    ) -> Verdict {
        let (audiences, unsatisfiable) = view.audiences();
        let rules = ClaimRules {
            issuer: &view.bundle.policy.issuer,
            audiences,
            required_audience: query.audience,
            leeway: self.config.leeway,
            token_type: query.token_type.unwrap_or("access"),
            max_access_ttl: Duration::from_secs(u64::from(
                view.bundle.policy.max_token_ttl_seconds,
            )),
        };
        let claims_checked = check_claims(
            &verified.header,
            &verified.claims,
            &verified.verifying_key,
            &rules,
            now,
        );
        match claims_checked {
            Err(Rejection::WrongIssuer) => return Err(Rejection::WrongIssuer),
            _ if unsatisfiable => return Err(Rejection::WrongAudience),
            result => result?,
        }
        // Before revocation: a caller asking for its own tenant must not learn whether
        // another tenant's token is revoked.
        check_tenant(&verified.claims, query.tenant_id)?;
        check_revocation(
            &verified.claims,
            &verified.kid,
            &verified.verifying_key,
            &view.bundle.revocations,
        )?;
        check_authorization(
            &verified.claims,
            query.required_permissions,
            query.required_role,
        )?;
        Ok(verified)
    }
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Hashes `token` unless it is over the size limit (`None`): oversize input is refused
/// before any work proportional to its length.
fn token_hash_checked(token: &str) -> Option<TokenHash> {
    (token.len() <= MAX_TOKEN_BYTES).then(|| token_hash(token))
}
