//! The storage boundary: one trait holding domain records, two backends (SQLite, the
//! embedded default; PostgreSQL for production and several replicas), one conformance
//! suite (`tests/it/store_suite.rs`) run against both. What the backends do alike lives
//! once in `shared.rs`; a backend holds only SQL text and row mapping.
//!
//! Only this module and its children talk to a database.

use std::sync::Arc;

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, BundleEvent, Revision};
use tessera_common::credential::{CredentialKind, PepperVersion};
use tessera_common::ids::ClientId;
use tessera_common::keys::{KeySchedule, KeySetName};
use tokio::sync::Notify;

use crate::kek::KekVersion;

pub mod api_keys;
pub mod challenges;
mod columns;
pub mod emergency;
pub mod one_time_tokens;
pub mod opaque_tokens;
pub mod postgres;
pub mod rate_limits;
pub mod secrets;
pub mod sessions;
mod shared;
pub mod sqlite;

pub use crate::audit::{AuditEntry, AuditRecord, StoredAuditEntry};
pub use api_keys::{ApiKeyRecord, ApiKeyState, ApiKeyStore, ApiKeyUsage};
pub use emergency::{DeactivatedCredentials, EmergencyCommit, EmergencyCommitted, IncidentRecord};
pub use one_time_tokens::{
    ActionSettingsRecord, Consumption, OneTimeKind, OneTimeTokenRecord, OneTimeTokenStore,
};
pub use opaque_tokens::{
    OpaqueTokenKind, OpaqueTokenRecord, OpaqueTokenState, OpaqueTokenStore, RevocationRecords,
    ServiceIdentityRecord, ServiceTokenInsert,
};
pub use rate_limits::RateLimitStore;
pub use secrets::{
    SecretCommit, SecretHistoryRecord, SecretRecord, SecretStage, SecretState, SecretStore,
    SecretVersionRecord,
};
pub use sessions::{
    RefreshContext, RefreshState, RefreshTokenRecord, Revocation, RevocationEffect, SessionRecord,
    SessionStore,
};

/// A storage failure, already translated from the backend's own error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An optimistic-concurrency check failed, or the database aborted the transaction
    /// (serialization failure, deadlock): someone else wrote first and running the
    /// operation again may succeed.
    #[error("conflicting write")]
    Conflict,
    /// A record with the same identity (primary key or unique column) already exists:
    /// running the operation again fails the same way.
    #[error("already exists")]
    AlreadyExists,
    /// The write breaks a rule of the stored data (a reference to a missing record, a
    /// check, a not-null column, an append-only guard): it does not fit the current state
    /// and running it again fails the same way. Carries the constraint's description for
    /// the logs (names of tables and constraints, never values).
    #[error("constraint violated: {0}")]
    ConstraintViolated(String),
    /// The record asked for does not exist.
    #[error("not found")]
    NotFound,
    /// The database could not be reached or refused the operation.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// A private key sealed under a KEK: the version of the KEK that sealed it (unwrapping
/// picks that version from the keyring) and `nonce ‖ ciphertext ‖ tag`, opaque to the
/// store.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub kek_version: KekVersion,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WrappedKey(kek {}, {} bytes)",
            self.kek_version,
            self.sealed.len()
        )
    }
}

/// A signing key as stored: its public schedule and, while it may still sign, its wrapped
/// private key (dropped once the key retires or is revoked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    pub schedule: KeySchedule,
    pub wrapped_private: Option<WrappedKey>,
}

/// Every key of one set, with the set's generation (bumped by every commit to the set).
#[derive(Clone, Debug, Default)]
pub struct KeySetState {
    pub generation: i64,
    pub keys: Vec<StoredKey>,
}

/// One write to a key row.
#[derive(Clone, Debug)]
pub enum KeyWrite {
    /// A new key.
    Insert(StoredKey),
    /// Replaces the schedule columns and the wrapped private key of an existing key.
    Update(StoredKey),
}

