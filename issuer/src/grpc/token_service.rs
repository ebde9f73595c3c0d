//! `tessera.v1.TokenService`: access-token issuance and introspection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_common::ids::{SessionId, Subject, TenantId, check_identifier};

use tessera_common::keys::KeySetName;
use tessera_common::limits::{MAX_LIST_ENTRIES, MAX_LIST_ENTRY_BYTES};
use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert;
use super::emergency as grpc_emergency;
use super::reason::required_reason;
use super::status::{from_issue, from_key, from_session};
use crate::app::{App, request_id};
use crate::audit::Actor;
use crate::auth::{Caller, Scope};
use crate::emergency::{self, IncidentId};
use crate::sessions::service::RevocationTarget;
use crate::sessions::{RefreshRejection, SessionError, SessionTokens};
use crate::store::RefreshState;
use crate::tokens::{self, AccessTokenRequest};

/// The TokenService implementation.
pub struct TokenServiceImpl {
    pub app: Arc<App>,
}

fn invalid(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(error.to_string())
}

fn optional(field: &'static str, value: String) -> Result<Option<String>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    check_identifier(field, &value).map_err(invalid)?;
    Ok(Some(value))
}

fn list(field: &'static str, values: Vec<String>) -> Result<Vec<String>, Status> {
    if values.len() > MAX_LIST_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "{field}: more than {MAX_LIST_ENTRIES} entries"
        )));
    }
    for value in &values {
        if value.is_empty()
            || value.len() > MAX_LIST_ENTRY_BYTES
            || value.chars().any(char::is_control)
        {
            return Err(Status::invalid_argument(format!(
                "{field}: entries must be 1 to {MAX_LIST_ENTRY_BYTES} printable bytes"
            )));
        }
    }
    Ok(values)
}

impl TryFrom<pb::IssueAccessTokenRequest> for AccessTokenRequest {
    type Error = Status;

    fn try_from(message: pb::IssueAccessTokenRequest) -> Result<Self, Status> {
        let role = message.role;
        check_identifier("role", &role).map_err(invalid)?;
        if message.last_password_change < 0 {
            return Err(Status::invalid_argument(
                "last_password_change: must not be negative",
            ));
        }
        Ok(AccessTokenRequest {
            subject: Subject::new(message.subject).map_err(invalid)?,
            tenant_id: TenantId::new(message.tenant_id).map_err(invalid)?,
            role,
            permissions: list("permissions", message.permissions)?,
            session_id: optional("session_id", message.session_id)?
                .map(SessionId::new)
                .transpose()
                .map_err(invalid)?,
            audience: optional("audience", message.audience)?,
            ttl: (message.ttl_seconds > 0)
                .then(|| Duration::from_secs(u64::from(message.ttl_seconds))),
            mfa_verified: message.mfa_verified,
            features: list("features", message.features)?,
            device_fingerprint: optional("device_fingerprint", message.device_fingerprint)?,
            ip_address: optional("ip_address", message.ip_address)?,
            last_password_change: message.last_password_change,
            family_id: None,
        })
    }
}

/// The RPC name RevokeTokens audits its refusals under.
const REVOKE_TOKENS: &str = "TokenService/RevokeTokens";
/// The RPC name EmergencyRevoke audits its refusals under.
const EMERGENCY_REVOKE: &str = "TokenService/EmergencyRevoke";

impl TokenServiceImpl {
    /// Returns the tenant a revocation of `target` is confined to, after checking the
    /// caller may act there. Only an unconfined admin acts without naming a tenant (a
    /// session or family is then confined to its own tenant by the session service);
    /// `all` spans every tenant, so it needs exactly such a caller.
    async fn revocation_scope(
        &self,
        caller: &Caller,
        target: &RevocationTarget,
        scope_tenant: Option<TenantId>,
        request_id: &str,
    ) -> Result<Option<TenantId>, Status> {
        let tenant = match (target, scope_tenant) {
            (RevocationTarget::All, _) => {
                self.app
                    .require_unconfined(caller, REVOKE_TOKENS, request_id)
                    .await?;
                if !caller.has(Scope::Admin) {
                    return Err(self
                        .app
                        .deny(
                            caller,
                            REVOKE_TOKENS,
                            request_id,
                            "missing scope admin",
                            "revoking all tokens needs the `admin` scope",
                        )
                        .await);
                }
                return Ok(None);
            }
            // The target names the tenant; any scope tenant given beside it is ignored.
            (RevocationTarget::Tenant(tenant), _) => tenant.clone(),
            (_, Some(tenant)) => tenant,
            (_, None) if caller.has(Scope::Admin) && !caller.is_confined() => return Ok(None),
            (_, None) => {
                return Err(Status::invalid_argument(
                    "scope_tenant_id: required unless the caller is an unconfined admin",
                ));
            }
        };
        self.app
            .check_tenant(caller, tenant.as_str(), REVOKE_TOKENS, request_id)
            .await?;
        Ok(Some(tenant))
    }

