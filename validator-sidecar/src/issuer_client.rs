//! Unary calls to the issuer on behalf of the credential validators and the service-token
//! holder: `ApiKeyService.ValidateApiKey` and `LeaseApiKeyBudget`,
//! `ServiceTokenService.ValidateServiceToken`, `IssueServiceToken` and
//! `ConfirmServiceToken`, `ActionLinkService.ConsumeActionToken`.
//!
//! They go to the issuer the trust-bundle stream subscribes to, through the same
//! endpoint settings (address, TLS, client certificate) on a channel of their own that
//! connects on first use and reconnects by itself, and present the same credential the
//! same way (`authorization: Bearer …`, re-read on every call so a rotated credential
//! file is picked up). That credential must hold `introspect` (validations and leases)
//! and, with `--service-identity`, `issue`.
//!
//! Every call has a deadline; an error is the issuer's status, or UNAVAILABLE when the
//! issuer cannot be reached or the credential cannot be read.

use std::time::Duration;

use tessera_proto::v1 as pb;
use tessera_proto::v1::action_link_service_client::ActionLinkServiceClient;
use tessera_proto::v1::api_key_service_client::ApiKeyServiceClient;
use tessera_proto::v1::service_token_service_client::ServiceTokenServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::config::{CredentialSource, IssuerConfig};

/// Longest an issuer call may take before the caller gets UNAVAILABLE.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the issuer's unary credential RPCs.
#[derive(Clone, Debug)]
pub struct IssuerClient {
    channel: Channel,
    credential: CredentialSource,
}

impl IssuerClient {
    /// Returns a client of the issuer `config` names; it connects on its first call.
    pub fn new(config: &IssuerConfig) -> Result<Self, tonic::transport::Error> {
        let channel = crate::subscription::endpoint(config)?
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        Ok(IssuerClient {
            channel,
            credential: config.credential.clone(),
        })
    }

    /// Wraps `message` with the credential and the current trace context.
    fn request<T>(&self, message: T) -> Result<Request<T>, Status> {
        let mut request = Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        let credential = self.credential.load().map_err(|error| {
            tracing::warn!(%error, "cannot read the issuer credential");
            Status::unavailable("the sidecar cannot read its issuer credential")
        })?;
        if let Some(credential) = credential {
            let value = MetadataValue::try_from(format!("Bearer {credential}")).map_err(|_| {
                Status::unavailable("the sidecar's issuer credential is not valid in a header")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        tessera_common::trace_context::inject_current(request.metadata_mut());
        Ok(request)
    }

    /// `ApiKeyService.ValidateApiKey`.
    pub async fn validate_api_key(
        &self,
        message: pb::ValidateApiKeyRequest,
    ) -> Result<pb::ValidateApiKeyResponse, Status> {
        let request = self.request(message)?;
        let mut client = ApiKeyServiceClient::new(self.channel.clone());
        answer(client.validate_api_key(request).await, "ValidateApiKey")
    }

    /// `ApiKeyService.LeaseApiKeyBudget`.
    pub async fn lease_api_key_budget(
        &self,
        message: pb::LeaseApiKeyBudgetRequest,
    ) -> Result<pb::LeaseApiKeyBudgetResponse, Status> {
        let request = self.request(message)?;
        let mut client = ApiKeyServiceClient::new(self.channel.clone());
        answer(
            client.lease_api_key_budget(request).await,
            "LeaseApiKeyBudget",
        )
    }

    /// `ServiceTokenService.ValidateServiceToken`.
    pub async fn validate_service_token(
        &self,
        message: pb::ValidateOpaqueTokenRequest,
    ) -> Result<pb::ValidateOpaqueTokenResponse, Status> {
        let request = self.request(message)?;
        let mut client = ServiceTokenServiceClient::new(self.channel.clone());
        answer(
            client.validate_service_token(request).await,
            "ValidateServiceToken",
        )
    }

    /// `ServiceTokenService.IssueServiceToken`.
    pub async fn issue_service_token(
        &self,
        message: pb::IssueServiceTokenRequest,
    ) -> Result<pb::IssueServiceTokenResponse, Status> {
        let request = self.request(message)?;
        let mut client = ServiceTokenServiceClient::new(self.channel.clone());
        answer(
            client.issue_service_token(request).await,
            "IssueServiceToken",
        )
    }

    /// `ServiceTokenService.ConfirmServiceToken`.
    pub async fn confirm_service_token(
        &self,
        message: pb::ConfirmServiceTokenRequest,
    ) -> Result<pb::ConfirmServiceTokenResponse, Status> {
        let request = self.request(message)?;
        let mut client = ServiceTokenServiceClient::new(self.channel.clone());
        answer(
            client.confirm_service_token(request).await,
            "ConfirmServiceToken",
        )
    }

    /// `ActionLinkService.ConsumeActionToken` (what the sidecar could not refuse alone).
    pub async fn consume_action_token(
        &self,
        message: pb::ConsumeActionTokenRequest,
    ) -> Result<pb::ConsumeActionTokenResponse, Status> {
        let request = self.request(message)?;
        let mut client = ActionLinkServiceClient::new(self.channel.clone());
        answer(
            client.consume_action_token(request).await,
            "ConsumeActionToken",
        )
    }
}

/// Unwraps an issuer answer, logging refusals of the sidecar's own credential (an
/// operator's mistake that no client can fix: the credential lacks a scope).
fn answer<T>(result: Result<tonic::Response<T>, Status>, rpc: &'static str) -> Result<T, Status> {
    match result {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => {
            match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    tracing::error!(
                        rpc,
                        code = ?status.code(),
                        "the issuer refused the sidecar's credential (it needs `introspect`, and `issue` with --service-identity)"
                    );
                }
                tonic::Code::ResourceExhausted
                | tonic::Code::NotFound
                | tonic::Code::FailedPrecondition
                | tonic::Code::InvalidArgument => {}
                code => {
                    tracing::warn!(rpc, ?code, message = status.message(), "issuer call failed")
                }
            }
            Err(status)
        }
    }
}
