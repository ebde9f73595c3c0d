//! `tessera.v1.ServiceTokenService`: service identities, their `tbs_` tokens, and the
//! validation of every short-lived opaque token (`tbs_` and `tbw_`; see
//! `service_tokens.rs`, `opaque_tokens.rs` and the proto's comments). Identities and
//! revocation need `admin`, issuing and confirming `issue`, validation `introspect`; a
//! tenant-confined caller acts on its own tenants only, and another tenant's identity or
//! token is answered like one that does not exist.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;
use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::timestamp;
use super::status::from_store;
use crate::app::{App, request_id};
use crate::audit::Actor;
use crate::auth::{Caller, Scope};
use crate::opaque_tokens::{self, OpaqueTokenError, Refusal, check_validation_request, renew_at};
use crate::service_tokens::{NewServiceIdentity, ServiceTokenRequest};
use crate::store::{OpaqueTokenKind, OpaqueTokenRecord, ServiceIdentityRecord};

const CREATE: &str = "ServiceTokenService/CreateServiceIdentity";
const LIST: &str = "ServiceTokenService/ListServiceIdentities";
const DISABLE: &str = "ServiceTokenService/DisableServiceIdentity";
const ISSUE: &str = "ServiceTokenService/IssueServiceToken";
const CONFIRM: &str = "ServiceTokenService/ConfirmServiceToken";
const REVOKE: &str = "ServiceTokenService/RevokeServiceToken";
const VALIDATE: &str = "ServiceTokenService/ValidateServiceToken";

/// The ServiceTokenService implementation.
pub struct ServiceTokenServiceImpl {
    pub app: Arc<App>,
}

/// Maps an opaque-token failure to its status.
pub fn from_opaque_token(error: OpaqueTokenError) -> Status {
    match error {
        OpaqueTokenError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
        OpaqueTokenError::NotFound(_) => Status::not_found(error.to_string()),
        OpaqueTokenError::AlreadyExists => Status::already_exists(error.to_string()),
        OpaqueTokenError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
        OpaqueTokenError::Store(error) => from_store(error),
        OpaqueTokenError::Keyring(error) => {
            tracing::error!(%error, "opaque token hashing failed");
            Status::unavailable("the issuer cannot hash credentials now")
        }
    }
}

/// Returns a token's metadata as sent: never the token or its hash.
/// Revokes the `kind` token `token_id` for `caller` (RevokeServiceToken and
/// RevokeWebhookToken): another tenant's token is NOT_FOUND like a missing one.
pub async fn revoke_opaque(
    app: &App,
    caller: &Caller,
    request_id: String,
    kind: OpaqueTokenKind,
    token_id: &str,
    reason: String,
) -> Result<pb::OpaqueTokenInfo, Status> {
    let actor = Actor::client(caller.client_id.clone(), request_id, reason);
    let record = app
        .opaque_tokens
        .revoke(&actor, kind, token_id, |tenant| caller.may_act_on(tenant))
        .await
        .map_err(from_opaque_token)?;
    Ok(token_info(&record, app.now()))
}

pub fn token_info(record: &OpaqueTokenRecord, now: UnixMillis) -> pb::OpaqueTokenInfo {
    pb::OpaqueTokenInfo {
        token_id: record.token_id.clone(),
        kind: record.kind.as_str().to_owned(),
        tenant_id: record.tenant_id.as_str().to_owned(),
        subject: record.subject.clone(),
        permissions: record.permissions.clone(),
        role: record.role.clone(),
        state: opaque_tokens::state_name(record, now).to_owned(),
        issued_at: Some(timestamp(record.issued_at)),
        expires_at: Some(timestamp(record.expires_at)),
        renew_at: Some(timestamp(renew_at(record))),
        replaces: record.replaces.clone().unwrap_or_default(),
        holder: record.holder.clone(),
    }
}

fn identity(record: &ServiceIdentityRecord) -> pb::ServiceIdentity {
    pb::ServiceIdentity {
        tenant_id: record.tenant_id.as_str().to_owned(),
        name: record.name.clone(),
        permissions: record.permissions.clone(),
        role: record.role.clone(),
        created_at: Some(timestamp(record.created_at)),
        disabled_at: record.disabled_at.map(timestamp),
        token_ttl_seconds: record.token_ttl_seconds,
    }
}

