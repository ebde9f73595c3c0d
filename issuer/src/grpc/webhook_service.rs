//! `tessera.v1.WebhookService`: signing and verifying webhook messages for a tenant, and
//! handing the tenant's secrets to its receivers. Every call names its tenant, which the
//! caller must be allowed to act on (`App::check_tenant`), so a tenant-confined caller
//! signs, verifies and reads secrets for its own tenants only. It also issues and
//! revokes `tbw_` webhook tokens (`opaque_tokens.rs`), for receivers that authenticate
//! callbacks by bearer token; they are validated by `ServiceTokenService`.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::ids::TenantId;
use tessera_common::keys::KeyState;
use tessera_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::{debug, instrument};

use super::convert;
use super::service_token_service::{from_opaque_token, revoke_opaque, token_info};
use super::status::from_key;
use crate::app::{App, request_id};
use crate::audit::{Actor, AuditAction};
use crate::auth::{Caller, Scope};
use crate::opaque_tokens::NewWebhookToken;
use crate::store::OpaqueTokenKind;
use crate::webhooks::{self, ReceivedHeaders, SignError, Verdict, WebhookError, WebhookId};

const SIGN: &str = "WebhookService/SignWebhook";
const VERIFY: &str = "WebhookService/VerifyWebhook";
const SECRETS: &str = "WebhookService/GetWebhookSecrets";
const ISSUE_TOKEN: &str = "WebhookService/IssueWebhookToken";
const REVOKE_TOKEN: &str = "WebhookService/RevokeWebhookToken";

/// The WebhookService implementation.
pub struct WebhookServiceImpl {
    pub app: Arc<App>,
}

impl WebhookServiceImpl {
    /// Authorizes `rpc` with `scope` and checks the caller may act on `tenant_id`.
    async fn caller_for<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        scope: Scope,
        tenant_id: &str,
    ) -> Result<(Caller, TenantId, String), Status> {
        let caller = self.app.authorize(request, rpc, scope).await?;
        let tenant = TenantId::new(tenant_id)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let request_id = request_id(request);
        self.app
            .check_tenant(&caller, tenant.as_str(), rpc, &request_id)
            .await?;
        Ok((caller, tenant, request_id))
    }
}

/// Maps a signing failure to its status.
fn from_webhook(error: WebhookError) -> Status {
    match error {
        WebhookError::Sign(SignError::PayloadTooLarge) => {
            Status::invalid_argument(SignError::PayloadTooLarge.to_string())
        }
        WebhookError::Sign(SignError::NoKey) => {
            Status::unavailable("key set `webhook` has no active signing key")
        }
        WebhookError::Key(error) => from_key(error),
    }
}

/// Returns the verdict's wire code.
fn verdict_code(verdict: &Verdict) -> pb::WebhookVerdict {
    match verdict {
        Verdict::Valid { .. } => pb::WebhookVerdict::Valid,
        Verdict::SignatureMismatch => pb::WebhookVerdict::SignatureMismatch,
        Verdict::TimestampTooOld => pb::WebhookVerdict::TimestampTooOld,
        Verdict::TimestampTooNew => pb::WebhookVerdict::TimestampTooNew,
        Verdict::MalformedHeaders(_) => pb::WebhookVerdict::MalformedHeaders,
        Verdict::PayloadTooLarge => pb::WebhookVerdict::PayloadTooLarge,
    }
}

#[tonic::async_trait]
impl pb::webhook_service_server::WebhookService for WebhookServiceImpl {
    #[instrument(skip(self, request))]
    async fn sign_webhook(
        &self,
        request: Request<pb::SignWebhookRequest>,
    ) -> Result<Response<pb::SignWebhookResponse>, Status> {
        let (_, tenant, _) = self
            .caller_for(&request, SIGN, Scope::Issue, &request.get_ref().tenant_id)
            .await?;
        let message = request.into_inner();
        let webhook_id = if message.webhook_id.is_empty() {
            None
        } else {
            Some(
                WebhookId::new(message.webhook_id)
                    .map_err(|error| Status::invalid_argument(error.to_string()))?,
            )
        };
        let signed = webhooks::sign(
            &self.app.keys,
            &tenant,
            &message.payload,
            webhook_id,
            self.app.now(),
        )
        .await
        .map_err(from_webhook)?;
        metrics::counter!("tessera_webhooks_signed_total").increment(1);
        Ok(Response::new(pb::SignWebhookResponse {
            webhook_id: signed.webhook_id.as_str().to_owned(),
            webhook_timestamp: signed.timestamp.to_string(),
            webhook_signature: signed.signature,
            kids: signed
                .kids
                .iter()
                .map(|kid| kid.as_str().to_owned())
                .collect(),
        }))
    }

    #[instrument(skip(self, request))]
    async fn verify_webhook(
        &self,
        request: Request<pb::VerifyWebhookRequest>,
    ) -> Result<Response<pb::VerifyWebhookResponse>, Status> {
        let (_, tenant, _) = self
            .caller_for(
                &request,
                VERIFY,
                Scope::Introspect,
                &request.get_ref().tenant_id,
            )
            .await?;
        let message = request.into_inner();
        let headers = ReceivedHeaders {
            webhook_id: &message.webhook_id,
            timestamp: &message.webhook_timestamp,
            signature: &message.webhook_signature,
        };
        let verdict = webhooks::verify(
            &self.app.keys,
            &tenant,
            headers,
            &message.payload,
            self.app.now(),
        )
        .await
        .map_err(from_key)?;
        let code = verdict_code(&verdict);
        metrics::counter!(
            "tessera_webhooks_verified_total",
            "verdict" => code.as_str_name().to_ascii_lowercase()
        )
        .increment(1);
        let kid = match &verdict {
            Verdict::Valid { kid } => kid.as_str().to_owned(),
            Verdict::MalformedHeaders(detail) => {
                debug!(tenant = %tenant.as_str(), detail, "webhook headers malformed");
                String::new()
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::VerifyWebhookResponse {
            valid: code == pb::WebhookVerdict::Valid,
            verdict: code as i32,
            kid,
        }))
    }