    async fn introspect_refresh(
        &self,
        caller: &crate::auth::Caller,
        token: &str,
    ) -> Result<Response<pb::IntrospectTokenResponse>, Status> {
        let now = self.app.now();
        let found = self
            .app
            .sessions
            .inspect(token)
            .await
            .map_err(from_session)?;
        let reason = match &found {
            None => Some("invalid"),
            Some((record, _)) if !caller.may_act_on(record.tenant_id.as_str()) => {
                Some("not_active")
            }
            Some((_, session)) if session.revoked_at.is_some() => Some("revoked"),
            Some((record, _)) => match record.state {
                RefreshState::Revoked { .. } => Some("revoked"),
                RefreshState::Rotated { .. } => Some("rotated"),
                RefreshState::Active if now >= record.expires_at => Some("expired"),
                RefreshState::Active => None,
            },
        };
        let response = match (reason, found) {
            (None, Some((record, session))) => pb::IntrospectTokenResponse {
                active: true,
                reason: String::new(),
                claims: None,
                claims_json: String::new(),
                token_type: "refresh".into(),
                refresh: Some(pb::RefreshTokenInfo {
                    session_id: session.session_id.to_string(),
                    family_id: record.family_id.clone(),
                    subject: session.subject.to_string(),
                    tenant_id: session.tenant_id.to_string(),
                    expires_at: Some(convert::timestamp(record.expires_at)),
                }),
            },
            (reason, _) => pb::IntrospectTokenResponse {
                active: false,
                reason: reason.unwrap_or("invalid").to_owned(),
                claims: None,
                claims_json: String::new(),
                token_type: "refresh".into(),
                refresh: None,
            },
        };
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl pb::token_service_server::TokenService for TokenServiceImpl {
    #[instrument(skip_all, name = "TokenService/IssueAccessToken")]
    async fn issue_access_token(
        &self,
        request: Request<pb::IssueAccessTokenRequest>,
    ) -> Result<Response<pb::IssueAccessTokenResponse>, Status> {
        let started = Instant::now();
        let caller = self
            .app
            .authorize(&request, "TokenService/IssueAccessToken", Scope::Issue)
            .await?;
        let request_id = request_id(&request);
        let mut token_request = AccessTokenRequest::try_from(request.into_inner())?;
        self.app
            .check_tenant(
                &caller,
                token_request.tenant_id.as_str(),
                "TokenService/IssueAccessToken",
                &request_id,
            )
            .await?;
        // A password changed through a reset shows in every later token (issue 11).
        token_request.last_password_change = self
            .app
            .actions
            .last_password_change(
                &token_request.tenant_id,
                token_request.subject.as_str(),
                token_request.last_password_change,
            )
            .await
            .map_err(crate::grpc::action_service::from_action)?;
        let now = self.app.now();
        let signer = self
            .app
            .keys
            .signer(KeySetName::Access, now)
            .map_err(from_key)?;
        let issued =
            tokens::issue(&signer, &token_request, &self.app.tokens, now).map_err(from_issue)?;
        metrics::counter!("tessera_token_generation_total", "method" => "access").increment(1);
        metrics::histogram!("tessera_token_generation_duration_seconds", "method" => "access")
            .record(started.elapsed().as_secs_f64());
        Ok(Response::new(pb::IssueAccessTokenResponse {
            token: issued.token,
            jti: issued.jti,
            kid: issued.kid.to_string(),
            expires_at: Some(convert::timestamp(issued.expires_at)),
            refresh_after: Some(convert::timestamp(issued.refresh_after)),
        }))
    }

    #[instrument(skip_all, name = "TokenService/IntrospectToken")]
    async fn introspect_token(
        &self,
        request: Request<pb::IntrospectTokenRequest>,
    ) -> Result<Response<pb::IntrospectTokenResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, "TokenService/IntrospectToken", Scope::Introspect)
            .await?;
        let token = request.into_inner().token;
        if token.starts_with(tessera_common::credential::CredentialKind::Refresh.prefix()) {
            return self.introspect_refresh(&caller, &token).await;
        }
        let verification = self.app.hub.verification();
        let inactive = |reason: &str| pb::IntrospectTokenResponse {
            active: false,
            reason: reason.to_owned(),
            claims: None,
            claims_json: String::new(),
            token_type: String::new(),
            refresh: None,
        };
        let may_see_tenant = |tenant: &str| caller.may_act_on(tenant);
        let introspected = tokens::introspect(
            &token,
            &verification.bundle,
            &verification.verifier,
            self.app.now(),
            &may_see_tenant,
        );
        let response = match introspected {
            // RFC 7662: a token of a tenant the caller may not see is simply not active,
            // whatever its state (introspect checks the tenant before expiry and
            // revocation, so that state does not leak).
            Err(tessera_common::verify::Rejection::WrongTenant) => inactive("not_active"),
            Ok(found) => pb::IntrospectTokenResponse {
                active: true,
                reason: String::new(),
                claims: Some(convert::claims(&found.claims, &found.kid)),
                claims_json: found.claims_json,
                token_type: tessera_common::claims::TokenType::Access
                    .as_str()
                    .to_owned(),
                refresh: None,
            },
            Err(rejection) => inactive(rejection.as_str()),
        };
        Ok(Response::new(response))
    }

