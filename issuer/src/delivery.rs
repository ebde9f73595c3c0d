//! Delivery of one-time codes by the issuer (issue 11): providers (SMTP, signed webhook),
//! each challenge method's primary and backup, and the runtime switch that disables a
//! provider (seed 002, "provider compromise").
//!
//! Contract:
//! - A message goes to the method's primary; when the primary is disabled or fails
//!   (connection refused, timeout, a non-2xx answer, an SMTP rejection), to its backup.
//!   The caller audits a failover (`provider.failover`, names and reason only).
//! - Disabled providers are read from the store on every send, so a `providers disable`
//!   on any replica stops every replica's sends at once; no disabled provider is ever
//!   contacted.
//! - A message holds the code; its `Debug` does not, and no error carries it (errors name
//!   the provider and the failure class).

pub mod smtp;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use tessera_common::UnixMillis;
use tessera_common::ids::TenantId;

use crate::challenges::code::Code;
use crate::challenges::{ChallengeId, ChallengeMethod, Destination};
use crate::config::delivery::{ChallengeSettings, ProviderSettings, Route};
use crate::keys::KeyManager;
use crate::store::StoreError;
use crate::store::challenges::ChallengeStore;

/// What is sent to a user.
pub struct Message {
    pub tenant_id: TenantId,
    pub challenge_id: ChallengeId,
    pub method: ChallengeMethod,
    pub destination: Destination,
    pub code: Code,
    /// The magic link (magic links only).
    pub link: Option<String>,
    pub expires_at: UnixMillis,
    pub now: UnixMillis,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("tenant_id", &self.tenant_id)
            .field("challenge_id", &self.challenge_id)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// Why one provider did not take a message. Never holds the code or the destination.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("destination refused: {0}")]
    Destination(String),
}

/// Why a message could not be delivered at all.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No provider is configured for the method.
    #[error("no delivery provider is configured for {0}")]
    NotConfigured(&'static str),
    /// Every provider of the method is disabled.
    #[error("every delivery provider of {0} is disabled")]
    AllDisabled(&'static str),
    /// Every enabled provider failed; the last failure.
    #[error("delivery failed: {0}")]
    Failed(SendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A provider that sends messages.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Returns `smtp` or `webhook`.
    fn kind(&self) -> &'static str;
    /// Sends `message` (one attempt, within the provider's timeout).
    async fn send(&self, message: &Message) -> Result<(), SendError>;
}

/// The outcome of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The provider that accepted the message.
    pub provider: String,
    /// Providers passed over before it, each with why (`disabled` or the failure).
    pub passed_over: Vec<(String, String)>,
}

/// A provider as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderListing {
    pub name: String,
    pub kind: &'static str,
    pub enabled: bool,
    pub roles: Vec<String>,
    pub changed_at: Option<UnixMillis>,
}

/// The configured providers and routes.
pub struct Delivery {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    routes: BTreeMap<ChallengeMethod, Route>,
    store: Arc<dyn ChallengeStore>,
}

impl Delivery {
    /// Builds the providers of `settings`; webhook providers without a configured
    /// secret sign with the tenant's webhook key from `keys`.
    pub fn new(
        settings: &ChallengeSettings,
        keys: Arc<KeyManager>,
        store: Arc<dyn ChallengeStore>,
    ) -> Result<Delivery, String> {
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for (name, provider) in &settings.providers {
            let built: Arc<dyn Provider> = match provider {
                ProviderSettings::Smtp(smtp) => Arc::new(smtp::SmtpProvider::new(name, smtp)?),
                ProviderSettings::Webhook(hook) => {
                    Arc::new(webhook::WebhookProvider::new(hook, keys.clone()))
                }
            };
            providers.insert(name.clone(), built);
        }
        Ok(Delivery::from_parts(
            providers,
            settings.routes.clone(),
            store,
        ))
    }

