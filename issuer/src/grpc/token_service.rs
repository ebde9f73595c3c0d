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
use super::status::{from_issue, from_key};
use crate::app::{App, request_id};
use crate::auth::Scope;
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
        let token_request = AccessTokenRequest::try_from(request.into_inner())?;
        self.app
            .check_tenant(
                &caller,
                token_request.tenant_id.as_str(),
                "TokenService/IssueAccessToken",
                &request_id,
            )
            .await?;
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
        let bundle = self.app.hub.current();
        let inactive = |reason: &str| pb::IntrospectTokenResponse {
            active: false,
            reason: reason.to_owned(),
            claims: None,
            claims_json: String::new(),
        };
        let response = match tokens::introspect(&token, &bundle, self.app.now()) {
            // RFC 7662: a token of a tenant the caller may not see is simply not active.
            Ok(found) if !caller.may_act_on(&found.claims.tenant_id) => inactive("not_active"),
            Ok(found) => pb::IntrospectTokenResponse {
                active: true,
                reason: String::new(),
                claims: Some(convert::claims(&found.claims, &found.kid)),
                claims_json: found.claims_json,
            },
            Err(rejection) => inactive(rejection.as_str()),
        };
        Ok(Response::new(response))
    }
}
