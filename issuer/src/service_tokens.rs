//! Service identities and their `tbs_` tokens (DESIGN §4: 24 h, auto-rotated without
//! grace). An identity is a named workload of a tenant whose tokens carry its permissions
//! and role; a token lives the identity's `token_ttl_seconds` (60 s to 24 h).
//!
//! Rotation is two steps so a holder is never without a working token: it asks for a
//! successor naming the token it holds (`replaces`, which must be a live token of the same
//! identity) once 80 % of that token's life has passed, installs it, then confirms it.
//! The confirmation revokes the predecessor by a conditional write: of concurrent
//! confirmations (on any replica) exactly one revokes it, pushes the change to verifiers
//! and writes the `service.token.rotated` audit entry; the others, and any repeat, find
//! nothing left to revoke. A holder that dies between the steps leaves its predecessor
//! to expire on its own.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::credential::{Credential, CredentialKind};
use tessera_common::ids::TenantId;
use tessera_common::limits::{MAX_ID_BYTES, check_text};
use tracing::info;

use crate::audit::{Actor, AuditAction};
use crate::opaque_tokens::{
    MAX_HOLDER_BYTES, OpaqueTokenError, OpaqueTokens, audit_target, change_of, check_permissions,
    check_role, check_ttl, invalid, revocation_reason, revoked_with_identity,
};
use crate::store::{
    OpaqueTokenKind, OpaqueTokenRecord, OpaqueTokenState, RevocationRecords, ServiceIdentityRecord,
    ServiceTokenInsert, StoreError,
};

/// Lifetime of the tokens of an identity created without one (24 h).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest identity name, in bytes (`[a-z0-9][a-z0-9._-]{0,62}`).
pub const MAX_NAME_BYTES: usize = 63;

/// An identity to create.
#[derive(Clone, Debug)]
pub struct NewServiceIdentity {
    pub tenant_id: TenantId,
    pub name: String,
    pub permissions: Vec<String>,
    pub role: String,
    /// `None` for [`DEFAULT_TOKEN_TTL`].
    pub token_ttl: Option<Duration>,
}

/// A service token to issue.
#[derive(Clone, Debug)]
pub struct ServiceTokenRequest {
    pub tenant_id: TenantId,
    pub service: String,
    /// The token the holder has now, revoked when the new one is confirmed.
    pub replaces: Option<String>,
    pub holder: String,
}

/// Checks an identity name: `[a-z0-9][a-z0-9._-]{0,62}`.
pub fn check_name(name: &str) -> Result<(), OpaqueTokenError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !first_ok || !rest_ok || name.len() > MAX_NAME_BYTES {
        return Err(invalid("name", "must match [a-z0-9][a-z0-9._-]{0,62}"));
    }
    Ok(())
}