/// A set of key writes applied in one transaction, together with the bundle changes they
/// publish and their audit entries.
///
/// The commit succeeds only if the set's generation is still `expected_generation`
/// (optimistic concurrency: of two replicas planning the same scheduled rotation, exactly
/// one commits; the other gets [`StoreError::Conflict`], re-reads and finds nothing due).
#[derive(Clone, Debug)]
pub struct KeyCommit {
    pub key_set: KeySetName,
    pub expected_generation: i64,
    pub writes: Vec<KeyWrite>,
    pub changes: Vec<BundleChange>,
    pub audit: Vec<AuditEntry>,
    pub at: UnixMillis,
}

/// A caller of the issuer (API client). Its credential is stored only as a hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: ClientId,
    pub name: String,
    pub scopes: Vec<String>,
    /// Tenants it may act on; empty means every tenant.
    pub tenants: Vec<String>,
    /// The kind its credential was issued as: `IssuerCaller` (`tbc_`), or `ApiKey`
    /// (`tbk_`) for clients created before caller credentials had their own prefix. Only
    /// this prefix authenticates the client.
    pub credential_kind: CredentialKind,
    /// HMAC-SHA256(pepper, secret) under the pepper of `pepper_version`.
    pub secret_hash: Vec<u8>,
    pub pepper_version: PepperVersion,
    pub created_at: UnixMillis,
    pub disabled_at: Option<UnixMillis>,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("tenants", &self.tenants)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

/// The storage trait. Every multi-row write is one transaction inside the backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Returns the backend name (`sqlite`, `postgres`) for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Returns the signal poked whenever any replica commits an event (local commits
    /// directly; PostgreSQL also through LISTEN/NOTIFY from other replicas).
    fn change_signal(&self) -> Arc<Notify>;

    // === keys ===

    /// Returns every key of `key_set` (any state) and the set's generation.
    async fn key_set(&self, key_set: KeySetName) -> Result<KeySetState, StoreError>;

    /// Applies `commit` atomically: key writes, one event per change (consecutive
    /// revisions, in order), audit entries; bumps the set's generation. Returns the
    /// revision of the last event (or the current revision when there is none).
    async fn commit_keys(&self, commit: KeyCommit) -> Result<Revision, StoreError>;

    // === events (the change log behind the trust-bundle stream) ===

    /// Appends `changes` as events in one transaction; returns the last revision.
    async fn append_events(
        &self,
        changes: Vec<BundleChange>,
        at: UnixMillis,
    ) -> Result<Revision, StoreError>;

    /// Returns up to `limit` events with revision > `after`, ascending. Revisions are
    /// committed in order, so a reader never sees revision n+1 before n.
    async fn events_after(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<BundleEvent>, StoreError>;

    /// Returns the newest revision (0 when the log is empty).
    async fn latest_revision(&self) -> Result<Revision, StoreError>;

    /// Returns the oldest revision still retained (0 when the log is empty).
    async fn oldest_revision(&self) -> Result<Revision, StoreError>;

    /// Deletes events with revision < `before`; returns how many went.
    async fn prune_events(&self, before: Revision) -> Result<u64, StoreError>;

    // === audit log (append-only, hash-chained) ===

    /// Appends `entry`, chaining it to the previous event's hash
    /// ([`AuditRecord::following`]).
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError>;

    /// Returns up to `limit` events with seq < `before_seq` (all when `None`), newest first.
    async fn audit_page(
        &self,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Returns up to `limit` events with seq > `after_seq`, oldest first (for verification).
    async fn audit_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    // === API clients ===

    /// Inserts a client and its audit entry; `AlreadyExists` if the id exists.
    async fn insert_client(
        &self,
        client: ClientRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;

    /// Returns one client.
    async fn client(&self, client_id: &ClientId) -> Result<Option<ClientRecord>, StoreError>;

    /// Returns every client, oldest first.
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;

    /// Disables a client; `NotFound` if it does not exist. Idempotent.
    async fn disable_client(
        &self,
        client_id: &ClientId,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;

    // === metadata ===

    /// Returns a metadata value (KEK check value, pepper, …).
    async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `value` under `name` unless a value exists; returns the value now stored.
    async fn put_meta_if_absent(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError>;
}
