//! `tessera.v1.ActionLinkService`: signed action links, password-reset and
//! email-verification tokens (see `actions.rs` and the proto's comments). Minting needs
//! `issue`, consuming and inspecting `introspect`, settings `admin`; a tenant-confined
//! caller mints in its own tenants only, and another tenant's token is `WRONG_TENANT`
//! whatever its state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::claims::ActionClaims;
use tessera_common::ids::TenantId;
use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::timestamp;
use super::status::{from_key, from_session, from_store};
use crate::actions::{
    ActionError, ActionLinkRequest, Consumed, MintedToken, Presented, Refusal, TokenState,
};
use crate::app::{App, request_id};
use crate::audit::Actor;
use crate::auth::{Caller, Scope};

const CREATE: &str = "ActionLinkService/CreateActionLink";
const CONSUME: &str = "ActionLinkService/ConsumeActionToken";
const INSPECT: &str = "ActionLinkService/InspectActionToken";
const ISSUE_RESET: &str = "ActionLinkService/IssuePasswordReset";
const COMPLETE_RESET: &str = "ActionLinkService/CompletePasswordReset";
const ISSUE_VERIFICATION: &str = "ActionLinkService/IssueEmailVerification";
const CONSUME_VERIFICATION: &str = "ActionLinkService/ConsumeEmailVerification";
const SET_SETTINGS: &str = "ActionLinkService/SetActionLinkSettings";
const GET_SETTINGS: &str = "ActionLinkService/GetActionLinkSettings";

/// Longest token text accepted before anything else is looked at (the pipeline refuses
/// anything over 8 KiB as `TOO_LARGE`; this only bounds the request).
const MAX_TOKEN_FIELD_BYTES: usize = 16 * 1024;

/// The ActionLinkService implementation.
pub struct ActionLinkServiceImpl {
    pub app: Arc<App>,
}

/// Maps an action error to its status.
pub fn from_action(error: ActionError) -> Status {
    match error {
        ActionError::InvalidArgument(error) => Status::invalid_argument(error.to_string()),
        ActionError::Lifetime(error) => Status::invalid_argument(error.to_string()),
        ActionError::Store(error) => from_store(error),
        ActionError::Keys(error) => from_key(error),
        ActionError::Sign(error) => {
            tracing::error!(%error, "action token signing failed");
            Status::internal("internal error")
        }
        ActionError::Session(error) => from_session(error),
    }
}

/// Returns the wire code of a refusal.
pub fn refusal_code(refusal: Refusal) -> pb::ActionRefusal {
    match refusal {
        Refusal::Malformed => pb::ActionRefusal::Malformed,
        Refusal::TooLarge => pb::ActionRefusal::TooLarge,
        Refusal::BadSignature => pb::ActionRefusal::BadSignature,
        Refusal::WrongTokenType => pb::ActionRefusal::WrongTokenType,
        Refusal::Expired => pb::ActionRefusal::Expired,
        Refusal::NotYetValid => pb::ActionRefusal::NotYetValid,
        Refusal::Revoked => pb::ActionRefusal::Revoked,
        Refusal::WrongTenant => pb::ActionRefusal::WrongTenant,
        Refusal::WrongAction => pb::ActionRefusal::WrongAction,
        Refusal::WrongResource => pb::ActionRefusal::WrongResource,
        Refusal::IpNotAllowed => pb::ActionRefusal::IpNotAllowed,
        Refusal::UserAgentMismatch => pb::ActionRefusal::UserAgentMismatch,
        Refusal::AlreadyUsed => pb::ActionRefusal::AlreadyUsed,
        Refusal::Invalidated => pb::ActionRefusal::Invalidated,
        Refusal::Unknown => pb::ActionRefusal::Unknown,
        Refusal::ConfirmationInvalid => pb::ActionRefusal::ConfirmationInvalid,
    }
}

