//! The storage contract of single-use tokens (DESIGN §4 "Single-use tokens"): action
//! links (`tba_`), password-reset (`tbr_`) and email-verification (`tbe_`) tokens and the
//! confirmation tokens of two-step actions. A record holds only what consumption checks
//! (jti, tenant, user, action, resource, expiry, used/invalidated instants, kind): the
//! token itself is never stored — its signature proves what it says.
//!
//! Consumption is ONE conditional write (`… SET used_at = now WHERE jti = … AND used_at IS
//! NULL AND invalidated_at IS NULL`, rows affected checked), never read-then-write, so of
//! any number of concurrent consumers on any number of replicas exactly one succeeds.
//! The record is read only afterwards, and only to say why a refused consumption failed.
//!
//! Also here: users' recorded password changes (for `last_password_change` and session
//! revocation) and per-tenant action-link settings (base URL, lifetimes).

use std::collections::BTreeMap;

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;

use super::{AuditEntry, StoreError};

/// What a single-use record stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OneTimeKind {
    /// `tba_`: a signed action link.
    Action,
    /// `tbr_`: a password-reset token.
    Reset,
    /// `tbe_`: an email-verification token.
    Verification,
    /// The second step of a two-step action: bound to the original link (`parent_jti`).
    Confirmation,
}

impl OneTimeKind {
    /// Every kind, in a stable order.
    pub const ALL: [OneTimeKind; 4] = [
        OneTimeKind::Action,
        OneTimeKind::Reset,
        OneTimeKind::Verification,
        OneTimeKind::Confirmation,
    ];

    /// Returns the stored (and wire) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OneTimeKind::Action => "action",
            OneTimeKind::Reset => "reset",
            OneTimeKind::Verification => "verification",
            OneTimeKind::Confirmation => "confirmation",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<OneTimeKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One single-use token as stored. Holds no secret: the token is a signed JWS and only its
/// `jti` is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimeTokenRecord {
    /// The token's `jti`.
    pub jti: String,
    pub kind: OneTimeKind,
    pub tenant_id: TenantId,
    pub user_id: String,
    pub action: String,
    pub resource_id: String,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub used_at: Option<UnixMillis>,
    pub invalidated_at: Option<UnixMillis>,
    /// Why it was invalidated (`superseded`, `emergency`, …), when it was.
    pub invalidation_reason: Option<String>,
    /// For a confirmation token, the `jti` of the link it confirms.
    pub parent_jti: Option<String>,
}

/// The outcome of a consumption (the conditional write, then — only when it changed
/// nothing — a read of the record to say why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumption {
    /// This call consumed the token (and its confirmation, when one was given).
    Consumed,
    /// The token (or the confirmation token) was consumed before.
    AlreadyUsed,
    /// The token was invalidated (superseded, emergency) before it was used.
    Invalidated,
    /// No record of that jti in that tenant (never issued, another tenant's, or pruned).
    Unknown,
}

/// Says why a consumption that changed nothing failed, from the records read after the
/// write (never before it): the confirmation's state first (when one was given), then
/// the token's. A record still live although the write changed nothing did not match the
/// kind asked for, which is `Unknown` like a missing record.
pub(crate) fn explain_refusal(
    token: Option<&OneTimeTokenRecord>,
    confirmation: Option<Option<&OneTimeTokenRecord>>,
    jti: &str,
) -> Consumption {
    let spent = |record: &OneTimeTokenRecord| {
        if record.invalidated_at.is_some() {
            Some(Consumption::Invalidated)
        } else if record.used_at.is_some() {
            Some(Consumption::AlreadyUsed)
        } else {
            None
        }
    };
    if let Some(confirmation) = confirmation {
        match confirmation {
            Some(record) if record.parent_jti.as_deref() == Some(jti) => {
                if let Some(state) = spent(record) {
                    return state;
                }
            }
            _ => return Consumption::Unknown,
        }
    }
    token.and_then(spent).unwrap_or(Consumption::Unknown)
}

/// A tenant's action-link settings: the base of its links and per-action lifetimes
/// (seconds), already validated and bounded by the domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionSettingsRecord {
    pub tenant_id: TenantId,
    /// `https://app.example.com`: links are `<base_url>/actions/<action>?token=…`.
    pub base_url: String,
    /// Lifetime overrides by action name (`password_reset` and `email_verification` name
    /// the two fixed kinds).
    pub lifetimes: BTreeMap<String, u32>,
    pub updated_at: UnixMillis,
}

/// The single-use token aggregate's storage.
#[async_trait]
pub trait OneTimeTokenStore: Send + Sync + 'static {
    /// Inserts `record` (unused, not invalidated). When `supersede` is set, first marks
    /// every unused, uninvalidated record of the same kind, tenant and user as
    /// invalidated (`superseded`) at `record.issued_at`, in the same transaction; returns
    /// how many it superseded. `audit`, when given, is appended in that transaction.
    /// `AlreadyExists` when the jti exists.
    async fn insert_one_time_token(
        &self,
        record: OneTimeTokenRecord,
        supersede: bool,
        audit: Option<AuditEntry>,
    ) -> Result<u64, StoreError>;

    /// Returns one record of `tenant_id` (another tenant's is `None`).
    async fn one_time_token(
        &self,
        tenant_id: &TenantId,
        jti: &str,
    ) -> Result<Option<OneTimeTokenRecord>, StoreError>;

    /// Consumes the `kind` record `jti` of `tenant_id` at `now` by one conditional write.
    /// With `confirmation`, also consumes that confirmation record, which must be bound to
    /// `jti` (its `parent_jti`): both or neither, in one transaction. Of any number of
    /// concurrent callers on any replica, exactly one gets `Consumed`.
    async fn consume_one_time_token(
        &self,
        tenant_id: &TenantId,
        kind: OneTimeKind,
        jti: &str,
        confirmation: Option<&str>,
        now: UnixMillis,
    ) -> Result<Consumption, StoreError>;

    /// Consumes the reset record `jti` of `tenant_id` and, only if that succeeded,
    /// records that `user_id` changed their password at `now` (and `audit`), in one
    /// transaction.
    async fn complete_password_reset(
        &self,
        tenant_id: &TenantId,
        user_id: &str,
        jti: &str,
        now: UnixMillis,
        audit: AuditEntry,
    ) -> Result<Consumption, StoreError>;

    /// Returns when `user_id` of `tenant_id` last changed their password through a reset.
    async fn password_changed_at(
        &self,
        tenant_id: &TenantId,
        user_id: &str,
    ) -> Result<Option<UnixMillis>, StoreError>;

    /// Marks every unused, uninvalidated, unexpired action/reset/verification (and
    /// confirmation) record of `tenant_id` — of every tenant when `None` — as invalidated
    /// at `at` (reason `emergency`), so none can be consumed; returns how many. Used by
    /// the emergency paths.
    async fn invalidate_one_time_tokens(
        &self,
        tenant_id: Option<&str>,
        at: UnixMillis,
    ) -> Result<u64, StoreError>;

    /// Deletes records that expired at or before `expired_before` (used, invalidated or
    /// not): a token past its expiry fails its signature checks before its record is
    /// consulted, so the record has nothing left to decide. Returns how many went.
    async fn prune_one_time_tokens(&self, expired_before: UnixMillis) -> Result<u64, StoreError>;

    /// Returns the action-link settings of `tenant_id`, if any were set.
    async fn action_settings(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<ActionSettingsRecord>, StoreError>;

    /// Replaces the action-link settings of the tenant (and appends `audit`).
    async fn put_action_settings(
        &self,
        settings: ActionSettingsRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
}
