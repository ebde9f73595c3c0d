//! `ConsumeActionToken` at the sidecar (issue 11): what the sidecar can decide alone it
//! decides alone, the rest goes to the issuer.
//!
//! Refused here, without an issuer call: a token without the `tba_` prefix, over the size
//! bound, malformed, signed by no key the bundle holds (action keys are prepublished, so
//! an unknown kid is a forgery, not a sidecar behind), with a bad signature or an
//! algorithm not its key's, not an action token (typ, `token_type` and the signing key's
//! set must all say so — an access token never passes), expired or not yet valid,
//! revoked, or minted for another action or resource than the one asserted. Forgeries
//! and mismatches thus cost the issuer nothing.
//!
//! Forwarded, with the sidecar's issuer credential (it needs `introspect`): everything
//! else, because single use is a fact only the issuer's store holds (ONE conditional
//! write there decides), as are the caller's tenant confinement, the IP allowlist and the
//! user-agent binding. The issuer re-runs every check; the sidecar's are only a filter.
//! No bundle yet: everything is forwarded.

use std::sync::Arc;

use tessera_common::Clock;
use tessera_common::claims::{ActionClaims, TokenType};
use tessera_common::limits::MAX_TOKEN_BYTES;
use tessera_common::verify::{
    ClaimRules, Rejection, Rules, TenantRule, authenticate, parse_compact,
};
use tessera_proto::v1 as pb;
use tonic::Status;

use crate::issuer_client::IssuerClient;
use crate::state::BundleState;

/// The prefix of action tokens.
const ACTION_PREFIX: &str = "tba_";
/// Longest token field accepted at all (the issuer's own request bound).
const MAX_TOKEN_FIELD_BYTES: usize = 16 * 1024;
/// Longest action name and resource id (the issuer's bounds).
const MAX_ACTION_BYTES: usize = 64;
const MAX_RESOURCE_BYTES: usize = 256;

/// The sidecar's action-token filter and its issuer client.
#[derive(Clone)]
pub struct ActionTokens {
    issuer: IssuerClient,
    bundle: Arc<BundleState>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ActionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionTokens").finish_non_exhaustive()
    }
}

impl ActionTokens {
    pub fn new(issuer: IssuerClient, bundle: Arc<BundleState>, clock: Arc<dyn Clock>) -> Self {
        ActionTokens {
            issuer,
            bundle,
            clock,
        }
    }

    /// Answers `ConsumeActionToken`: a local refusal, or the issuer's answer.
    pub async fn consume(
        &self,
        request: pb::ConsumeActionTokenRequest,
    ) -> Result<pb::ConsumeActionTokenResponse, Status> {
        check_request(&request)?;
        if let Some(refusal) = self.local_refusal(&request) {
            metrics::counter!("tessera_sidecar_action_tokens_total", "outcome" => "refused_locally")
                .increment(1);
            return Ok(pb::ConsumeActionTokenResponse {
                refusal: refusal.into(),
                ..Default::default()
            });
        }
        metrics::counter!("tessera_sidecar_action_tokens_total", "outcome" => "forwarded")
            .increment(1);
        self.issuer.consume_action_token(request).await
    }

    /// Returns the refusal the sidecar can give alone, if any.
    fn local_refusal(&self, request: &pb::ConsumeActionTokenRequest) -> Option<pb::ActionRefusal> {
        let view = self.bundle.view()?;
        let Some(jws_text) = request.token.strip_prefix(ACTION_PREFIX) else {
            return Some(if request.token.matches('.').count() == 2 {
                pb::ActionRefusal::WrongTokenType
            } else {
                pb::ActionRefusal::Malformed
            });
        };
        if jws_text.len() > MAX_TOKEN_BYTES {
            return Some(pb::ActionRefusal::TooLarge);
        }
        let now = self.clock.now();
        let verified = (|| {
            let jws = parse_compact(jws_text)?;
            let kid = jws.header.kid.as_deref().ok_or(Rejection::Malformed)?;
            let key = view.key(kid).ok_or(Rejection::UnknownKid)?.usable_at(now)?;
            let verified = authenticate::<ActionClaims>(&jws, kid, key)?;
            let rules = Rules {
                claims: ClaimRules::new(&view.bundle.policy, TokenType::Action),
                // The caller's tenant confinement is the issuer's to check.
                tenant: TenantRule::Any,
                required_permissions: &[],
                required_role: None,
            };
            verified.check(&rules, &view.bundle.revocations, now)?;
            Ok::<_, Rejection>(verified.claims)
        })();
        let claims = match verified {
            Ok(claims) => claims,
            Err(rejection) => {
                tracing::debug!(reason = rejection.as_str(), "action token refused locally");
                return Some(refusal_of(rejection));
            }
        };
        if claims.action != request.action {
            return Some(pb::ActionRefusal::WrongAction);
        }
        if claims.resource_id != request.resource_id {
            return Some(pb::ActionRefusal::WrongResource);
        }
        None
    }
}