    #[instrument(skip(self, request))]
    async fn issue_webhook_token(
        &self,
        request: Request<pb::IssueWebhookTokenRequest>,
    ) -> Result<Response<pb::IssueWebhookTokenResponse>, Status> {
        let (caller, tenant, request_id) = self
            .caller_for(
                &request,
                ISSUE_TOKEN,
                Scope::Issue,
                &request.get_ref().tenant_id,
            )
            .await?;
        let message = request.into_inner();
        let actor = Actor::client(caller.client_id.clone(), request_id, String::new());
        let (record, credential) = self
            .app
            .opaque_tokens
            .issue_webhook(
                &actor,
                NewWebhookToken {
                    tenant_id: tenant,
                    endpoint: message.endpoint,
                    permissions: message.permissions,
                    ttl: (message.ttl_seconds > 0)
                        .then(|| Duration::from_secs(u64::from(message.ttl_seconds))),
                },
            )
            .await
            .map_err(from_opaque_token)?;
        Ok(Response::new(pb::IssueWebhookTokenResponse {
            token: credential.expose(),
            info: Some(token_info(&record, self.app.now())),
        }))
    }

    #[instrument(skip(self, request))]
    async fn revoke_webhook_token(
        &self,
        request: Request<pb::RevokeWebhookTokenRequest>,
    ) -> Result<Response<pb::OpaqueTokenInfo>, Status> {
        let caller = self
            .app
            .authorize(&request, REVOKE_TOKEN, Scope::Admin)
            .await?;
        let request_id = request_id(&request);
        let message = request.into_inner();
        super::reason::optional_reason(&message.reason)?;
        revoke_opaque(
            &self.app,
            &caller,
            request_id,
            OpaqueTokenKind::Webhook,
            &message.token_id,
            message.reason,
        )
        .await
        .map(Response::new)
    }

    #[instrument(skip(self, request))]
    async fn get_webhook_secrets(
        &self,
        request: Request<pb::GetWebhookSecretsRequest>,
    ) -> Result<Response<pb::GetWebhookSecretsResponse>, Status> {
        let (caller, tenant, request_id) = self
            .caller_for(
                &request,
                SECRETS,
                Scope::Admin,
                &request.get_ref().tenant_id,
            )
            .await?;
        let now = self.app.now();
        let keys = webhooks::tenant_keys(&self.app.keys, &tenant, now)
            .await
            .map_err(from_key)?;
        let kids: Vec<&str> = keys.iter().map(|key| key.schedule().kid.as_str()).collect();
        // Audited before the secrets leave: the entry names the tenant and the kids, never
        // a secret.
        let actor = Actor::client(
            caller.client_id.clone(),
            request_id,
            format!("kids {}", kids.join(",")),
        );
        self.app
            .audit(actor.entry(now, AuditAction::WebhookSecretsRead, tenant.as_str()))
            .await;
        let secrets = keys
            .iter()
            .map(|key| {
                let schedule = key.schedule();
                pb::WebhookSecret {
                    kid: schedule.kid.as_str().to_owned(),
                    state: key.state().name().to_owned(),
                    secret: key.whsec().to_string(),
                    activates_at: Some(convert::timestamp(schedule.activates_at)),
                    verify_until: match key.state() {
                        KeyState::Retiring { verify_until } => {
                            Some(convert::timestamp(verify_until))
                        }
                        _ => schedule.verify_until.map(convert::timestamp),
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::GetWebhookSecretsResponse { secrets }))
    }
}

#[cfg(test)]
mod tests {
    use tessera_common::ids::KeyId;
    use tessera_common::keys::KeySetName;
    use tonic::Code;

    use super::*;
    use crate::keys::manager::KeyError;

    #[test]
    fn every_verdict_has_its_own_wire_code() {
        let verdicts = [
            Verdict::Valid {
                kid: KeyId::new("k").unwrap(),
            },
            Verdict::SignatureMismatch,
            Verdict::TimestampTooOld,
            Verdict::TimestampTooNew,
            Verdict::MalformedHeaders("detail"),
            Verdict::PayloadTooLarge,
        ];
        let codes: Vec<pb::WebhookVerdict> = verdicts.iter().map(verdict_code).collect();
        assert_eq!(
            codes,
            [
                pb::WebhookVerdict::Valid,
                pb::WebhookVerdict::SignatureMismatch,
                pb::WebhookVerdict::TimestampTooOld,
                pb::WebhookVerdict::TimestampTooNew,
                pb::WebhookVerdict::MalformedHeaders,
                pb::WebhookVerdict::PayloadTooLarge,
            ]
        );
    }

    #[test]
    fn every_signing_error_maps_to_a_status_without_detail() {
        let too_large = from_webhook(SignError::PayloadTooLarge.into());
        assert_eq!(too_large.code(), Code::InvalidArgument);
        assert!(too_large.message().starts_with("payload:"), "{too_large:?}");
        assert_eq!(
            from_webhook(SignError::NoKey.into()).code(),
            Code::Unavailable
        );
        assert_eq!(
            from_webhook(KeyError::NoSigner(KeySetName::Webhook).into()).code(),
            Code::Unavailable
        );
    }
}