/// Returns a token's claims as sent (the user-agent hash only as a flag).
pub fn claims_message(claims: &ActionClaims) -> pb::ActionTokenClaims {
    pb::ActionTokenClaims {
        jti: claims.jti.clone(),
        token_type: claims.token_type.clone(),
        action: claims.action.clone(),
        resource_id: claims.resource_id.clone(),
        tenant_id: claims.tenant_id.clone(),
        user_id: claims.user_id.clone(),
        params: claims.params.clone().into_iter().collect(),
        confirmation_required: claims.confirmation_required,
        ip_allowlist: claims.ip_allowlist.clone().unwrap_or_default(),
        user_agent_bound: claims.user_agent_hash.is_some(),
        issued_at: Some(timestamp(UnixMillis(claims.iat_ms))),
        expires_at: Some(timestamp(UnixMillis::from_secs(claims.exp))),
    }
}

fn tenant(tenant_id: &str) -> Result<TenantId, Status> {
    TenantId::new(tenant_id).map_err(|error| Status::invalid_argument(error.to_string()))
}

fn token_field<'a>(field: &'static str, token: &'a str) -> Result<&'a str, Status> {
    if token.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    if token.len() > MAX_TOKEN_FIELD_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field}: longer than {MAX_TOKEN_FIELD_BYTES} bytes"
        )));
    }
    Ok(token)
}

fn optional<'a>(
    field: &'static str,
    value: &'a str,
    max: usize,
) -> Result<Option<&'a str>, Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field}: longer than {max} bytes"
        )));
    }
    Ok((!value.is_empty()).then_some(value))
}

fn client_ip(value: &str) -> Result<Option<IpAddr>, Status> {
    optional("client_ip", value, 64)?
        .map(|text| {
            text.parse::<IpAddr>()
                .map_err(|_| Status::invalid_argument("client_ip: not an IP address"))
        })
        .transpose()
}

fn expires_in(seconds: u32) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

fn consume_response(consumed: Consumed) -> pb::ConsumeActionTokenResponse {
    match consumed {
        Consumed::Done(claims) => pb::ConsumeActionTokenResponse {
            consumed: true,
            claims: Some(claims_message(&claims)),
            ..Default::default()
        },
        Consumed::ConfirmationRequired(claims, confirmation) => pb::ConsumeActionTokenResponse {
            confirmation_required: true,
            confirmation_token: confirmation.token,
            confirmation_expires_at: Some(timestamp(confirmation.expires_at)),
            claims: Some(claims_message(&claims)),
            ..Default::default()
        },
        Consumed::Refused(refusal, claims) => pb::ConsumeActionTokenResponse {
            refusal: refusal_code(refusal).into(),
            claims: claims.as_deref().map(claims_message),
            ..Default::default()
        },
    }
}

/// Splits a consumption into (done, refusal, claims) for the reset and verification
/// answers, which have no confirmation step.
fn settled(consumed: Consumed) -> (bool, pb::ActionRefusal, Option<pb::ActionTokenClaims>) {
    match consumed {
        Consumed::Done(claims) => (
            true,
            pb::ActionRefusal::Unspecified,
            Some(claims_message(&claims)),
        ),
        Consumed::ConfirmationRequired(claims, _) => (
            false,
            pb::ActionRefusal::ConfirmationInvalid,
            Some(claims_message(&claims)),
        ),
        Consumed::Refused(refusal, claims) => (
            false,
            refusal_code(refusal),
            claims.as_deref().map(claims_message),
        ),
    }
}

fn settings_message(
    tenant_id: &TenantId,
    settings: Option<crate::store::ActionSettingsRecord>,
) -> pb::ActionLinkSettings {
    match settings {
        Some(settings) => pb::ActionLinkSettings {
            tenant_id: settings.tenant_id.as_str().to_owned(),
            base_url: settings.base_url,
            lifetimes_seconds: settings.lifetimes.into_iter().collect(),
            updated_at: Some(timestamp(settings.updated_at)),
        },
        None => pb::ActionLinkSettings {
            tenant_id: tenant_id.as_str().to_owned(),
            ..Default::default()
        },
    }
}

