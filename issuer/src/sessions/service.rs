//! The session service: login (CreateSession), refresh with rotation and reuse detection,
//! and revocation by jti, session, user, tenant, family or all.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_common::bundle::Revision;
use tessera_common::credential::{Credential, CredentialKind};
use tessera_common::ids::{SessionId, Subject, TenantId};
use tessera_common::keys::KeySetName;
use tessera_common::revocation::{RevocationEntry, RevocationKind};
use tessera_common::{Clock, UnixMillis};
use tracing::warn;

use super::decision::{self, RefreshDecision, RefreshRejection, SessionPolicy};
use crate::audit::{Actor, AuditAction, AuditEntry, AuditOutcome};
use crate::credentials::{CredentialRecord, Credentials};
use crate::keyring::KeyringError;
use crate::keys::KeyManager;
use crate::keys::manager::KeyError;
use crate::store::{
    RefreshContext, RefreshState, RefreshTokenRecord, Revocation, RevocationEffect, SessionRecord,
    SessionStore, StoreError,
};
use crate::tokens::{self, AccessTokenRequest, IssueError, IssuedToken, TokenPolicy};

/// Attempts at a refresh before a persistent race is reported.
const MAX_REFRESH_ATTEMPTS: usize = 4;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Rejected(#[from] RefreshRejection),
    #[error("refresh token reuse detected; the session has been revoked")]
    ReuseDetected,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("stored session is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// The tokens handed to a client at login or refresh.
#[derive(Debug)]
pub struct SessionTokens {
    pub session_id: SessionId,
    pub family_id: String,
    pub access: IssuedToken,
    /// Show once; never log.
    pub refresh: Credential,
    pub refresh_expires_at: UnixMillis,
}

/// The non-secret claims a session's access tokens repeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ClaimsTemplate {
    role: String,
    permissions: Vec<String>,
    audience: Option<String>,
    mfa_verified: bool,
    features: Vec<String>,
    device_fingerprint: Option<String>,
    ip_address: Option<String>,
    last_password_change: i64,
}

/// What a revocation targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationTarget {
    Jti(String),
    Session(SessionId),
    User(Subject),
    Tenant(TenantId),
    Family(String),
    All,
}

/// A committed revocation.
#[derive(Clone, Debug)]
pub struct Revoked {
    pub revision: Revision,
    pub drop_after: UnixMillis,
    pub n_sessions: u64,
}

/// A revocation target turned into what is stored: the entry's kind, value and tenant,
/// and the sessions it ends.
struct Resolved {
    kind: RevocationKind,
    value: String,
    tenant: Option<TenantId>,
    effect: Option<RevocationEffect>,
}

/// Returns the tenant a session or family revocation is filed under: the record's own
/// tenant when it exists within `scope_tenant` (an unconfined admin need not name it),
/// otherwise `scope_tenant` itself. A session that exists only in another tenant is
/// treated exactly like one that exists nowhere: the entry is filed under the caller's
/// tenant, so it matches none of the other tenant's tokens, and the answer (no session
/// ended) tells the caller nothing. Filing an entry for an id with no record keeps
/// access tokens minted with a caller-chosen `session_id` (IssueAccessToken) revocable.
fn filing_tenant(
    session: Option<SessionRecord>,
    scope_tenant: Option<TenantId>,
) -> Option<TenantId> {
    match session {
        Some(session)
            if scope_tenant
                .as_ref()
                .is_none_or(|scope| *scope == session.tenant_id) =>
        {
            Some(session.tenant_id)
        }
        _ => scope_tenant,
    }
}

/// Sessions, refresh tokens and revocations.
pub struct SessionService {
    store: Arc<dyn SessionStore>,
    keys: Arc<KeyManager>,
    tokens: TokenPolicy,
    policy: SessionPolicy,
    /// Hashes and verifies refresh tokens; its keyring also holds, per pepper version,
    /// the key that derives successors.
    credentials: Arc<Credentials>,
    clock: Arc<dyn Clock>,
}

impl SessionService {
    /// Builds the service.
    pub fn new(
        store: Arc<dyn SessionStore>,
        keys: Arc<KeyManager>,
        tokens: TokenPolicy,
        policy: SessionPolicy,
        credentials: Arc<Credentials>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        SessionService {
            store,
            keys,
            tokens,
            policy,
            credentials,
            clock,
        }
    }