impl OpaqueTokens {
    /// Creates a service identity (audited `service.identity.created`).
    pub async fn create_identity(
        &self,
        actor: &Actor,
        new: NewServiceIdentity,
    ) -> Result<ServiceIdentityRecord, OpaqueTokenError> {
        check_name(&new.name)?;
        check_permissions(&new.permissions)?;
        check_role(&new.role)?;
        let ttl = check_ttl(
            "token_ttl_seconds",
            new.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL),
        )?;
        let now = self.now();
        let identity = ServiceIdentityRecord {
            tenant_id: new.tenant_id,
            name: new.name,
            permissions: new.permissions,
            role: new.role,
            token_ttl_seconds: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            created_at: now,
            disabled_at: None,
        };
        let audit = actor.entry(
            now,
            AuditAction::ServiceIdentityCreate,
            identity_target(&identity.tenant_id, &identity.name),
        );
        match self
            .store
            .insert_service_identity(identity.clone(), audit)
            .await
        {
            Ok(()) => Ok(identity),
            Err(StoreError::AlreadyExists) => Err(OpaqueTokenError::AlreadyExists),
            Err(error) => Err(error.into()),
        }
    }

    /// Returns the identities of `tenant_id` (every tenant's when `None`) that `visible`
    /// admits.
    pub async fn list_identities(
        &self,
        tenant_id: Option<&TenantId>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Vec<ServiceIdentityRecord>, OpaqueTokenError> {
        let mut identities = self.store.list_service_identities(tenant_id).await?;
        identities.retain(|identity| visible(identity.tenant_id.as_str()));
        Ok(identities)
    }

    /// Disables an identity and revokes its live tokens at once, in one transaction
    /// (each revoked token audited and pushed). Disabling a disabled identity changes
    /// nothing and answers it as it is.
    pub async fn disable_identity(
        &self,
        actor: &Actor,
        tenant_id: &TenantId,
        name: &str,
    ) -> Result<(ServiceIdentityRecord, Vec<String>), OpaqueTokenError> {
        let identity = self.identity(tenant_id, name).await?;
        if identity.disabled_at.is_some() {
            return Ok((identity, Vec::new()));
        }
        let now = self.now();
        let audit = actor.entry(
            now,
            AuditAction::ServiceIdentityDisable,
            identity_target(tenant_id, name),
        );
        let token_actor = actor.with_reason(format!(
            "service identity {name} disabled{}",
            if actor.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", actor.reason)
            }
        ));
        let records: RevocationRecords =
            Arc::new(move |token| revoked_with_identity(&token_actor, now, token));
        let revoked = self
            .store
            .disable_service_identity(tenant_id, name, now, audit, records)
            .await?
            .unwrap_or_default();
        if !revoked.is_empty() {
            metrics::counter!("tessera_token_invalidation_total", "reason" => "service_identity_disabled")
                .increment(revoked.len() as u64);
        }
        info!(tenant = %tenant_id, service = name, revoked = revoked.len(), "service identity disabled");
        Ok((self.identity(tenant_id, name).await?, revoked))
    }

    /// Returns one identity; `NotFound` when it does not exist.
    pub async fn identity(
        &self,
        tenant_id: &TenantId,
        name: &str,
    ) -> Result<ServiceIdentityRecord, OpaqueTokenError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(OpaqueTokenError::NotFound("service identity"));
        }
        self.store
            .service_identity(tenant_id, name)
            .await?
            .ok_or(OpaqueTokenError::NotFound("service identity"))
    }

    /// Issues a token for an enabled identity (audited `service.token.issued`); returns
    /// its record and the token (show it once).
    pub async fn issue_service(
        &self,
        actor: &Actor,
        request: ServiceTokenRequest,
    ) -> Result<(OpaqueTokenRecord, Credential), OpaqueTokenError> {
        check_text("holder", &request.holder, MAX_HOLDER_BYTES)
            .map_err(|error| invalid("holder", error.to_string()))?;
        if let Some(replaces) = &request.replaces
            && replaces.len() > MAX_ID_BYTES
        {
            return Err(invalid("replaces", format!("at most {MAX_ID_BYTES} bytes")));
        }
        let identity = self.identity(&request.tenant_id, &request.service).await?;
        if identity.disabled_at.is_some() {
            return Err(OpaqueTokenError::FailedPrecondition(
                "the service identity is disabled",
            ));
        }
        let now = self.now();
        let (credential, hashed) = self.credentials.issue(CredentialKind::Service)?;
        let record = OpaqueTokenRecord {
            token_id: credential.id.clone(),
            kind: OpaqueTokenKind::Service,
            tenant_id: identity.tenant_id,
            subject: identity.name,
            permissions: identity.permissions,
            role: identity.role,
            secret_hash: hashed.hash,
            pepper_version: hashed.pepper_version,
            issued_at: now,
            expires_at: now.plus(Duration::from_secs(u64::from(identity.token_ttl_seconds))),
            state: OpaqueTokenState::Active,
            state_at: None,
            replaces: request.replaces,
            holder: request.holder,
        };
        let audit = actor
            .with_reason(format!(
                "holder {:?}{}",
                record.holder,
                record
                    .replaces
                    .as_deref()
                    .map(|id| format!(", replaces {id}"))
                    .unwrap_or_default()
            ))
            .entry(now, AuditAction::ServiceTokenIssue, audit_target(&record));
        match self
            .store
            .insert_service_token(record.clone(), audit)
            .await?
        {
            ServiceTokenInsert::Inserted => {}
            ServiceTokenInsert::NoIdentity => {
                return Err(OpaqueTokenError::NotFound("service identity"));
            }
            ServiceTokenInsert::Disabled => {
                return Err(OpaqueTokenError::FailedPrecondition(
                    "the service identity is disabled",
                ));
            }
            ServiceTokenInsert::ReplacesNotLive => {
                return Err(OpaqueTokenError::FailedPrecondition(
                    "`replaces` is not a live token of this service identity",
                ));
            }
        }
        metrics::counter!("tessera_token_generation_total", "method" => "service").increment(1);
        Ok((record, credential))
    }

    /// Confirms that the holder installed token `token_id` (which must be live):
    /// revokes the token it replaces if that is still active. Returns the revoked predecessor's id, or `None`
    /// when there was nothing left to revoke (no predecessor, already confirmed, or a
    /// concurrent confirmation won).
    pub async fn confirm_service(
        &self,
        actor: &Actor,
        token_id: &str,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, OpaqueTokenError> {
        let token = self
            .get(OpaqueTokenKind::Service, token_id, &visible)
            .await?;
        // A holder confirms the token it installed; a dead one must not take down the
        // predecessor the holder still relies on.
        if token.state != OpaqueTokenState::Active || token.expires_at <= self.now() {
            return Err(OpaqueTokenError::FailedPrecondition(
                "the confirmed token is no longer active",
            ));
        }
        let Some(predecessor_id) = token.replaces.as_deref() else {
            return Ok(None);
        };
        let Some(predecessor) = self.store.opaque_token(predecessor_id).await? else {
            return Ok(None);
        };
        if predecessor.state != OpaqueTokenState::Active {
            return Ok(None);
        }
        let now = self.now();
        let audit = actor
            .with_reason(format!("successor {}", token.token_id))
            .entry(
                now,
                AuditAction::ServiceTokenRotate,
                audit_target(&predecessor),
            );
        if !self
            .store
            .revoke_opaque_token(
                &predecessor.token_id,
                now,
                audit,
                change_of(&predecessor, "revoked"),
            )
            .await?
        {
            return Ok(None);
        }
        metrics::counter!("tessera_token_invalidation_total", "reason" => revocation_reason(OpaqueTokenKind::Service))
            .increment(1);
        info!(predecessor = %predecessor.token_id, successor = %token.token_id, "service token rotated");
        Ok(Some(predecessor.token_id))
    }
}

/// Returns the audit target of an identity.
fn identity_target(tenant_id: &TenantId, name: &str) -> String {
    format!("service:{tenant_id}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_follow_their_pattern() {
        for good in ["billing", "a", "mail-er.v2_x", &"a".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Billing", "-x", ".x", "a b", "é", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