fn refusal_code(refusal: Refusal) -> pb::OpaqueTokenRefusal {
    match refusal {
        Refusal::Malformed => pb::OpaqueTokenRefusal::Malformed,
        Refusal::BadChecksum => pb::OpaqueTokenRefusal::BadChecksum,
        Refusal::Unknown => pb::OpaqueTokenRefusal::Unknown,
        Refusal::Revoked => pb::OpaqueTokenRefusal::Revoked,
        Refusal::Expired => pb::OpaqueTokenRefusal::Expired,
        Refusal::InsufficientPermissions => pb::OpaqueTokenRefusal::InsufficientPermissions,
    }
}

fn tenant(tenant_id: &str) -> Result<TenantId, Status> {
    TenantId::new(tenant_id).map_err(|error| Status::invalid_argument(error.to_string()))
}

impl ServiceTokenServiceImpl {
    async fn caller<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        scope: Scope,
    ) -> Result<(Caller, String), Status> {
        let caller = self.app.authorize(request, rpc, scope).await?;
        Ok((caller, request_id(request)))
    }

    /// Authorizes `rpc` with `scope` for `tenant_id`, which the caller must be allowed
    /// to act on.
    async fn caller_for<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        scope: Scope,
        tenant_id: &str,
    ) -> Result<(Caller, TenantId, String), Status> {
        let (caller, request_id) = self.caller(request, rpc, scope).await?;
        let tenant = tenant(tenant_id)?;
        self.app
            .check_tenant(&caller, tenant.as_str(), rpc, &request_id)
            .await?;
        Ok((caller, tenant, request_id))
    }
}

#[tonic::async_trait]
impl pb::service_token_service_server::ServiceTokenService for ServiceTokenServiceImpl {
    #[instrument(skip(self, request))]
    async fn create_service_identity(
        &self,
        request: Request<pb::CreateServiceIdentityRequest>,
    ) -> Result<Response<pb::ServiceIdentity>, Status> {
        let (caller, tenant, request_id) = self
            .caller_for(&request, CREATE, Scope::Admin, &request.get_ref().tenant_id)
            .await?;
        let message = request.into_inner();
        super::reason::optional_reason(&message.reason)?;
        let actor = Actor::client(caller.client_id.clone(), request_id, message.reason);
        let record = self
            .app
            .opaque_tokens
            .create_identity(
                &actor,
                NewServiceIdentity {
                    tenant_id: tenant,
                    name: message.name,
                    permissions: message.permissions,
                    role: message.role,
                    token_ttl: (message.token_ttl_seconds > 0)
                        .then(|| Duration::from_secs(u64::from(message.token_ttl_seconds))),
                },
            )
            .await
            .map_err(from_opaque_token)?;
        Ok(Response::new(identity(&record)))
    }

    #[instrument(skip(self, request))]
    async fn list_service_identities(
        &self,
        request: Request<pb::ListServiceIdentitiesRequest>,
    ) -> Result<Response<pb::ListServiceIdentitiesResponse>, Status> {
        let (caller, request_id) = self.caller(&request, LIST, Scope::Admin).await?;
        let message = request.into_inner();
        let tenant = if message.tenant_id.is_empty() {
            None
        } else {
            let tenant = tenant(&message.tenant_id)?;
            self.app
                .check_tenant(&caller, tenant.as_str(), LIST, &request_id)
                .await?;
            Some(tenant)
        };
        let visible = |tenant: &str| caller.may_act_on(tenant);
        let tokens = &self.app.opaque_tokens;
        let records = match tenant {
            // A confined caller's identities are read tenant by tenant, never every
            // tenant's.
            None if caller.is_confined() => {
                let mut records = Vec::new();
                for tenant in caller.tenants.iter().filter_map(|t| TenantId::new(t).ok()) {
                    records.extend(
                        tokens
                            .list_identities(Some(&tenant), visible)
                            .await
                            .map_err(from_opaque_token)?,
                    );
                }
                records
            }
            tenant => tokens
                .list_identities(tenant.as_ref(), visible)
                .await
                .map_err(from_opaque_token)?,
        };
        Ok(Response::new(pb::ListServiceIdentitiesResponse {
            identities: records.iter().map(identity).collect(),
        }))
    }