    /// Builds a delivery from ready providers (tests plug their own in).
    pub fn from_parts(
        providers: BTreeMap<String, Arc<dyn Provider>>,
        routes: BTreeMap<ChallengeMethod, Route>,
        store: Arc<dyn ChallengeStore>,
    ) -> Delivery {
        Delivery {
            providers,
            routes,
            store,
        }
    }

    /// Returns true when `name` is a configured provider.
    pub fn knows(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    /// Returns true when `method` has a provider configured.
    pub fn serves(&self, method: ChallengeMethod) -> bool {
        self.routes.contains_key(&method)
    }

    /// Sends `message` through its method's primary, else its backup (see the contract).
    pub async fn send(&self, message: &Message) -> Result<Sent, DeliveryError> {
        let route = self
            .routes
            .get(&message.method)
            .ok_or(DeliveryError::NotConfigured(message.method.as_str()))?;
        let disabled = self.disabled().await?;
        let mut passed_over = Vec::new();
        let mut last_failure = None;
        for name in std::iter::once(&route.primary).chain(&route.backup) {
            if disabled.contains(name) {
                passed_over.push((name.clone(), "disabled".to_owned()));
                continue;
            }
            let Some(provider) = self.providers.get(name) else {
                continue;
            };
            match provider.send(message).await {
                Ok(()) => {
                    metrics::counter!("tessera_challenge_deliveries_total",
                        "provider" => name.clone(), "outcome" => "sent")
                    .increment(1);
                    return Ok(Sent {
                        provider: name.clone(),
                        passed_over,
                    });
                }
                Err(error) => {
                    metrics::counter!("tessera_challenge_deliveries_total",
                        "provider" => name.clone(), "outcome" => "failed")
                    .increment(1);
                    tracing::warn!(provider = %name, %error, challenge = %message.challenge_id,
                        "challenge delivery failed");
                    passed_over.push((name.clone(), error.to_string()));
                    last_failure = Some(error);
                }
            }
        }
        Err(match last_failure {
            Some(error) => DeliveryError::Failed(error),
            None => DeliveryError::AllDisabled(message.method.as_str()),
        })
    }

    /// Returns every configured provider with its state and roles.
    pub async fn list(&self) -> Result<Vec<ProviderListing>, StoreError> {
        let states: BTreeMap<String, _> = self
            .store
            .provider_states()
            .await?
            .into_iter()
            .map(|state| (state.name.clone(), state))
            .collect();
        Ok(self
            .providers
            .iter()
            .map(|(name, provider)| {
                let mut roles = Vec::new();
                for (method, route) in &self.routes {
                    if &route.primary == name {
                        roles.push(format!("{}:primary", method.as_str()));
                    }
                    if route.backup.as_ref() == Some(name) {
                        roles.push(format!("{}:backup", method.as_str()));
                    }
                }
                let state = states.get(name);
                ProviderListing {
                    name: name.clone(),
                    kind: provider.kind(),
                    enabled: state.is_none_or(|state| state.enabled),
                    roles,
                    changed_at: state.map(|state| state.changed_at),
                }
            })
            .collect())
    }

    async fn disabled(&self) -> Result<BTreeSet<String>, StoreError> {
        Ok(self
            .store
            .provider_states()
            .await?
            .into_iter()
            .filter(|state| !state.enabled)
            .map(|state| state.name)
            .collect())
    }
}

/// The text of a message, for the providers that write prose (SMTP).
pub fn message_text(message: &Message) -> (String, String) {
    let minutes = (message.expires_at.0 - message.now.0).max(0) / 60_000;
    match (&message.method, &message.link) {
        (ChallengeMethod::MagicLink, Some(link)) => (
            "Your sign-in link".to_owned(),
            format!(
                "Open this link to sign in:\r\n\r\n{link}\r\n\r\nIt works once and expires in {minutes} minutes. \
                 If you did not ask for it, ignore this message.\r\n"
            ),
        ),
        _ => (
            "Your verification code".to_owned(),
            format!(
                "Your verification code is {}\r\n\r\nIt expires in {minutes} minutes. \
                 Never share it. If you did not ask for it, ignore this message.\r\n",
                message.code.expose()
            ),
        ),
    }
}
