//! Short-lived opaque tokens (DESIGN §4): `tbs_` service tokens (see `service_tokens.rs`)
//! and `tbw_` webhook tokens, one model over one table. This module holds what both kinds
//! share: validation, revocation, the expiry sweep, and issuing webhook tokens.
//!
//! A token is `tbs_<id>_<secret><checksum>` (or `tbw_…`) with a 256-bit secret, stored
//! only as HMAC-SHA256 under the current pepper (`credentials.rs`). Validation parses and
//! checks the checksum before anything else (a typo or forgery never reaches the
//! database), looks the record up by the id the token carries, compares the secret in
//! constant time under the record's pepper version, and only then judges the record: a
//! token of a tenant the caller may not see is answered exactly like an unknown one.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::bundle::{CredentialChange, StandingKind};
use tessera_common::credential::{
    Credential, CredentialError, CredentialKind, MAX_CREDENTIAL_BYTES, PepperVersion,
};
use tessera_common::ids::TenantId;
use tessera_common::limits::{MAX_ID_BYTES, MAX_LIST_ENTRIES, MAX_LIST_ENTRY_BYTES, check_text};
use tessera_common::{Clock, UnixMillis};
use tracing::info;

use crate::audit::{Actor, AuditAction, AuditEntry};
use crate::credentials::{CredentialRecord, Credentials};
use crate::keyring::KeyringError;
use crate::store::{
    OpaqueTokenKind, OpaqueTokenRecord, OpaqueTokenState, OpaqueTokenStore, StoreError,
};

/// Lifetime of a webhook token issued without one.
pub const DEFAULT_WEBHOOK_TTL: Duration = Duration::from_secs(3600);
/// Shortest lifetime of any opaque token.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime of any opaque token (24 h).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest webhook endpoint name, in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 128;
/// Longest role, in bytes.
pub const MAX_ROLE_BYTES: usize = 128;
/// Longest holder name, in bytes.
pub const MAX_HOLDER_BYTES: usize = 128;
/// Rows are kept this long past their expiry (so a late presentation is still `EXPIRED`,
/// not `UNKNOWN`), then deleted by the sweep so the table does not grow without bound.
pub const EXPIRED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// A holder should ask for a successor once this share of a token's life has passed.
const RENEW_PERCENT: i64 = 80;

/// Why a token was refused, as the caller learns it. A wrong secret, an unknown id and a
/// token of another tenant are all `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the shape of a `tbs_` or `tbw_` token.
    Malformed,
    /// The shape of one whose checksum does not match (a typo or a forgery).
    BadChecksum,
    Unknown,
    Revoked,
    Expired,
    /// Lacks a required permission or role, or is for another subject.
    InsufficientPermissions,
}