fn minted_parts(minted: &MintedToken) -> (String, String, String, Option<prost_types::Timestamp>) {
    (
        minted.token.clone(),
        minted.url.clone().unwrap_or_default(),
        minted.jti.clone(),
        Some(timestamp(minted.expires_at)),
    )
}

impl ActionLinkServiceImpl {
    /// Authorizes `rpc` with `scope` for `tenant_id`, which the caller must be allowed
    /// to act on.
    async fn caller_for<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        scope: Scope,
        tenant_id: &str,
    ) -> Result<(Caller, TenantId, String), Status> {
        let caller = self.app.authorize(request, rpc, scope).await?;
        let request_id = request_id(request);
        let tenant = tenant(tenant_id)?;
        self.app
            .check_tenant(&caller, tenant.as_str(), rpc, &request_id)
            .await?;
        Ok((caller, tenant, request_id))
    }
}

#[tonic::async_trait]
impl pb::action_link_service_server::ActionLinkService for ActionLinkServiceImpl {
    #[instrument(skip(self, request))]
    async fn create_action_link(
        &self,
        request: Request<pb::CreateActionLinkRequest>,
    ) -> Result<Response<pb::CreateActionLinkResponse>, Status> {
        let (_, tenant, _) = self
            .caller_for(&request, CREATE, Scope::Issue, &request.get_ref().tenant_id)
            .await?;
        let message = request.into_inner();
        let user_agent = optional("user_agent", &message.user_agent, 1024)?.map(str::to_owned);
        let minted = self
            .app
            .actions
            .create_link(ActionLinkRequest {
                tenant_id: tenant,
                user_id: message.user_id,
                action: message.action,
                resource_id: message.resource_id,
                params: message.params.into_iter().collect::<BTreeMap<_, _>>(),
                expires_in: expires_in(message.expires_in_seconds),
                requires_confirmation: message.requires_confirmation,
                ip_allowlist: message.ip_allowlist,
                user_agent,
            })
            .await
            .map_err(from_action)?;
        let (token, url, jti, expires_at) = minted_parts(&minted);
        Ok(Response::new(pb::CreateActionLinkResponse {
            token,
            url,
            jti,
            expires_at,
        }))
    }

