//! Token validation against the bundle in memory: staleness, then the one pipeline of
//! `tessera_common::verify` for the token type the caller asks for (size, header, kid,
//! algorithm pinned by the key, signature, the claims decoded for the type the token
//! names; then the required tenant, iss/aud/exp/nbf/iat, token type, the type's lifetime
//! bound, the key's signing window, revocation, permissions and role). Only the signature
//! work is cached: everything after it depends on the instant or the query and runs on
//! every cache hit. Domain types only; the gRPC edge converts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_common::claims::{AnyClaims, TokenType};
use tessera_common::limits::MAX_TOKEN_BYTES;
use tessera_common::verify::{
    ClaimRules, Rejection, Rules, TenantRule, Verified, authenticate, parse_compact,
};
use tessera_common::{Clock, UnixMillis};
use tokio::sync::watch;

use crate::cache::{TokenKey, VerifiedCache, VerifiedToken};
use crate::config::{StalePolicy, ValidationConfig};
use crate::metrics;
use crate::resync::{ResyncLimiter, ResyncSignal};
use crate::state::{BundleState, BundleView};

/// How long the request that triggered a resync waits for the bundle to change.
pub const RESYNC_WAIT: Duration = Duration::from_millis(250);

/// What the caller asks about a token. Its `Debug` leaves the token out (a bearer
/// credential).
#[derive(Clone, Copy)]
pub struct TokenQuery<'a> {
    pub token: &'a str,
    /// Required `aud` (`None`: any accepted audience).
    pub audience: Option<&'a str>,
    pub required_permissions: &'a [String],
    pub required_role: Option<&'a str>,
    /// The type the token must be; it selects the pipeline's claims and lifetime bound.
    pub token_type: TokenType,
    /// Tenant the token must belong to (`None`: any).
    pub tenant_id: Option<&'a str>,
}

impl std::fmt::Debug for TokenQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenQuery")
            .field("audience", &self.audience)
            .field("required_permissions", &self.required_permissions)
            .field("required_role", &self.required_role)
            .field("token_type", &self.token_type)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// The verdict on a token.
pub type Verdict = Result<Arc<VerifiedToken>, Rejection>;

/// A validation whose unknown kid started a resync, waiting for the bundle to change.
#[derive(Debug)]
pub struct ResyncWait {
    changes: watch::Receiver<u64>,
}

/// Validates tokens; cheap to share (`Arc`).
pub struct Validator {
    state: Arc<BundleState>,
    cache: VerifiedCache,
    limiter: ResyncLimiter,
    /// Wakes the subscription task for a resync.
    resync: Arc<ResyncSignal>,
    config: ValidationConfig,
    clock: Arc<dyn Clock>,
}

/// The outcome of a validation attempt that may stop short of the expensive steps.
enum Attempt {
    Done(Verdict),
    /// The kid is unknown and a resync was started: worth one more look once it lands.
    ResyncStarted,
    /// The token is not in the cache, so the answer needs the parse and signature steps
    /// (only when `full` is false, from [`Validator::validate_cheap`]).
    NeedsFullPath,
}