/// Why an opaque-token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpaqueTokenError {
    /// A request field is out of bounds; names the field.
    #[error("{field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// No such identity or token, or one of a tenant the caller may not see.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The identity's name is taken in its tenant.
    #[error("a service identity of that name exists in the tenant")]
    AlreadyExists,
    /// The operation does not fit the object's state (disabled identity, dead token).
    #[error("{0}")]
    FailedPrecondition(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> OpaqueTokenError {
    OpaqueTokenError::InvalidArgument {
        field,
        message: message.into(),
    }
}

impl CredentialRecord for OpaqueTokenRecord {
    fn accepts(&self, kind: CredentialKind) -> bool {
        kind == credential_kind(self.kind)
    }

    fn pepper_version(&self) -> PepperVersion {
        self.pepper_version
    }

    fn secret_hash(&self) -> &[u8] {
        &self.secret_hash
    }
}

/// Returns the credential prefix of a token kind.
pub fn credential_kind(kind: OpaqueTokenKind) -> CredentialKind {
    match kind {
        OpaqueTokenKind::Service => CredentialKind::Service,
        OpaqueTokenKind::Webhook => CredentialKind::Webhook,
    }
}

/// A webhook token to issue.
#[derive(Clone, Debug)]
pub struct NewWebhookToken {
    pub tenant_id: TenantId,
    pub endpoint: String,
    pub permissions: Vec<String>,
    /// `None` for [`DEFAULT_WEBHOOK_TTL`].
    pub ttl: Option<Duration>,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepPass {
    /// Active tokens past expiry marked `expired`.
    pub expired: u64,
    /// Rows deleted, [`EXPIRED_RETENTION`] past their expiry.
    pub deleted: u64,
}

/// Service identities and opaque tokens over their store.
pub struct OpaqueTokens {
    pub(crate) store: Arc<dyn OpaqueTokenStore>,
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl OpaqueTokens {
    pub fn new(
        store: Arc<dyn OpaqueTokenStore>,
        credentials: Arc<Credentials>,
        clock: Arc<dyn Clock>,
    ) -> OpaqueTokens {
        OpaqueTokens {
            store,
            credentials,
            clock,
        }
    }

    /// Returns the current time.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Returns token `token_id` of `kind` when `visible` admits its tenant; `NotFound`
    /// otherwise.
    pub async fn get(
        &self,
        kind: OpaqueTokenKind,
        token_id: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<OpaqueTokenRecord, OpaqueTokenError> {
        if token_id.is_empty() || token_id.len() > MAX_ID_BYTES {
            return Err(OpaqueTokenError::NotFound("token"));
        }
        match self.store.opaque_token(token_id).await? {
            Some(record) if record.kind == kind && visible(record.tenant_id.as_str()) => Ok(record),
            _ => Err(OpaqueTokenError::NotFound("token")),
        }
    }

    /// Issues a webhook token; returns its record and the token (show it once).
    pub async fn issue_webhook(
        &self,
        actor: &Actor,
        new: NewWebhookToken,
    ) -> Result<(OpaqueTokenRecord, Credential), OpaqueTokenError> {
        if new.endpoint.is_empty() {
            return Err(invalid("endpoint", "must not be empty"));
        }
        check_text("endpoint", &new.endpoint, MAX_ENDPOINT_BYTES)
            .map_err(|error| invalid("endpoint", error.to_string()))?;
        check_permissions(&new.permissions)?;
        let ttl = check_ttl("ttl_seconds", new.ttl.unwrap_or(DEFAULT_WEBHOOK_TTL))?;
        let now = self.now();
        let (credential, hashed) = self.credentials.issue(CredentialKind::Webhook)?;
        let record = OpaqueTokenRecord {
            token_id: credential.id.clone(),
            kind: OpaqueTokenKind::Webhook,
            tenant_id: new.tenant_id,
            subject: new.endpoint,
            permissions: new.permissions,
            role: String::new(),
            secret_hash: hashed.hash,
            pepper_version: hashed.pepper_version,
            issued_at: now,
            expires_at: now.plus(ttl),
            state: OpaqueTokenState::Active,
            state_at: None,
            replaces: None,
            holder: String::new(),
        };
        let audit = actor.entry(now, AuditAction::WebhookTokenIssue, audit_target(&record));
        self.store
            .insert_webhook_token(record.clone(), audit)
            .await?;
        metrics::counter!("tessera_token_generation_total", "method" => "webhook").increment(1);
        Ok((record, credential))
    }

    /// Revokes token `token_id` of `kind` at once, audited and pushed to verifiers;
    /// `FailedPrecondition` when it is no longer active.
    pub async fn revoke(
        &self,
        actor: &Actor,
        kind: OpaqueTokenKind,
        token_id: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<OpaqueTokenRecord, OpaqueTokenError> {
        let record = self.get(kind, token_id, &visible).await?;
        let now = self.now();
        let action = match kind {
            OpaqueTokenKind::Service => AuditAction::ServiceTokenRevoke,
            OpaqueTokenKind::Webhook => AuditAction::WebhookTokenRevoke,
        };
        let audit = actor.entry(now, action, audit_target(&record));
        if !self
            .store
            .revoke_opaque_token(&record.token_id, now, audit, change_of(&record, "revoked"))
            .await?
        {
            return Err(OpaqueTokenError::FailedPrecondition(
                "the token is no longer active",
            ));
        }
        metrics::counter!("tessera_token_invalidation_total", "reason" => revocation_reason(kind))
            .increment(1);
        info!(token_id = %record.token_id, kind = kind.as_str(), "opaque token revoked");
        self.get(kind, token_id, |_| true).await
    }

    /// Validates `text` as a `tbs_` or `tbw_` token holding every one of
    /// `required_permissions`, `required_role` (when not empty) and `required_subject`
    /// (when not empty). A token whose tenant `visible` does not admit is `Unknown`.
    pub async fn validate(
        &self,
        text: &str,
        required_permissions: &[String],
        required_role: &str,
        required_subject: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Result<OpaqueTokenRecord, Refusal>, OpaqueTokenError> {
        // Shape and checksum first: a typo or forgery costs no database read.
        let presented = match Credential::parse(text.trim()) {
            Ok(credential)
                if matches!(
                    credential.kind,
                    CredentialKind::Service | CredentialKind::Webhook
                ) =>
            {
                credential
            }
            Ok(_) | Err(CredentialError::Malformed) => return Ok(Err(Refusal::Malformed)),
            Err(CredentialError::BadChecksum) => return Ok(Err(Refusal::BadChecksum)),
        };
        let Some(record) = self.store.opaque_token(&presented.id).await? else {
            return Ok(Err(Refusal::Unknown));
        };
        // The secret is checked whatever the tenant, so both refusals cost the same.
        let secret_matches = self.credentials.verify(&presented, &record).await;
        if !secret_matches || !visible(record.tenant_id.as_str()) {
            return Ok(Err(Refusal::Unknown));
        }
        let now = self.now();
        match record.state {
            OpaqueTokenState::Revoked => return Ok(Err(Refusal::Revoked)),
            OpaqueTokenState::Expired => return Ok(Err(Refusal::Expired)),
            OpaqueTokenState::Active if record.expires_at <= now => {
                return Ok(Err(Refusal::Expired));
            }
            OpaqueTokenState::Active => {}
        }
        let has_permissions = required_permissions
            .iter()
            .all(|required| record.permissions.contains(required));
        if !has_permissions
            || (!required_role.is_empty() && required_role != record.role)
            || (!required_subject.is_empty() && required_subject != record.subject)
        {
            return Ok(Err(Refusal::InsufficientPermissions));
        }
        Ok(Ok(record))
    }

    /// One sweep at the current time: active tokens past expiry become `expired` (no
    /// event: every verifier already refuses them by their expiry), and rows
    /// [`EXPIRED_RETENTION`] past their expiry are deleted.
    pub async fn sweep(&self) -> Result<SweepPass, StoreError> {
        let now = self.now();
        let delete_until = UnixMillis(now.0.saturating_sub(duration_ms(EXPIRED_RETENTION)));
        let (expired, deleted) = self.store.sweep_opaque_tokens(now, delete_until).await?;
        if expired > 0 || deleted > 0 {
            info!(expired, deleted, "opaque token sweep");
        }
        Ok(SweepPass { expired, deleted })
    }
}

/// Returns the state a caller is told a token is in at `now` (an active token past its
/// expiry that the sweep has not marked yet is already `expired`).
pub fn state_name(record: &OpaqueTokenRecord, now: UnixMillis) -> &'static str {
    match record.state {
        OpaqueTokenState::Active if record.expires_at <= now => "expired",
        state => state.as_str(),
    }
}

/// Returns when a holder should ask for a successor: [`RENEW_PERCENT`] of the way from
/// issuance to expiry.
pub fn renew_at(record: &OpaqueTokenRecord) -> UnixMillis {
    let life = record.expires_at.0.saturating_sub(record.issued_at.0);
    UnixMillis(record.issued_at.0 + life * RENEW_PERCENT / 100)
}

/// The event a verifier learns a token's new `state` from (public fields only).
pub(crate) fn change_of(record: &OpaqueTokenRecord, state: &str) -> CredentialChange {
    CredentialChange {
        kind: match record.kind {
            OpaqueTokenKind::Service => StandingKind::ServiceToken,
            OpaqueTokenKind::Webhook => StandingKind::WebhookToken,
        },
        credential_id: record.token_id.clone(),
        tenant_id: record.tenant_id.as_str().to_owned(),
        state: state.to_owned(),
        grace_until: None,
        expires_at: record.expires_at,
    }
}

/// The audit target of a token: its kind, tenant, subject and public id (never the
/// token or its hash).
pub(crate) fn audit_target(record: &OpaqueTokenRecord) -> String {
    format!(
        "{}token:{}/{}/{}",
        record.kind.as_str(),
        record.tenant_id,
        record.subject,
        record.token_id
    )
}

/// The audit entry and event of a token revoked by its identity's disabling.
pub(crate) fn revoked_with_identity(
    actor: &Actor,
    at: UnixMillis,
    record: &OpaqueTokenRecord,
) -> (CredentialChange, AuditEntry) {
    (
        change_of(record, "revoked"),
        actor.entry(at, AuditAction::ServiceTokenRevoke, audit_target(record)),
    )
}

pub(crate) fn revocation_reason(kind: OpaqueTokenKind) -> &'static str {
    match kind {
        OpaqueTokenKind::Service => "service_token",
        OpaqueTokenKind::Webhook => "webhook_token",
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Checks a token lifetime against [`MIN_TTL`]..=[`MAX_TTL`].
pub(crate) fn check_ttl(field: &'static str, ttl: Duration) -> Result<Duration, OpaqueTokenError> {
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(invalid(
            field,
            format!(
                "must be between {} and {} seconds",
                MIN_TTL.as_secs(),
                MAX_TTL.as_secs()
            ),
        ));
    }
    Ok(ttl)
}

/// Checks a list of permissions (also the required ones of a validation).
pub fn check_permissions(permissions: &[String]) -> Result<(), OpaqueTokenError> {
    if permissions.len() > MAX_LIST_ENTRIES {
        return Err(invalid(
            "permissions",
            format!("at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    for permission in permissions {
        if permission.is_empty() {
            return Err(invalid("permissions", "entries must not be empty"));
        }
        check_text("permissions", permission, MAX_LIST_ENTRY_BYTES)
            .map_err(|error| invalid("permissions", error.to_string()))?;
    }
    Ok(())
}

/// Checks a role (of an identity, or required by a validation).
pub fn check_role(role: &str) -> Result<(), OpaqueTokenError> {
    check_text("role", role, MAX_ROLE_BYTES).map_err(|error| invalid("role", error.to_string()))
}

/// Checks the bounds of a validation request before anything is looked up.
pub fn check_validation_request(
    token: &str,
    required_permissions: &[String],
    required_role: &str,
    required_subject: &str,
) -> Result<(), OpaqueTokenError> {
    if token.len() > MAX_CREDENTIAL_BYTES {
        return Err(invalid(
            "token",
            format!("at most {MAX_CREDENTIAL_BYTES} bytes"),
        ));
    }
    check_permissions(required_permissions).map_err(|_| {
        invalid(
            "required_permissions",
            format!("at most {MAX_LIST_ENTRIES} entries of at most {MAX_LIST_ENTRY_BYTES} bytes"),
        )
    })?;
    check_role(required_role).map_err(|_| invalid("required_role", "too long or not printable"))?;
    check_text("required_subject", required_subject, MAX_ENDPOINT_BYTES)
        .map_err(|error| invalid("required_subject", error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_eighty_percent_of_the_life() {
        let record = OpaqueTokenRecord {
            token_id: "t".into(),
            kind: OpaqueTokenKind::Service,
            tenant_id: TenantId::new("acme").unwrap(),
            subject: "billing".into(),
            permissions: Vec::new(),
            role: String::new(),
            secret_hash: Vec::new(),
            pepper_version: PepperVersion::FIRST,
            issued_at: UnixMillis(1_000),
            expires_at: UnixMillis(11_000),
            state: OpaqueTokenState::Active,
            state_at: None,
            replaces: None,
            holder: String::new(),
        };
        assert_eq!(renew_at(&record), UnixMillis(9_000));
        assert_eq!(state_name(&record, UnixMillis(10_999)), "active");
        assert_eq!(state_name(&record, UnixMillis(11_000)), "expired");
        assert!(!format!("{record:?}").contains("secret_hash"));
    }

    #[test]
    fn lifetimes_out_of_bounds_are_refused() {
        assert!(check_ttl("ttl", Duration::from_secs(59)).is_err());
        assert!(check_ttl("ttl", Duration::from_secs(86_401)).is_err());
        assert!(check_ttl("ttl", Duration::from_secs(60)).is_ok());
        assert!(check_ttl("ttl", Duration::from_secs(86_400)).is_ok());
    }
}