    #[instrument(skip(self, request))]
    async fn consume_action_token(
        &self,
        request: Request<pb::ConsumeActionTokenRequest>,
    ) -> Result<Response<pb::ConsumeActionTokenResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, CONSUME, Scope::Introspect)
            .await?;
        let message = request.into_inner();
        let token = token_field("token", &message.token)?;
        let action = optional("action", &message.action, 64)?
            .ok_or_else(|| Status::invalid_argument("action: required"))?;
        let resource_id = optional("resource_id", &message.resource_id, 256)?
            .ok_or_else(|| Status::invalid_argument("resource_id: required"))?;
        let confirmation_token = match message.confirmation_token.as_str() {
            "" => None,
            text => Some(token_field("confirmation_token", text)?),
        };
        let presented = Presented {
            action: Some(action),
            resource_id: Some(resource_id),
            client_ip: client_ip(&message.client_ip)?,
            user_agent: optional("user_agent", &message.user_agent, 1024)?,
            confirmation_token,
        };
        let may_see_tenant = |tenant: &str| caller.may_act_on(tenant);
        let consumed = self
            .app
            .actions
            .consume_link(token, &presented, &may_see_tenant)
            .await
            .map_err(from_action)?;
        Ok(Response::new(consume_response(consumed)))
    }

    #[instrument(skip(self, request))]
    async fn inspect_action_token(
        &self,
        request: Request<pb::InspectActionTokenRequest>,
    ) -> Result<Response<pb::InspectActionTokenResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, INSPECT, Scope::Introspect)
            .await?;
        let message = request.into_inner();
        let token = token_field("token", &message.token)?;
        let may_see_tenant = |tenant: &str| caller.may_act_on(tenant);
        let inspected = self
            .app
            .actions
            .inspect(token, &may_see_tenant)
            .await
            .map_err(from_action)?;
        let response = match inspected {
            Ok((claims, state)) => pb::InspectActionTokenResponse {
                valid: true,
                refusal: pb::ActionRefusal::Unspecified.into(),
                claims: Some(claims_message(&claims)),
                state: match state {
                    TokenState::Live => "live",
                    TokenState::Used => "used",
                    TokenState::Invalidated => "invalidated",
                    TokenState::Unknown => "unknown",
                }
                .to_owned(),
            },
            Err(refusal) => pb::InspectActionTokenResponse {
                valid: false,
                refusal: refusal_code(refusal).into(),
                claims: None,
                state: String::new(),
            },
        };
        Ok(Response::new(response))
    }

    #[instrument(skip(self, request))]
    async fn issue_password_reset(
        &self,
        request: Request<pb::IssuePasswordResetRequest>,
    ) -> Result<Response<pb::IssuePasswordResetResponse>, Status> {
        let (caller, tenant, request_id) = self
            .caller_for(
                &request,
                ISSUE_RESET,
                Scope::Issue,
                &request.get_ref().tenant_id,
            )
            .await?;
        let message = request.into_inner();
        let ip = client_ip(&message.client_ip)?;
        // One-time rate limits per user and IP (`one_time_limits.rs`, shared with challenges).
        super::challenge_service::admit_one_time(
            &self.app,
            crate::one_time_limits::LimitedOperation::PasswordReset,
            &tenant,
            &message.user_id,
            ip,
        )
        .await?;
        let actor = Actor::client(caller.client_id.clone(), request_id, String::new());
        let minted = self
            .app
            .actions
            .issue_reset(
                &tenant,
                &message.user_id,
                expires_in(message.expires_in_seconds),
                &actor,
            )
            .await
            .map_err(from_action)?;
        let (token, url, jti, expires_at) = minted_parts(&minted);
        Ok(Response::new(pb::IssuePasswordResetResponse {
            token,
            url,
            jti,
            expires_at,
            superseded: minted.n_superseded,
        }))
    }

    #[instrument(skip(self, request))]
    async fn complete_password_reset(
        &self,
        request: Request<pb::CompletePasswordResetRequest>,
    ) -> Result<Response<pb::CompletePasswordResetResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, COMPLETE_RESET, Scope::Introspect)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        let token = token_field("token", &message.token)?;
        let actor = Actor::client(caller.client_id.clone(), request_id, String::new());
        let may_see_tenant = |tenant: &str| caller.may_act_on(tenant);
        let consumed = self
            .app
            .actions
            .complete_reset(token, &may_see_tenant, &actor)
            .await
            .map_err(from_action)?;
        let (completed, refusal, claims) = settled(consumed);
        Ok(Response::new(pb::CompletePasswordResetResponse {
            completed,
            refusal: refusal.into(),
            claims,
        }))
    }

    #[instrument(skip(self, request))]
    async fn issue_email_verification(
        &self,
        request: Request<pb::IssueEmailVerificationRequest>,
    ) -> Result<Response<pb::IssueEmailVerificationResponse>, Status> {
        let (_, tenant, _) = self
            .caller_for(
                &request,
                ISSUE_VERIFICATION,
                Scope::Issue,
                &request.get_ref().tenant_id,
            )
            .await?;
        let message = request.into_inner();
        let ip = client_ip(&message.client_ip)?;
        // One-time rate limits per user and IP (`one_time_limits.rs`, shared with challenges).
        super::challenge_service::admit_one_time(
            &self.app,
            crate::one_time_limits::LimitedOperation::EmailVerification,
            &tenant,
            &message.user_id,
            ip,
        )
        .await?;
        let minted = self
            .app
            .actions
            .issue_verification(
                &tenant,
                &message.user_id,
                &message.email,
                expires_in(message.expires_in_seconds),
            )
            .await
            .map_err(from_action)?;
        let (token, url, jti, expires_at) = minted_parts(&minted);
        Ok(Response::new(pb::IssueEmailVerificationResponse {
            token,
            url,
            jti,
            expires_at,
        }))
    }

    #[instrument(skip(self, request))]
    async fn consume_email_verification(
        &self,
        request: Request<pb::ConsumeEmailVerificationRequest>,
    ) -> Result<Response<pb::ConsumeEmailVerificationResponse>, Status> {
        let caller = self
            .app
            .authorize(&request, CONSUME_VERIFICATION, Scope::Introspect)
            .await?;
        let message = request.into_inner();
        let token = token_field("token", &message.token)?;
        let email = optional("email", &message.email, 256)?;
        let may_see_tenant = |tenant: &str| caller.may_act_on(tenant);
        let consumed = self
            .app
            .actions
            .consume_verification(token, email, &may_see_tenant)
            .await
            .map_err(from_action)?;
        let (verified, refusal, claims) = settled(consumed);
        Ok(Response::new(pb::ConsumeEmailVerificationResponse {
            verified,
            refusal: refusal.into(),
            claims,
        }))
    }

    #[instrument(skip(self, request))]
    async fn set_action_link_settings(
        &self,
        request: Request<pb::SetActionLinkSettingsRequest>,
    ) -> Result<Response<pb::ActionLinkSettings>, Status> {
        let (caller, tenant, request_id) = self
            .caller_for(
                &request,
                SET_SETTINGS,
                Scope::Admin,
                &request.get_ref().tenant_id,
            )
            .await?;
        let message = request.into_inner();
        super::reason::optional_reason(&message.reason)?;
        let actor = Actor::client(caller.client_id.clone(), request_id, message.reason);
        let settings = self
            .app
            .actions
            .put_settings(
                tenant.clone(),
                &message.base_url,
                message.lifetimes_seconds.into_iter().collect(),
                &actor,
            )
            .await
            .map_err(from_action)?;
        Ok(Response::new(settings_message(&tenant, Some(settings))))
    }

    #[instrument(skip(self, request))]
    async fn get_action_link_settings(
        &self,
        request: Request<pb::GetActionLinkSettingsRequest>,
    ) -> Result<Response<pb::ActionLinkSettings>, Status> {
        let (_, tenant, _) = self
            .caller_for(
                &request,
                GET_SETTINGS,
                Scope::Admin,
                &request.get_ref().tenant_id,
            )
            .await?;
        let settings = self
            .app
            .actions
            .settings(&tenant)
            .await
            .map_err(from_action)?;
        Ok(Response::new(settings_message(&tenant, settings)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn every_error_has_a_code() {
        let bad = crate::actions::token::BadInput {
            field: "action",
            problem: "x".into(),
        };
        assert_eq!(
            from_action(ActionError::InvalidArgument(bad)).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            from_action(ActionError::Store(StoreError::Unavailable("x".into()))).code(),
            tonic::Code::Unavailable
        );
    }

    #[test]
    fn every_refusal_has_its_own_wire_code() {
        use std::collections::HashSet;
        let all = [
            Refusal::Malformed,
            Refusal::TooLarge,
            Refusal::BadSignature,
            Refusal::WrongTokenType,
            Refusal::Expired,
            Refusal::NotYetValid,
            Refusal::Revoked,
            Refusal::WrongTenant,
            Refusal::WrongAction,
            Refusal::WrongResource,
            Refusal::IpNotAllowed,
            Refusal::UserAgentMismatch,
            Refusal::AlreadyUsed,
            Refusal::Invalidated,
            Refusal::Unknown,
            Refusal::ConfirmationInvalid,
        ];
        let codes: HashSet<i32> = all.iter().map(|r| refusal_code(*r) as i32).collect();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&(pb::ActionRefusal::Unspecified as i32)));
    }
}