    /// Returns the session policy.
    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    /// Starts a session for `request` and returns its first tokens.
    pub async fn create(
        &self,
        request: AccessTokenRequest,
        max_session: Option<Duration>,
        actor: &Actor,
    ) -> Result<SessionTokens, SessionError> {
        let now = self.clock.now();
        let session_id = match &request.session_id {
            Some(session_id) => session_id.clone(),
            None => SessionId::new(uuid::Uuid::now_v7().to_string())
                .map_err(|error| SessionError::Corrupt(error.to_string()))?,
        };
        let family_id = uuid::Uuid::now_v7().simple().to_string();
        let template = ClaimsTemplate {
            role: request.role.clone(),
            permissions: request.permissions.clone(),
            audience: request.audience.clone(),
            mfa_verified: request.mfa_verified,
            features: request.features.clone(),
            device_fingerprint: request.device_fingerprint.clone(),
            ip_address: request.ip_address.clone(),
            last_password_change: request.last_password_change,
        };
        let session = SessionRecord {
            session_id: session_id.clone(),
            tenant_id: request.tenant_id.clone(),
            subject: request.subject.clone(),
            family_id: family_id.clone(),
            created_at: now,
            expires_at: max_session.map(|lifetime| now.plus(lifetime)),
            revoked_at: None,
            claims_template: serde_json::to_string(&template)
                .map_err(|error| SessionError::Corrupt(error.to_string()))?,
        };
        // Sign first: a login that cannot get an access token should leave no session.
        let access = self.issue_access(&session, &template, now)?;
        let refresh = Credential::generate(CredentialKind::Refresh);
        let record = self.refresh_record(&refresh, &session, None, now)?;
        let audit = actor
            .with_reason(format!(
                "tenant={} subject={}",
                session.tenant_id, session.subject
            ))
            .entry(now, AuditAction::SessionCreate, session_id.to_string());
        self.store
            .create_session(session, record.clone(), audit)
            .await?;
        Ok(SessionTokens {
            session_id,
            family_id,
            access,
            refresh,
            refresh_expires_at: record.expires_at,
        })
    }

