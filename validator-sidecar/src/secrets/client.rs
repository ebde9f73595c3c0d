//! `SecretService.ReadSecret` at the issuer, with the sidecar's own credential (the one
//! its trust-bundle stream presents, re-read on every call), on a channel of its own to
//! the same endpoint (address, TLS, client certificate) that connects on first use.

use tessera_proto::v1 as pb;
use tessera_proto::v1::secret_service_client::SecretServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::config::{CredentialSource, IssuerConfig};
use crate::issuer_client::CALL_TIMEOUT;

/// A client of the issuer's `ReadSecret`.
#[derive(Clone, Debug)]
pub struct SecretClient {
    channel: Channel,
    credential: CredentialSource,
}

impl SecretClient {
    /// Returns a client of the issuer `config` names; it connects on its first call.
    pub fn new(config: &IssuerConfig) -> Result<Self, tonic::transport::Error> {
        let channel = crate::subscription::endpoint(config)?
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        Ok(SecretClient {
            channel,
            credential: config.credential.clone(),
        })
    }

    /// Reads `name`'s current and previous values. An error is the issuer's status, or
    /// UNAVAILABLE when it cannot be reached or the credential cannot be read.
    pub async fn read(&self, name: &str) -> Result<pb::ReadSecretResponse, Status> {
        let mut request = Request::new(pb::ReadSecretRequest {
            name: name.to_owned(),
            include_previous: true,
        });
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
        let mut client = SecretServiceClient::new(self.channel.clone());
        Ok(client.read_secret(request).await?.into_inner())
    }
}
