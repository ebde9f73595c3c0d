//! The standing-credential side of the sidecar (issue 10): ValidateApiKey,
//! ValidateOpaqueToken and FetchServiceToken, sharing one issuer client and one set of
//! purge marks fed by the trust-bundle stream.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::{Clock, UnixMillis};

use crate::action::ActionTokens;
use crate::apikeys::ApiKeys;
use crate::config::{CredentialsConfig, IssuerConfig};
use crate::credcache::Purges;
use crate::issuer_client::{CALL_TIMEOUT, IssuerClient};
use crate::listen::BundleListener;
use crate::opaque::OpaqueTokens;
use crate::secrets::Secrets;
use crate::service_token::ServiceTokens;
use crate::state::BundleState;

/// Margin added to the longest life of a cached answer before a purge mark is forgotten.
const MARK_SLACK: Duration = Duration::from_secs(10);

/// Everything the three RPCs need.
pub struct Credentials {
    pub api_keys: ApiKeys,
    /// ConsumeActionToken: forgeries and mismatches refused here, the rest forwarded.
    pub actions: ActionTokens,
    pub opaque_tokens: OpaqueTokens,
    pub service_tokens: Arc<ServiceTokens>,
    pub secrets: Secrets,
    pub purges: Arc<Purges>,
    pub issuer: IssuerClient,
    clock: Arc<dyn Clock>,
}

impl Credentials {
    /// Builds them for `config`, reaching the issuer `issuer` names.
    pub fn new(
        config: &CredentialsConfig,
        issuer: &IssuerConfig,
        bundle: Arc<BundleState>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, tonic::transport::Error> {
        let client = IssuerClient::new(issuer)?;
        let secrets = Secrets::new(
            config.secrets.clone(),
            issuer,
            bundle.clone(),
            clock.clone(),
        )?;
        // A mark matters while an answer verified before it may still be cached: the
        // cache TTL after an issuer call that may last CALL_TIMEOUT.
        let longest_life = config.cache_ttl + CALL_TIMEOUT + MARK_SLACK;
        let purges = Arc::new(Purges::new(bundle.clone(), longest_life));
        Ok(Credentials {
            actions: ActionTokens::new(client.clone(), bundle.clone(), clock.clone()),
            api_keys: ApiKeys::new(
                client.clone(),
                purges.clone(),
                clock.clone(),
                config.cache_ttl,
            ),
            opaque_tokens: OpaqueTokens::new(
                client.clone(),
                purges.clone(),
                clock.clone(),
                config.cache_ttl,
            ),
            service_tokens: Arc::new(ServiceTokens::new(
                config.service_identity.clone(),
                clock.clone(),
            )),
            secrets,
            purges,
            issuer: client,
            clock,
        })
    }

    /// Returns what the subscription must tell of bundle changes.
    pub fn listeners(&self) -> Vec<Arc<dyn BundleListener>> {
        vec![
            self.purges.clone(),
            self.service_tokens.clone(),
            Arc::new(self.secrets.clone()),
        ]
    }

    /// Returns the sidecar's clock.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_keys", &self.api_keys)
            .field("opaque_tokens", &self.opaque_tokens)
            .field("service_tokens", &self.service_tokens)
            .finish_non_exhaustive()
    }
}