    /// Exchanges a refresh token. On reuse the family and session are revoked (and a
    /// revocation event published) before `ReuseDetected` is returned.
    pub async fn refresh(
        &self,
        presented_text: &str,
        actor: &Actor,
    ) -> Result<SessionTokens, SessionError> {
        let presented = Credentials::parse(presented_text, &[CredentialKind::Refresh])
            .ok_or(RefreshRejection::Invalid)?;
        for _ in 0..MAX_REFRESH_ATTEMPTS {
            let now = self.clock.now();
            let RefreshContext {
                token,
                session,
                successor: successor_record,
            } = self
                .store
                .refresh_context(&presented.id)
                .await?
                .ok_or(RefreshRejection::Invalid)?;
            if !self.credentials.verify(&presented, &token).await {
                return Err(RefreshRejection::Invalid.into());
            }
            // The successor is derived with the pepper version that hashed the presented
            // token, so every exchange of it derives the same successor, whichever version
            // is current.
            let pepper = self.credentials.keyring().pepper(token.pepper_version)?;
            let successor = decision::successor_credential(pepper.successor_key(), &presented);
            match decision::decide(
                &token,
                successor_record.as_ref(),
                &session,
                &self.policy,
                now,
            ) {
                RefreshDecision::Rotate => {
                    let record = self.refresh_record(
                        &successor,
                        &session,
                        Some(token.token_id.clone()),
                        now,
                    )?;
                    let expires_at = record.expires_at;
                    if !self
                        .store
                        .rotate_refresh_token(&token.token_id, record, now)
                        .await?
                    {
                        // Another exchange won the race: re-read and treat this call as
                        // a repeat of it.
                        continue;
                    }
                    return self.tokens_for(&session, successor, expires_at, now);
                }
                RefreshDecision::ReturnSuccessor => {
                    let Some(record) =
                        successor_record.filter(|record| record.token_id == successor.id)
                    else {
                        // A successor that is not the derived one: treat as reuse.
                        return Err(self.reuse(&token, &session, actor).await);
                    };
                    return self.tokens_for(&session, successor, record.expires_at, now);
                }
                RefreshDecision::Reuse => return Err(self.reuse(&token, &session, actor).await),
                RefreshDecision::Refuse(rejection) => return Err(rejection.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Returns the record and session of an authentic refresh token (for introspection).
    pub async fn inspect(
        &self,
        presented_text: &str,
    ) -> Result<Option<(RefreshTokenRecord, SessionRecord)>, SessionError> {
        let Some(presented) = Credentials::parse(presented_text, &[CredentialKind::Refresh]) else {
            return Ok(None);
        };
        let Some(token) = self.store.refresh_token(&presented.id).await? else {
            return Ok(None);
        };
        if !self.credentials.verify(&presented, &token).await {
            return Ok(None);
        }
        let Some(session) = self.store.session(&token.session_id).await? else {
            return Ok(None);
        };
        Ok(Some((token, session)))
    }

    /// Returns how long a revocation entry is kept: the longest lifetime of any token
    /// type plus leeway, after which every token it could match has expired.
    pub fn revocation_horizon(&self) -> Duration {
        self.policy.revocation_horizon
    }

    /// Revokes `target` (confined to `scope_tenant` when given), ending matching sessions.
    /// A session or family is revoked only within its own tenant: named with a
    /// `scope_tenant` it does not belong to, the entry is filed under `scope_tenant`
    /// and nothing of the other tenant changes.
    pub async fn revoke(
        &self,
        target: RevocationTarget,
        scope_tenant: Option<TenantId>,
        actor: &Actor,
    ) -> Result<Revoked, SessionError> {
        let now = self.clock.now();
        let drop_after = now.plus(self.policy.revocation_horizon);
        let Resolved {
            kind,
            value,
            tenant,
            effect,
        } = self.resolve(&target, scope_tenant).await?;
        let entry = RevocationEntry {
            kind,
            value: value.clone(),
            tenant_id: tenant.map(|tenant| tenant.to_string()),
            revoked_at: now,
            drop_after,
        };
        let audit = actor.entry(now, AuditAction::revocation(kind), value);
        let (revision, n_sessions) = self
            .store
            .revoke(Revocation {
                entries: vec![entry],
                effects: effect.into_iter().collect(),
                audit: vec![audit],
                at: now,
            })
            .await?;
        metrics::counter!("tessera_token_invalidation_total", "reason" => kind.as_str())
            .increment(1);
        Ok(Revoked {
            revision,
            drop_after,
            n_sessions,
        })
    }

    /// Turns `target` into the entry it publishes and the sessions it ends. Sessions and
    /// families are looked up so that their entry carries their own tenant (an unconfined
    /// admin need not name it) and so that one named outside `scope_tenant` is refused
    /// like one that does not exist.
    async fn resolve(
        &self,
        target: &RevocationTarget,
        scope_tenant: Option<TenantId>,
    ) -> Result<Resolved, SessionError> {
        let resolved = match target {
            RevocationTarget::Jti(jti) => Resolved {
                kind: RevocationKind::Jti,
                value: jti.clone(),
                tenant: scope_tenant,
                effect: None,
            },
            RevocationTarget::Session(session_id) => {
                let session = self.store.session(session_id).await?;
                let tenant = filing_tenant(session, scope_tenant);
                Resolved {
                    kind: RevocationKind::Session,
                    value: session_id.to_string(),
                    effect: tenant.clone().map(|tenant_id| RevocationEffect::Session {
                        tenant_id,
                        session_id: session_id.clone(),
                    }),
                    tenant,
                }
            }
            RevocationTarget::Family(family_id) => {
                let session = self.store.session_of_family(family_id).await?;
                let tenant = filing_tenant(session, scope_tenant);
                Resolved {
                    kind: RevocationKind::Family,
                    value: family_id.clone(),
                    effect: tenant.clone().map(|tenant_id| RevocationEffect::Family {
                        tenant_id,
                        family_id: family_id.clone(),
                    }),
                    tenant,
                }
            }
            RevocationTarget::User(subject) => Resolved {
                kind: RevocationKind::User,
                value: subject.to_string(),
                tenant: scope_tenant.clone(),
                effect: Some(RevocationEffect::User {
                    tenant_id: scope_tenant,
                    subject: subject.clone(),
                }),
            },
            RevocationTarget::Tenant(tenant_id) => Resolved {
                kind: RevocationKind::Tenant,
                value: tenant_id.to_string(),
                tenant: Some(tenant_id.clone()),
                effect: Some(RevocationEffect::Tenant(tenant_id.clone())),
            },
            RevocationTarget::All => Resolved {
                kind: RevocationKind::All,
                value: String::new(),
                tenant: None,
                effect: Some(RevocationEffect::All),
            },
        };
        Ok(resolved)
    }

    async fn reuse(
        &self,
        token: &RefreshTokenRecord,
        session: &SessionRecord,
        actor: &Actor,
    ) -> SessionError {
        warn!(family_id = %token.family_id, session_id = %session.session_id, "refresh token reuse detected; revoking the family");
        metrics::counter!("tessera_token_invalidation_total", "reason" => "refresh_reuse")
            .increment(1);
        let now = self.clock.now();
        let entry = RevocationEntry {
            kind: RevocationKind::Family,
            value: token.family_id.clone(),
            tenant_id: Some(session.tenant_id.to_string()),
            revoked_at: now,
            drop_after: now.plus(self.policy.revocation_horizon),
        };
        let reason = format!(
            "rotated token {} presented again; session {} revoked",
            token.token_id, session.session_id
        );
        let audit = AuditEntry {
            outcome: AuditOutcome::Denied,
            ..actor.with_reason(reason).entry(
                now,
                AuditAction::RefreshReuseDetected,
                token.family_id.clone(),
            )
        };
        match self
            .store
            .revoke(Revocation {
                entries: vec![entry],
                effects: vec![RevocationEffect::Family {
                    tenant_id: session.tenant_id.clone(),
                    family_id: token.family_id.clone(),
                }],
                audit: vec![audit],
                at: now,
            })
            .await
        {
            Ok(_) => SessionError::ReuseDetected,
            Err(error) => error.into(),
        }
    }

    fn tokens_for(
        &self,
        session: &SessionRecord,
        refresh: Credential,
        refresh_expires_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<SessionTokens, SessionError> {
        let template: ClaimsTemplate = serde_json::from_str(&session.claims_template)
            .map_err(|error| SessionError::Corrupt(error.to_string()))?;
        let access = self.issue_access(session, &template, now)?;
        Ok(SessionTokens {
            session_id: session.session_id.clone(),
            family_id: session.family_id.clone(),
            access,
            refresh,
            refresh_expires_at,
        })
    }

    fn issue_access(
        &self,
        session: &SessionRecord,
        template: &ClaimsTemplate,
        now: UnixMillis,
    ) -> Result<IssuedToken, SessionError> {
        let request = AccessTokenRequest {
            subject: session.subject.clone(),
            tenant_id: session.tenant_id.clone(),
            role: template.role.clone(),
            permissions: template.permissions.clone(),
            session_id: Some(session.session_id.clone()),
            audience: template.audience.clone(),
            ttl: None,
            mfa_verified: template.mfa_verified,
            features: template.features.clone(),
            device_fingerprint: template.device_fingerprint.clone(),
            ip_address: template.ip_address.clone(),
            last_password_change: template.last_password_change,
            family_id: Some(session.family_id.clone()),
        };
        let signer = self.keys.signer(KeySetName::Access, now)?;
        Ok(tokens::issue(&signer, &request, &self.tokens, now)?)
    }

    fn refresh_record(
        &self,
        credential: &Credential,
        session: &SessionRecord,
        parent_id: Option<String>,
        now: UnixMillis,
    ) -> Result<RefreshTokenRecord, SessionError> {
        let hashed = self.credentials.hash(credential)?;
        let mut expires_at = now.plus(self.policy.refresh_ttl);
        if let Some(end) = session.expires_at {
            expires_at = expires_at.min(end);
        }
        Ok(RefreshTokenRecord {
            token_id: credential.id.clone(),
            family_id: session.family_id.clone(),
            session_id: session.session_id.clone(),
            tenant_id: session.tenant_id.clone(),
            parent_id,
            secret_hash: hashed.hash,
            pepper_version: hashed.pepper_version,
            issued_at: now,
            expires_at,
            state: RefreshState::Active,
        })
    }
}

/// A refresh token answers to its own prefix only.
impl CredentialRecord for RefreshTokenRecord {
    fn accepts(&self, kind: CredentialKind) -> bool {
        kind == CredentialKind::Refresh
    }

    fn pepper_version(&self) -> tessera_common::credential::PepperVersion {
        self.pepper_version
    }

    fn secret_hash(&self) -> &[u8] {
        &self.secret_hash
    }
}