impl Validator {
    /// Returns a validator over `state`; `resync` is notified when an unknown kid warrants
    /// a fresh subscription.
    pub fn new(
        state: Arc<BundleState>,
        resync: Arc<ResyncSignal>,
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

    /// Like [`Validator::new`], with a cache that puts every token in one slot.
    #[cfg(test)]
    fn with_colliding_cache(
        state: Arc<BundleState>,
        config: ValidationConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cache = VerifiedCache::colliding(config.cache_capacity, config.leeway, clock.clone());
        Validator {
            cache,
            ..Validator::new(state, Arc::default(), config, clock)
        }
    }

    /// Validates `query`. When the kid is unknown and this request started a resync, waits
    /// up to [`RESYNC_WAIT`] for the bundle to change and looks once more.
    pub async fn validate(&self, query: &TokenQuery<'_>) -> Verdict {
        match self.validate_now(query) {
            Ok(verdict) => verdict,
            Err(wait) => self.validate_after(query, wait).await,
        }
    }

    /// Validates `query` without waiting: the verdict, or, when the kid is unknown and
    /// this request started a resync, the wait to hand to [`Validator::validate_after`].
    /// The stream path calls it to answer in place when it may run a signature check
    /// there.
    pub fn validate_now(&self, query: &TokenQuery<'_>) -> Result<Verdict, ResyncWait> {
        let key = self.key_checked(query.token);
        // Subscribed before looking, so a bundle that lands meanwhile is not missed.
        let changes = self.state.subscribe();
        match self.attempt(query, key, true, true) {
            Attempt::Done(verdict) => {
                metrics::record_validation(&verdict);
                Ok(verdict)
            }
            Attempt::ResyncStarted | Attempt::NeedsFullPath => Err(ResyncWait { changes }),
        }
    }

    /// Finishes the validation of `query` that started a resync: waits up to
    /// [`RESYNC_WAIT`] for the bundle to change and looks once more (without starting
    /// another resync).
    pub async fn validate_after(&self, query: &TokenQuery<'_>, mut wait: ResyncWait) -> Verdict {
        let _ = tokio::time::timeout(RESYNC_WAIT, wait.changes.changed()).await;
        let key = self.key_checked(query.token);
        let verdict = match self.attempt(query, key, true, false) {
            Attempt::Done(verdict) => verdict,
            Attempt::ResyncStarted | Attempt::NeedsFullPath => Err(Rejection::UnknownKid),
        };
        metrics::record_validation(&verdict);
        verdict
    }

    /// Answers `query` when the token needs no parsing or signature check (a cache hit, or
    /// a stale bundle or oversize token); `None` otherwise, and the caller runs
    /// [`Validator::validate`], which parses the token once. Never waits.
    pub fn validate_cheap(&self, query: &TokenQuery<'_>) -> Option<Verdict> {
        let key = self.key_checked(query.token);
        match self.attempt(query, key, false, false) {
            Attempt::Done(verdict) => {
                metrics::record_validation(&verdict);
                Some(verdict)
            }
            Attempt::ResyncStarted | Attempt::NeedsFullPath => None,
        }
    }

    /// Returns (and counts) the verdict on a request refused before any token check,
    /// such as one asking for an unknown token type.
    pub fn refuse(&self, rejection: Rejection) -> Verdict {
        let verdict = Err(rejection);
        metrics::record_validation(&verdict);
        verdict
    }

    /// Returns the cache slot of `token` unless it is over the size limit (`None`):
    /// oversize input is refused before any work proportional to its length.
    fn key_checked(&self, token: &str) -> Option<TokenKey> {
        (token.len() <= MAX_TOKEN_BYTES).then(|| self.cache.key(token))
    }

    /// Returns the number of cached verified tokens.
    pub fn cached_tokens(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs the checks. With `full` false it stops at a cache miss, before parsing the
    /// token; with `may_resync` an unknown kid may start a resync.
    fn attempt(
        &self,
        query: &TokenQuery<'_>,
        key: Option<TokenKey>,
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
        let Some(key) = key else {
            return Attempt::Done(Err(Rejection::TooLarge));
        };
        if let Some(hit) = self.cache.get(key, query.token) {
            let same_key = view
                .key(&hit.verified.kid)
                .and_then(|entry| entry.usable_at(now).ok())
                .is_some_and(|key| Arc::ptr_eq(key, &hit.verified.verifying_key));
            if same_key {
                let checked = self.check_verified(&view, &hit.verified, query, now);
                return Attempt::Done(checked.map(|()| hit));
            }
            // The key changed, retired or left the bundle since: verify afresh.
            self.cache.invalidate(key);
        }
        if !full {
            return Attempt::NeedsFullPath;
        }
        let jws = match parse_compact(query.token) {
            Ok(jws) => jws,
            Err(rejection) => return Attempt::Done(Err(rejection)),
        };
        let Some(kid) = jws.header.kid.as_deref() else {
            return Attempt::Done(Err(Rejection::Malformed));
        };
        let Some(entry) = view.key(kid) else {
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
        let verifying_key = match entry.usable_at(now) {
            Ok(verifying_key) => verifying_key,
            Err(rejection) => return Attempt::Done(Err(rejection)),
        };
        let verified = match authenticate::<AnyClaims>(&jws, kid, verifying_key) {
            Ok(verified) => Arc::new(VerifiedToken::new(query.token, verified)),
            Err(rejection) => return Attempt::Done(Err(rejection)),
        };
        self.cache
            .insert(key, verified.clone(), self.config.leeway, now);
        Attempt::Done(
            self.check_verified(&view, &verified.verified, query, now)
                .map(|()| verified),
        )
    }

    /// Runs the checks that follow the signature (`Verified::check`: the required tenant,
    /// claims, token type and its lifetime bound, the key's signing window, revocation,
    /// permissions and role) with the sidecar's audiences and leeway. Runs on every cache
    /// hit: all of it depends on `now` or on the query.
    fn check_verified(
        &self,
        view: &BundleView,
        verified: &Verified<AnyClaims>,
        query: &TokenQuery<'_>,
        now: UnixMillis,
    ) -> Result<(), Rejection> {
        let policy = &view.bundle.policy;
        let rules = Rules {
            claims: ClaimRules {
                audiences: view.audiences(),
                required_audience: query.audience,
                leeway: self.config.leeway,
                ..ClaimRules::new(policy, query.token_type)
            },
            tenant: query.tenant_id.map_or(TenantRule::Any, TenantRule::Exactly),
            required_permissions: query.required_permissions,
            required_role: query.required_role,
        };
        verified.check(&rules, &view.bundle.revocations, now)
    }
}
impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