/// The request bounds the issuer applies, so an oversized request never leaves the pod.
fn check_request(request: &pb::ConsumeActionTokenRequest) -> Result<(), Status> {
    let bounded = |field: &str, value: &str, max: usize, required: bool| {
        if required && value.is_empty() {
            return Err(Status::invalid_argument(format!("{field}: required")));
        }
        if value.len() > max {
            return Err(Status::invalid_argument(format!(
                "{field}: longer than {max} bytes"
            )));
        }
        Ok(())
    };
    bounded("token", &request.token, MAX_TOKEN_FIELD_BYTES, true)?;
    bounded("action", &request.action, MAX_ACTION_BYTES, true)?;
    bounded(
        "resource_id",
        &request.resource_id,
        MAX_RESOURCE_BYTES,
        true,
    )?;
    bounded(
        "confirmation_token",
        &request.confirmation_token,
        MAX_TOKEN_FIELD_BYTES,
        false,
    )?;
    bounded("client_ip", &request.client_ip, 64, false)?;
    bounded("user_agent", &request.user_agent, 1024, false)
}

/// The issuer's mapping of pipeline rejections to action refusals.
fn refusal_of(rejection: Rejection) -> pb::ActionRefusal {
    match rejection {
        Rejection::Malformed => pb::ActionRefusal::Malformed,
        Rejection::TooLarge => pb::ActionRefusal::TooLarge,
        Rejection::UnknownKid
        | Rejection::AlgorithmMismatch
        | Rejection::BadSignature
        | Rejection::KeyNotActive => pb::ActionRefusal::BadSignature,
        Rejection::Expired => pb::ActionRefusal::Expired,
        Rejection::NotYetValid => pb::ActionRefusal::NotYetValid,
        Rejection::Revoked | Rejection::KeyRevoked => pb::ActionRefusal::Revoked,
        Rejection::WrongTenant => pb::ActionRefusal::WrongTenant,
        Rejection::WrongIssuer
        | Rejection::WrongAudience
        | Rejection::WrongTokenType
        | Rejection::LifetimeTooLong
        | Rejection::UnknownTokenType
        | Rejection::InsufficientPermissions
        | Rejection::WrongRole
        | Rejection::BundleStale => pb::ActionRefusal::WrongTokenType,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str) -> pb::ConsumeActionTokenRequest {
        pb::ConsumeActionTokenRequest {
            token: token.into(),
            action: "confirm_payment".into(),
            resource_id: "inv-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn request_bounds_are_the_issuers() {
        assert!(check_request(&request("tba_x")).is_ok());
        assert_eq!(
            check_request(&request("")).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let huge = "a".repeat(MAX_TOKEN_FIELD_BYTES + 1);
        assert!(check_request(&request(&huge)).is_err());
        let no_action = pb::ConsumeActionTokenRequest {
            action: String::new(),
            ..request("tba_x")
        };
        assert!(check_request(&no_action).is_err());
    }

    #[test]
    fn signature_failures_are_bad_signatures_and_type_failures_wrong_types() {
        assert_eq!(
            refusal_of(Rejection::UnknownKid),
            pb::ActionRefusal::BadSignature
        );
        assert_eq!(
            refusal_of(Rejection::WrongTokenType),
            pb::ActionRefusal::WrongTokenType
        );
        assert_eq!(refusal_of(Rejection::Expired), pb::ActionRefusal::Expired);
    }
}