    #[instrument(skip_all, name = "TokenService/CreateSession")]
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::SessionTokens>, Status> {
        let caller = self
            .app
            .authorize(&request, "TokenService/CreateSession", Scope::Issue)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        let max_session = (message.max_session_seconds > 0)
            .then(|| Duration::from_secs(u64::from(message.max_session_seconds)));
        let token_request = AccessTokenRequest::try_from(pb::IssueAccessTokenRequest {
            subject: message.subject,
            tenant_id: message.tenant_id,
            role: message.role,
            permissions: message.permissions,
            audience: message.audience,
            mfa_verified: message.mfa_verified,
            features: message.features,
            device_fingerprint: message.device_fingerprint,
            ip_address: message.ip_address,
            ..Default::default()
        })?;
        self.app
            .check_tenant(
                &caller,
                token_request.tenant_id.as_str(),
                "TokenService/CreateSession",
                &request_id,
            )
            .await?;
        let mut token_request = token_request;
        token_request.last_password_change = self
            .app
            .actions
            .last_password_change(
                &token_request.tenant_id,
                token_request.subject.as_str(),
                token_request.last_password_change,
            )
            .await
            .map_err(crate::grpc::action_service::from_action)?;
        let actor = actor(&caller, request_id, String::new());
        let tokens = self
            .app
            .sessions
            .create(token_request, max_session, &actor)
            .await
            .map_err(from_session)?;
        metrics::counter!("tessera_token_generation_total", "method" => "session").increment(1);
        Ok(Response::new(session_tokens(tokens)))
    }

    #[instrument(skip_all, name = "TokenService/RefreshSession")]
    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::SessionTokens>, Status> {
        let caller = self
            .app
            .authorize(&request, "TokenService/RefreshSession", Scope::Issue)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        if message.refresh_token.len() > tessera_common::credential::MAX_CREDENTIAL_BYTES {
            return Err(Status::invalid_argument("refresh_token: too long"));
        }
        // A tenant-confined caller may only refresh its own tenants' sessions.
        if caller.is_confined() {
            match self
                .app
                .sessions
                .inspect(&message.refresh_token)
                .await
                .map_err(from_session)?
            {
                Some((token, _)) => {
                    self.app
                        .check_tenant(
                            &caller,
                            token.tenant_id.as_str(),
                            "TokenService/RefreshSession",
                            &request_id,
                        )
                        .await?
                }
                None => return Err(from_session(RefreshRejection::Invalid.into())),
            }
        }
        let actor = actor(&caller, request_id, String::new());
        let tokens = self
            .app
            .sessions
            .refresh(&message.refresh_token, &actor)
            .await;
        if matches!(tokens, Err(SessionError::ReuseDetected)) {
            let _ = self.app.hub.catch_up().await;
        }
        let tokens = tokens.map_err(from_session)?;
        metrics::counter!("tessera_token_generation_total", "method" => "refresh").increment(1);
        Ok(Response::new(session_tokens(tokens)))
    }