    #[instrument(skip(self, request))]
    async fn disable_service_identity(
        &self,
        request: Request<pb::DisableServiceIdentityRequest>,
    ) -> Result<Response<pb::ServiceIdentity>, Status> {
        let (caller, tenant, request_id) = self
            .caller_for(
                &request,
                DISABLE,
                Scope::Admin,
                &request.get_ref().tenant_id,
            )
            .await?;
        let message = request.into_inner();
        super::reason::optional_reason(&message.reason)?;
        let actor = Actor::client(caller.client_id.clone(), request_id, message.reason);
        let (record, _revoked) = self
            .app
            .opaque_tokens
            .disable_identity(&actor, &tenant, &message.name)
            .await
            .map_err(from_opaque_token)?;
        Ok(Response::new(identity(&record)))
    }

    #[instrument(skip(self, request))]
    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::IssueServiceTokenResponse>, Status> {
        let (caller, tenant, request_id) = self
            .caller_for(&request, ISSUE, Scope::Issue, &request.get_ref().tenant_id)
            .await?;
        let message = request.into_inner();
        let actor = Actor::client(caller.client_id.clone(), request_id, String::new());
        let (record, credential) = self
            .app
            .opaque_tokens
            .issue_service(
                &actor,
                ServiceTokenRequest {
                    tenant_id: tenant,
                    service: message.service,
                    replaces: (!message.replaces.is_empty()).then_some(message.replaces),
                    holder: message.holder,
                },
            )
            .await
            .map_err(from_opaque_token)?;
        Ok(Response::new(pb::IssueServiceTokenResponse {
            token: credential.expose(),
            info: Some(token_info(&record, self.app.now())),
        }))
    }

    #[instrument(skip(self, request))]
    async fn confirm_service_token(
        &self,
        request: Request<pb::ConfirmServiceTokenRequest>,
    ) -> Result<Response<pb::ConfirmServiceTokenResponse>, Status> {
        let (caller, request_id) = self.caller(&request, CONFIRM, Scope::Issue).await?;
        let message = request.into_inner();
        let actor = Actor::client(caller.client_id.clone(), request_id, String::new());
        let revoked = self
            .app
            .opaque_tokens
            .confirm_service(&actor, &message.token_id, |tenant| {
                caller.may_act_on(tenant)
            })
            .await
            .map_err(from_opaque_token)?;
        Ok(Response::new(pb::ConfirmServiceTokenResponse {
            revoked_token_id: revoked.unwrap_or_default(),
        }))
    }

    #[instrument(skip(self, request))]
    async fn revoke_service_token(
        &self,
        request: Request<pb::RevokeServiceTokenRequest>,
    ) -> Result<Response<pb::OpaqueTokenInfo>, Status> {
        let (caller, request_id) = self.caller(&request, REVOKE, Scope::Admin).await?;
        let message = request.into_inner();
        super::reason::optional_reason(&message.reason)?;
        revoke_opaque(
            &self.app,
            &caller,
            request_id,
            OpaqueTokenKind::Service,
            &message.token_id,
            message.reason,
        )
        .await
        .map(Response::new)
    }

    #[instrument(skip(self, request))]
    async fn validate_service_token(
        &self,
        request: Request<pb::ValidateOpaqueTokenRequest>,
    ) -> Result<Response<pb::ValidateOpaqueTokenResponse>, Status> {
        let (caller, _) = self.caller(&request, VALIDATE, Scope::Introspect).await?;
        let message = request.into_inner();
        check_validation_request(
            &message.token,
            &message.required_permissions,
            &message.required_role,
            &message.required_subject,
        )
        .map_err(from_opaque_token)?;
        let verdict = self
            .app
            .opaque_tokens
            .validate(
                &message.token,
                &message.required_permissions,
                &message.required_role,
                &message.required_subject,
                |tenant| caller.may_act_on(tenant),
            )
            .await
            .map_err(from_opaque_token)?;
        let response = match verdict {
            Ok(record) => {
                metrics::counter!("tessera_opaque_token_validations_total",
                    "kind" => record.kind.as_str(), "outcome" => "valid")
                .increment(1);
                pb::ValidateOpaqueTokenResponse {
                    valid: true,
                    refusal: pb::OpaqueTokenRefusal::Unspecified as i32,
                    info: Some(token_info(&record, self.app.now())),
                }
            }
            Err(refusal) => {
                let code = refusal_code(refusal);
                metrics::counter!("tessera_opaque_token_validations_total",
                    "kind" => "any", "outcome" => code.as_str_name().to_ascii_lowercase())
                .increment(1);
                pb::ValidateOpaqueTokenResponse {
                    valid: false,
                    refusal: code as i32,
                    info: None,
                }
            }
        };
        Ok(Response::new(response))
    }
}
