//! The API-key aggregate's storage contract (`tbk_`, DESIGN §4): one row per key, its
//! secret only as an HMAC under a recorded pepper version. Implemented by both backends
//! next to `Store`, covered by the same conformance suite. Every state change is a
//! conditional write (it happens only from the state the caller saw), so of concurrent
//! rotations, revocations or scheduler passes on any number of replicas exactly one
//! changes a key, and only that one writes its audit entry and its event
//! (`BundleChange::CredentialChanged`, appended to the event log before the audit entry, in
//! the same transaction, so a verifier can later drop cached answers by key id).

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::bundle::CredentialChange;
use tessera_common::credential::PepperVersion;
use tessera_common::ids::TenantId;

use super::rate_limits::RateLimitStore;
use super::{AuditEntry, StoreError};
use crate::api_keys::ratelimit::RateLimits;

/// Where an API key stands. `expiring` is not a state but a flag (`expiring_at`): an
/// active key within the warning window before its expiry is still active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiKeyState {
    /// Valid until its expiry.
    Active,
    /// Replaced by its successor; still valid until `grace_until`, then refused with its
    /// own reason (grace ended).
    Rotated,
    /// Revoked by an operator: refused at once.
    Revoked,
    /// Past its expiry and deactivated by the scheduler.
    Expired,
}

impl ApiKeyState {
    /// Returns the stored (and wire) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApiKeyState::Active => "active",
            ApiKeyState::Rotated => "rotated",
            ApiKeyState::Revoked => "revoked",
            ApiKeyState::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<ApiKeyState> {
        [
            ApiKeyState::Active,
            ApiKeyState::Rotated,
            ApiKeyState::Revoked,
            ApiKeyState::Expired,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// An API key as stored. The secret is only its HMAC; `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The public id embedded in the key (`tbk_<id>_…`).
    pub key_id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub permissions: Vec<String>,
    pub role: String,
    /// HMAC-SHA256(pepper, secret) under the pepper of `pepper_version`.
    pub secret_hash: Vec<u8>,
    pub pepper_version: PepperVersion,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub state: ApiKeyState,
    /// When the state last changed (rotation, revocation, expiry).
    pub state_at: Option<UnixMillis>,
    /// The key this one replaced, if it was made by a rotation.
    pub predecessor_id: Option<String>,
    /// The key that replaced this one, once rotated.
    pub successor_id: Option<String>,
    /// Once rotated: until when this key still authenticates.
    pub grace_until: Option<UnixMillis>,
    /// When the key was marked as entering the warning window before its expiry (once).
    pub expiring_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
    pub usage_count: u64,
    /// Admissions per window (defaults filled in); a successor inherits them.
    pub rate_limits: RateLimits,
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("key_id", &self.key_id)
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("state", &self.state)
            .field("expires_at", &self.expires_at)
            .field("successor_id", &self.successor_id)
            .field("rate_limits", &self.rate_limits)
            .finish_non_exhaustive()
    }
}

/// Uses of one key gathered in memory since the last flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyUsage {
    pub key_id: String,
    /// How many successful validations.
    pub count: u64,
    /// The latest of them.
    pub last_used_at: UnixMillis,
}

/// The API-key aggregate's storage, with its keys' rate-limit windows.
#[async_trait]
pub trait ApiKeyStore: RateLimitStore {
    /// Inserts a key and its audit entry atomically; `AlreadyExists` if the id exists.
    async fn insert_api_key(&self, key: ApiKeyRecord, audit: AuditEntry) -> Result<(), StoreError>;

    /// Returns one key by its public id.
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Returns the keys of `tenant_id` (every tenant's when `None`), oldest first.
    async fn list_api_keys(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// In one transaction, by a conditional write: marks `old_key_id` rotated (at
    /// `successor.created_at`, valid until `grace_until`, replaced by `successor`) only
    /// if it is still active, then inserts `successor` and `audit`. Returns `false`,
    /// writing nothing, when the key was no longer active — of any number of concurrent
    /// callers on any replica, exactly one gets `true`.
    async fn rotate_api_key(
        &self,
        old_key_id: &str,
        successor: ApiKeyRecord,
        grace_until: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError>;

    /// Revokes `key_id` (active or rotated) at `at`, with `audit`; `false`, writing
    /// nothing, when it is unknown or already revoked or expired.
    async fn revoke_api_key(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError>;

    /// Returns the active keys expiring at or before `until` (the scheduler's candidates
    /// for the `expiring` mark and for expiry).
    async fn api_keys_expiring_by(
        &self,
        until: UnixMillis,
    ) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Marks an active key as entering the warning window, once: `false`, writing
    /// nothing (not even `audit`), when it is already marked or no longer active.
    async fn mark_api_key_expiring(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError>;

    /// Deactivates an active key whose expiry is at or before `at` (state `expired`),
    /// with `audit`; `false`, writing nothing, otherwise.
    async fn expire_api_key(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError>;

    /// Replaces the limits of `key_id`, with `audit`, only if the key still works at `at`
    /// (active and unexpired, or rotated and in its grace); `false`, writing nothing,
    /// otherwise.
    async fn set_api_key_rate_limits(
        &self,
        key_id: &str,
        limits: RateLimits,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Adds a batch of uses in one statement: each key's count grows by its `count` and
    /// its `last_used_at` becomes the later of the stored and the batch's. Unknown ids
    /// are ignored.
    async fn record_api_key_usage(&self, usage: Vec<ApiKeyUsage>) -> Result<(), StoreError>;
}