    #[instrument(skip_all, name = "TokenService/RevokeTokens")]
    async fn revoke_tokens(
        &self,
        request: Request<pb::RevokeTokensRequest>,
    ) -> Result<Response<pb::RevokeTokensResponse>, Status> {
        use pb::revoke_tokens_request::Target;
        let caller = self
            .app
            .authorize(&request, REVOKE_TOKENS, Scope::Issue)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        let reason = required_reason(&message.reason)?;
        let scope_tenant = optional("scope_tenant_id", message.scope_tenant_id)?
            .map(TenantId::new)
            .transpose()
            .map_err(invalid)?;
        let target = match message.target {
            Some(Target::Jti(jti)) => RevocationTarget::Jti(required("jti", jti)?),
            Some(Target::SessionId(id)) => {
                RevocationTarget::Session(SessionId::new(id).map_err(invalid)?)
            }
            Some(Target::UserId(id)) => RevocationTarget::User(Subject::new(id).map_err(|_| {
                Status::invalid_argument("user_id: required, at most 256 printable bytes")
            })?),
            Some(Target::TenantId(id)) => {
                RevocationTarget::Tenant(TenantId::new(id).map_err(invalid)?)
            }
            Some(Target::FamilyId(id)) => RevocationTarget::Family(required("family_id", id)?),
            Some(Target::All(true)) => RevocationTarget::All,
            Some(Target::All(false)) | None => {
                return Err(Status::invalid_argument(
                    "target: one of jti, session_id, user_id, tenant_id, family_id, all",
                ));
            }
        };
        let scope_tenant = self
            .revocation_scope(&caller, &target, scope_tenant, &request_id)
            .await?;
        let actor = actor(&caller, request_id, reason);
        let revoked = self
            .app
            .sessions
            .revoke(target, scope_tenant, &actor)
            .await
            .map_err(from_session)?;
        // Publish to this replica's subscribers before answering.
        let _ = self.app.hub.catch_up().await;
        Ok(Response::new(pb::RevokeTokensResponse {
            revision: revoked.revision.0,
            drop_after: Some(convert::timestamp(revoked.drop_after)),
            n_sessions_revoked: revoked.n_sessions,
        }))
    }

    #[instrument(skip_all, name = "TokenService/EmergencyRevoke")]
    async fn emergency_revoke(
        &self,
        request: Request<pb::EmergencyRevokeRequest>,
    ) -> Result<Response<pb::EmergencyRevokeResponse>, Status> {
        use pb::emergency_revoke_request::Scope as EmergencyScope;
        let caller = self
            .app
            .authorize(&request, EMERGENCY_REVOKE, Scope::Admin)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        let reason = required_reason(&message.reason)?;
        let incident_id = required("incident_id", message.incident_id)?;
        let incident = IncidentId::new(incident_id).map_err(invalid)?;
        // Confinement is checked here, before the incident is recorded: a refused call
        // must not burn an incident another caller would then see replayed.
        let scope = match message.scope {
            Some(EmergencyScope::TenantId(tenant)) => {
                let tenant = TenantId::new(tenant).map_err(invalid)?;
                self.app
                    .check_tenant(&caller, tenant.as_str(), EMERGENCY_REVOKE, &request_id)
                    .await?;
                emergency::EmergencyScope::Tenant(tenant)
            }
            Some(EmergencyScope::Global(true)) => {
                self.app
                    .require_unconfined(&caller, EMERGENCY_REVOKE, &request_id)
                    .await?;
                emergency::EmergencyScope::Global
            }
            _ => return Err(Status::invalid_argument("scope: tenant_id or global")),
        };
        let actor = actor(&caller, request_id, reason);
        let outcome = grpc_emergency::revoke(&self.app, &incident, &scope, &actor).await?;
        let _ = self.app.hub.catch_up().await;
        Ok(Response::new(outcome))
    }
}

fn required(field: &'static str, value: String) -> Result<String, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    check_identifier(field, &value).map_err(invalid)?;
    Ok(value)
}

fn session_tokens(tokens: SessionTokens) -> pb::SessionTokens {
    pb::SessionTokens {
        session_id: tokens.session_id.to_string(),
        access_token: tokens.access.token,
        access_jti: tokens.access.jti,
        access_expires_at: Some(convert::timestamp(tokens.access.expires_at)),
        refresh_after: Some(convert::timestamp(tokens.access.refresh_after)),
        refresh_token: tokens.refresh.expose(),
        refresh_expires_at: Some(convert::timestamp(tokens.refresh_expires_at)),
        family_id: tokens.family_id,
    }
}

/// Who does what, for the audit log: the authenticated client and this request.
fn actor(caller: &Caller, request_id: String, reason: String) -> Actor {
    Actor::client(caller.client_id.clone(), request_id, reason)
}
