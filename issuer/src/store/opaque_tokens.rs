//! The storage contract of service identities and of short-lived opaque tokens (`tbs_`
//! service tokens and `tbw_` webhook tokens, DESIGN §4): one table of identities, one of
//! tokens holding both kinds, each token's secret only as an HMAC under a recorded pepper
//! version. Implemented by both backends next to `Store`, covered by the same conformance
//! suite.
//!
//! Every state change is a conditional write (it happens only from the state the caller
//! saw), so of concurrent confirmations, revocations or disablings on any number of
//! replicas exactly one changes a token, and only that one writes its audit entry and its
//! event (`BundleChange::CredentialChanged`, appended before the audit entry, in the same
//! transaction).

use std::sync::Arc;

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::bundle::CredentialChange;
use tessera_common::credential::PepperVersion;
use tessera_common::ids::TenantId;

use super::{AuditEntry, StoreError};

/// Which kind of opaque token a row holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpaqueTokenKind {
    /// `tbs_`: a service identity's token.
    Service,
    /// `tbw_`: a webhook endpoint's bearer token.
    Webhook,
}

impl OpaqueTokenKind {
    /// Returns the stored (and wire) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OpaqueTokenKind::Service => "service",
            OpaqueTokenKind::Webhook => "webhook",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<OpaqueTokenKind> {
        [OpaqueTokenKind::Service, OpaqueTokenKind::Webhook]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Where a token stands. There is no grace state: a rotated-out service token is revoked
/// at once (the seed's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpaqueTokenState {
    Active,
    /// Revoked by an operator, a confirmed successor, a disabled identity or an emergency.
    Revoked,
    /// Past its expiry and marked so by the scheduler's sweep.
    Expired,
}

impl OpaqueTokenState {
    /// Returns the stored (and wire) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OpaqueTokenState::Active => "active",
            OpaqueTokenState::Revoked => "revoked",
            OpaqueTokenState::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<OpaqueTokenState> {
        [
            OpaqueTokenState::Active,
            OpaqueTokenState::Revoked,
            OpaqueTokenState::Expired,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A service identity: a named workload of a tenant whose tokens carry its permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceIdentityRecord {
    pub tenant_id: TenantId,
    pub name: String,
    pub permissions: Vec<String>,
    pub role: String,
    /// Lifetime of its tokens.
    pub token_ttl_seconds: u32,
    pub created_at: UnixMillis,
    pub disabled_at: Option<UnixMillis>,
}

/// A short-lived opaque token as stored. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueTokenRecord {
    /// The public id embedded in the token (`tbs_<id>_…`).
    pub token_id: String,
    pub kind: OpaqueTokenKind,
    pub tenant_id: TenantId,
    /// The service identity's name, or the webhook endpoint.
    pub subject: String,
    pub permissions: Vec<String>,
    pub role: String,
    /// HMAC-SHA256(pepper, secret) under the pepper of `pepper_version`.
    pub secret_hash: Vec<u8>,
    pub pepper_version: PepperVersion,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub state: OpaqueTokenState,
    /// When the state last changed.
    pub state_at: Option<UnixMillis>,
    /// The token this one replaces (service tokens), revoked when this one is confirmed.
    pub replaces: Option<String>,
    /// Free-form name of the holder (pod, host).
    pub holder: String,
}

impl std::fmt::Debug for OpaqueTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaqueTokenRecord")
            .field("token_id", &self.token_id)
            .field("kind", &self.kind)
            .field("tenant_id", &self.tenant_id)
            .field("subject", &self.subject)
            .field("state", &self.state)
            .field("expires_at", &self.expires_at)
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

/// What [`OpaqueTokenStore::insert_service_token`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceTokenInsert {
    Inserted,
    /// No identity of that name in that tenant.
    NoIdentity,
    /// The identity is disabled.
    Disabled,
    /// `replaces` names no live token of the same identity.
    ReplacesNotLive,
}

/// Builds, for each token a disabling revokes, its event and audit entry (the domain
/// decides their content; the store writes them in its transaction).
pub type RevocationRecords =
    Arc<dyn Fn(&OpaqueTokenRecord) -> (CredentialChange, AuditEntry) + Send + Sync>;

/// The service-identity and opaque-token aggregate's storage.
#[async_trait]
pub trait OpaqueTokenStore: Send + Sync + 'static {
    /// Inserts an identity and its audit entry atomically; `AlreadyExists` when the
    /// tenant has an identity of that name.
    async fn insert_service_identity(
        &self,
        identity: ServiceIdentityRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;

    /// Returns one identity.
    async fn service_identity(
        &self,
        tenant_id: &TenantId,
        name: &str,
    ) -> Result<Option<ServiceIdentityRecord>, StoreError>;

    /// Returns the identities of `tenant_id` (every tenant's when `None`), by name.
    async fn list_service_identities(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<ServiceIdentityRecord>, StoreError>;

    /// In one transaction: disables the identity (unless already disabled), revokes
    /// every active token of it at `at`, appends one event per revoked token, then
    /// `audit` and one audit entry per revoked token (both built by `records`). Returns
    /// the revoked tokens' ids, or `None`, writing nothing, when the identity does not
    /// exist or is already disabled. A token issued concurrently either commits before
    /// (and is revoked here) or sees the identity disabled.
    async fn disable_service_identity(
        &self,
        tenant_id: &TenantId,
        name: &str,
        at: UnixMillis,
        audit: AuditEntry,
        records: RevocationRecords,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// In one transaction: checks the identity `token.subject` of `token.tenant_id` is
    /// enabled and, when `token.replaces` is set, that it names an active unexpired
    /// service token of the same identity, then inserts `token` and `audit`. Writes
    /// nothing unless it answers `Inserted`.
    async fn insert_service_token(
        &self,
        token: OpaqueTokenRecord,
        audit: AuditEntry,
    ) -> Result<ServiceTokenInsert, StoreError>;

    /// Inserts a webhook token and its audit entry atomically.
    async fn insert_webhook_token(
        &self,
        token: OpaqueTokenRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;

    /// Returns one token (either kind) by its public id.
    async fn opaque_token(&self, token_id: &str) -> Result<Option<OpaqueTokenRecord>, StoreError>;

    /// Revokes `token_id` at `at` only if it is active, with `event` and `audit`;
    /// `false`, writing nothing, otherwise — of any number of concurrent callers on any
    /// replica, exactly one gets `true`.
    async fn revoke_opaque_token(
        &self,
        token_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError>;

    /// Marks active tokens whose expiry is at or before `now` as `expired`, and deletes
    /// tokens (any state) that expired at or before `delete_until`. Returns (marked,
    /// deleted).
    async fn sweep_opaque_tokens(
        &self,
        now: UnixMillis,
        delete_until: UnixMillis,
    ) -> Result<(u64, u64), StoreError>;
}
