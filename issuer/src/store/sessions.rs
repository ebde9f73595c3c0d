//! The session aggregate's storage contract: sessions, rotating refresh tokens and
//! revocation entries. Implemented by both backends next to `Store`, covered by the same
//! conformance suite.

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::bundle::Revision;
use tessera_common::credential::PepperVersion;
use tessera_common::ids::{SessionId, Subject, TenantId};
use tessera_common::revocation::RevocationEntry;

use super::{AuditEntry, EmergencyCommit, EmergencyCommitted, StoreError};

/// A login session. Access tokens minted on refresh reuse `claims_template`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: SessionId,
    pub tenant_id: TenantId,
    pub subject: Subject,
    /// The refresh-token family of this session (one family per login).
    pub family_id: String,
    pub created_at: UnixMillis,
    /// Absolute end of the session, if it has one.
    pub expires_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    /// JSON of the non-secret claims to put in access tokens (role, permissions, …).
    pub claims_template: String,
}

/// Where a refresh token stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshState {
    /// The current token of its family.
    Active,
    /// Exchanged at `at` for `successor_id`.
    Rotated {
        at: UnixMillis,
        successor_id: String,
    },
    /// Revoked (logout, reuse, emergency) at `at`.
    Revoked { at: UnixMillis },
}

/// A refresh token as stored: its secret only as an HMAC hash.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    /// The public id embedded in the token (`tbf_<id>_…`).
    pub token_id: String,
    pub family_id: String,
    pub session_id: SessionId,
    pub tenant_id: TenantId,
    /// The token this one replaced; `None` for the first of a family.
    pub parent_id: Option<String>,
    /// HMAC-SHA256(pepper, secret) under the pepper of `pepper_version`.
    pub secret_hash: Vec<u8>,
    pub pepper_version: PepperVersion,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub state: RefreshState,
}

impl std::fmt::Debug for RefreshTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokenRecord")
            .field("token_id", &self.token_id)
            .field("family_id", &self.family_id)
            .field("session_id", &self.session_id)
            .field("parent_id", &self.parent_id)
            .field("expires_at", &self.expires_at)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Sessions a revocation ends (their refresh tokens are revoked with them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationEffect {
    /// One session, only if it belongs to `tenant_id`: the tenant is part of the selector,
    /// so naming another tenant's session id changes nothing of that tenant.
    Session {
        tenant_id: TenantId,
        session_id: SessionId,
    },
    /// The session owning a refresh family, only if it belongs to `tenant_id`.
    Family {
        tenant_id: TenantId,
        family_id: String,
    },
    /// Every session of a user, within one tenant or (None) every tenant.
    User {
        tenant_id: Option<TenantId>,
        subject: Subject,
    },
    /// Every session of a tenant.
    Tenant(TenantId),
    /// Every session.
    All,
}

/// One revocation, written in one transaction by [`SessionStore::revoke`]: the entries
/// to store and publish, the sessions they end, and their audit entries.
#[derive(Clone, Debug)]
pub struct Revocation {
    pub entries: Vec<RevocationEntry>,
    pub effects: Vec<RevocationEffect>,
    pub audit: Vec<AuditEntry>,
    pub at: UnixMillis,
}

/// A presented refresh token with its session and, once rotated, its successor.
#[derive(Clone, Debug)]
pub struct RefreshContext {
    pub token: RefreshTokenRecord,
    pub session: SessionRecord,
    pub successor: Option<RefreshTokenRecord>,
}

/// The session aggregate's storage.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a session and its first refresh token (and the audit entry) atomically.
    async fn create_session(
        &self,
        session: SessionRecord,
        first_token: RefreshTokenRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;

    /// Returns one session.
    async fn session(&self, session_id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Returns the session owning refresh family `family_id` (one family per session).
    async fn session_of_family(&self, family_id: &str)
    -> Result<Option<SessionRecord>, StoreError>;

    /// Returns one refresh token by its public id.
    async fn refresh_token(&self, token_id: &str)
    -> Result<Option<RefreshTokenRecord>, StoreError>;

    /// Returns what a refresh decision reads: the token, its session and, once the token
    /// was rotated, its successor; `None` when the token or its session is unknown. The
    /// default makes up to three reads; a networked store answers in one round trip.
    async fn refresh_context(&self, token_id: &str) -> Result<Option<RefreshContext>, StoreError> {
        let Some(token) = self.refresh_token(token_id).await? else {
            return Ok(None);
        };
        let Some(session) = self.session(&token.session_id).await? else {
            return Ok(None);
        };
        let successor = match &token.state {
            RefreshState::Rotated { successor_id, .. } => self.refresh_token(successor_id).await?,
            _ => None,
        };
        Ok(Some(RefreshContext {
            token,
            session,
            successor,
        }))
    }

    /// Exchanges `old_token_id` for `successor` in one transaction, by a conditional
    /// write: marks the old token `Rotated { at, successor_id }` only if it is still
    /// `Active` (and its session not revoked), then inserts `successor`. Returns `false`,
    /// writing nothing, when the old token was no longer active — of any number of
    /// concurrent callers on any replica, exactly one gets `true`.
    async fn rotate_refresh_token(
        &self,
        old_token_id: &str,
        successor: RefreshTokenRecord,
        at: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// In one transaction: ends the sessions selected by `revocation.effects` (sets
    /// `revoked_at`, revokes their active and rotated refresh tokens), stores its entries,
    /// appends one `RevocationAdded` event per entry (consecutive revisions) and the audit
    /// entries. Returns the last revision and the number of sessions newly revoked.
    async fn revoke(&self, revocation: Revocation) -> Result<(Revision, u64), StoreError>;

    /// In one transaction: records `commit.incident` — or, when it is already recorded,
    /// writes nothing and returns [`EmergencyCommitted::AlreadyRecorded`] — then applies
    /// every key commit (as [`super::Store::commit_keys`]; a stale generation fails the
    /// whole commit with `Conflict`) and the revocation (as [`SessionStore::revoke`]). A
    /// failure anywhere leaves nothing, the incident record included, so a retry does it
    /// all; of concurrent commits of one incident exactly one applies.
    async fn commit_emergency(
        &self,
        commit: EmergencyCommit,
    ) -> Result<EmergencyCommitted, StoreError>;

    /// Returns every stored entry with `drop_after > now`.
    async fn live_revocations(&self, now: UnixMillis) -> Result<Vec<RevocationEntry>, StoreError>;

    /// Deletes entries with `drop_after <= now` (and refresh tokens expired before
    /// `now`); returns how many entries went.
    async fn prune_revocations(&self, now: UnixMillis) -> Result<u64, StoreError>;
}
