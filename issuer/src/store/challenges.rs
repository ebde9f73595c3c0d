//! The storage contract of one-time login challenges (OTP and magic links, issue 11), of
//! the runtime state of delivery providers and of the fixed-window counters behind the
//! one-time rate limits (`one_time_limits.rs`). Implemented by both backends next to
//! `Store`, covered by the same conformance suite.
//!
//! Exactly-once rules, on any number of replicas:
//! - An attempt is counted by ONE conditional write (`attempts = attempts + 1 WHERE
//!   attempts < max_attempts AND` live), returning the stored hash it is to be compared
//!   with: of N concurrent attempts on a challenge with k left, exactly k are counted.
//! - A challenge is marked verified by one conditional write (`WHERE verified_at IS NULL
//!   AND invalidated_at IS NULL`): of concurrent right answers exactly one verifies.
//! - A window is charged by one atomic upsert per call (both of its buckets at once).

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::credential::PepperVersion;
use tessera_common::ids::TenantId;

use super::{AuditEntry, StoreError};
use crate::challenges::{ChallengeId, ChallengeMethod};

/// A challenge as stored. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    pub challenge_id: ChallengeId,
    pub tenant_id: TenantId,
    pub user_id: String,
    pub method: ChallengeMethod,
    /// HMAC-SHA256(pepper, challenge id ‖ code) under the pepper of `pepper_version`.
    pub code_hash: Vec<u8>,
    pub pepper_version: PepperVersion,
    /// Verification attempts counted so far.
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub verified_at: Option<UnixMillis>,
    pub invalidated_at: Option<UnixMillis>,
}

impl std::fmt::Debug for ChallengeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeRecord")
            .field("challenge_id", &self.challenge_id)
            .field("tenant_id", &self.tenant_id)
            .field("method", &self.method)
            .field("attempts", &self.attempts)
            .field("max_attempts", &self.max_attempts)
            .field("expires_at", &self.expires_at)
            .field("verified_at", &self.verified_at)
            .field("invalidated_at", &self.invalidated_at)
            .finish_non_exhaustive()
    }
}

/// What counting one attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptCount {
    /// The challenge was live and this attempt was counted; the record as it is after
    /// the count (so `attempts` includes this one).
    Counted(ChallengeRecord),
    /// The challenge exists for this tenant but is not live (verified, invalidated,
    /// expired or out of attempts); nothing was counted. The record as stored.
    NotLive(ChallengeRecord),
    /// No challenge of that id for this tenant.
    NotFound,
}

/// A delivery provider's runtime state as stored (absent: enabled, never changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderState {
    pub name: String,
    pub enabled: bool,
    pub changed_at: UnixMillis,
}

/// One fixed-window counter to charge: `bucket` names the scope and subject (e.g.
/// `start:user:<tenant>:<user>`), the window is `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCharge {
    pub bucket: String,
    pub window_start: UnixMillis,
    pub window_end: UnixMillis,
}

/// A counter after a charge: how many calls the window has counted, this one included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCount {
    pub bucket: String,
    pub used: u64,
    pub window_end: UnixMillis,
}

/// The storage of challenges, provider states and one-time rate windows.
#[async_trait]
pub trait ChallengeStore: Send + Sync + 'static {
    /// Inserts a new challenge and its audit entry in one transaction; `AlreadyExists`
    /// if the id is taken.
    async fn insert_challenge(
        &self,
        record: ChallengeRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;

    /// Returns one challenge of `tenant_id` (another tenant's is `None`).
    async fn challenge(
        &self,
        tenant_id: &TenantId,
        challenge_id: &ChallengeId,
    ) -> Result<Option<ChallengeRecord>, StoreError>;

    /// Counts one verification attempt at `now` if the challenge is live (not verified,
    /// not invalidated, `now < expires_at`, `attempts < max_attempts`), by one
    /// conditional write.
    async fn count_attempt(
        &self,
        tenant_id: &TenantId,
        challenge_id: &ChallengeId,
        now: UnixMillis,
    ) -> Result<AttemptCount, StoreError>;

    /// Marks the challenge verified at `now` (with `audit`, when given, in the same
    /// transaction), if it is still neither verified nor invalidated; returns false (and
    /// writes nothing) otherwise.
    async fn mark_verified(
        &self,
        tenant_id: &TenantId,
        challenge_id: &ChallengeId,
        now: UnixMillis,
        audit: Option<AuditEntry>,
    ) -> Result<bool, StoreError>;

    /// Invalidates every live challenge (not verified, not invalidated, not expired at
    /// `at`) of `tenant_id`, or of every tenant when `None`, with the audit entry, in one
    /// transaction; returns how many.
    async fn invalidate_challenges(
        &self,
        tenant_id: Option<&TenantId>,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<u64, StoreError>;

    /// Deletes challenges that expired before `expired_before` and rate windows that
    /// ended before `now`; returns the number of challenges deleted.
    async fn prune_challenges(
        &self,
        expired_before: UnixMillis,
        now: UnixMillis,
    ) -> Result<u64, StoreError>;

    /// Charges one call to each of `charges` in one atomic statement or transaction: a
    /// counter whose stored window ended restarts at 1, otherwise it grows by 1. Returns
    /// the counts after the charge, in the order given.
    async fn charge_windows(
        &self,
        charges: &[WindowCharge],
    ) -> Result<Vec<WindowCount>, StoreError>;

    /// Records provider `name` as enabled or disabled at `at`, with the audit entry.
    async fn set_provider_enabled(
        &self,
        name: &str,
        enabled: bool,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;

    /// Returns every provider state ever recorded.
    async fn provider_states(&self) -> Result<Vec<ProviderState>, StoreError>;
}
