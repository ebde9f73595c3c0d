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
    use std::time::Duration;

    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};
    use tessera_common::bundle::{TrustBundle, ValidationPolicy};
    use tessera_common::clock::{ManualClock, UnixMillis};
    use tessera_common::ids::KeyId;
    use tessera_common::jwk::Jwk;
    use tessera_common::keys::{Algorithm, KeySchedule, KeySetName};

    use super::*;
    use crate::config::{CredentialSource, IssuerConfig};

    /// When the test tokens are issued.
    const ISSUED: UnixMillis = UnixMillis(1_800_000_000_000);
    /// Their lifetime, in seconds.
    const LIFETIME_SECS: i64 = 600;

    /// An `ActionTokens` over a bundle holding one Ed25519 key of the action set, read
    /// at a clock the test moves; its issuer client points nowhere and is never called.
    struct Fixture {
        key_pair: Ed25519KeyPair,
        clock: ManualClock,
        tokens: ActionTokens,
    }

    impl Fixture {
        fn new() -> Fixture {
            let key_pair = Ed25519KeyPair::generate().unwrap();
            let x = URL_SAFE_NO_PAD.encode(key_pair.public_key().as_ref());
            let kid = KeyId::new("a1").unwrap();
            let schedule = KeySchedule {
                kid: kid.clone(),
                key_set: KeySetName::Action,
                algorithm: Algorithm::EdDsa,
                created_at: UnixMillis(0),
                activates_at: UnixMillis(0),
                deactivates_at: None,
                verify_until: None,
                revoked_at: None,
                public_jwk: Jwk {
                    kty: "OKP".into(),
                    kid: "a1".into(),
                    alg: "EdDSA".into(),
                    use_: "sig".into(),
                    n: None,
                    e: None,
                    crv: Some("Ed25519".into()),
                    x: Some(x),
                    y: None,
                },
            };
            let policy = ValidationPolicy::new(
                "tessera".into(),
                vec!["tessera-api".into()],
                Duration::from_secs(30),
                Duration::from_secs(900),
            );
            let mut bundle = TrustBundle::empty(policy);
            bundle.keys.insert(kid, schedule);
            let state = Arc::new(BundleState::new(Vec::new()));
            state.replace(bundle);
            let clock = ManualClock::new(ISSUED);
            state.touch(clock.now());
            // A lazy channel: nothing connects until a call, and local_refusal makes none.
            let issuer = IssuerClient::new(&IssuerConfig {
                addr: "http://127.0.0.1:1".into(),
                credential: CredentialSource::None,
                tls: None,
                subscriber_id: "action-tests".into(),
            })
            .unwrap();
            let tokens = ActionTokens::new(issuer, state, Arc::new(clock.clone()));
            Fixture {
                key_pair,
                clock,
                tokens,
            }
        }

        /// Signs `claims` under a header of `typ` and returns the `tba_` token.
        fn sign(&self, typ: &str, claims: &Value) -> String {
            let header = json!({"alg": "EdDSA", "kid": "a1", "typ": typ});
            let signing_input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature = self.key_pair.sign(signing_input.as_bytes());
            format!(
                "{ACTION_PREFIX}{signing_input}.{}",
                URL_SAFE_NO_PAD.encode(signature.as_ref())
            )
        }

        /// An action token as the issuer mints it, for confirm_payment on inv-1.
        fn action_token(&self) -> String {
            self.sign("action+jwt", &action_claims("action"))
        }

        fn refusal(&self, request: &pb::ConsumeActionTokenRequest) -> Option<pb::ActionRefusal> {
            self.tokens.local_refusal(request)
        }
    }

    /// The claims of an issuer-minted action token (`build_claims`), issued at `ISSUED`.
    fn action_claims(token_type: &str) -> Value {
        json!({
            "iss": "tessera", "sub": "user-1", "aud": "tessera-api",
            "iat": ISSUED.as_secs(), "exp": ISSUED.as_secs() + LIFETIME_SECS,
            "nbf": ISSUED.as_secs(), "jti": "act-1", "iat_ms": ISSUED.0,
            "tenant_id": "acme", "token_type": token_type,
            "action": "confirm_payment", "resource_id": "inv-1", "user_id": "user-1",
            "single_use": true, "params": {}, "confirmation_required": false,
        })
    }

    /// Replaces one signature character in the middle (never the last one, whose spare
    /// bits strict base64url refuses to vary): same length, a signature that fails.
    fn tamper_signature(token: &str) -> String {
        let at = token.len() - 10;
        let replacement = if &token[at..=at] == "A" { "B" } else { "A" };
        format!("{}{replacement}{}", &token[..at], &token[at + 1..])
    }

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

    #[tokio::test]
    async fn a_valid_action_token_within_its_lifetime_is_forwarded() {
        let fixture = Fixture::new();
        let token = fixture.action_token();
        assert_eq!(fixture.refusal(&request(&token)), None);
        // Still forwarded at the last instant exp + leeway has not reached.
        let deadline = UnixMillis::from_secs(ISSUED.as_secs() + LIFETIME_SECS + 30);
        fixture.clock.set(UnixMillis(deadline.0 - 1));
        assert_eq!(fixture.refusal(&request(&token)), None);
    }

    #[tokio::test]
    async fn an_expired_action_token_is_refused_locally_as_expired() {
        let fixture = Fixture::new();
        let token = fixture.action_token();
        assert_eq!(fixture.refusal(&request(&token)), None);
        // Past exp, within the 30 s leeway: still forwarded.
        fixture
            .clock
            .advance(Duration::from_secs(LIFETIME_SECS as u64 + 1));
        assert_eq!(fixture.refusal(&request(&token)), None);
        // At exp + leeway and beyond: expired.
        fixture
            .clock
            .set(UnixMillis::from_secs(ISSUED.as_secs() + LIFETIME_SECS + 30));
        assert_eq!(
            fixture.refusal(&request(&token)),
            Some(pb::ActionRefusal::Expired)
        );
        fixture.clock.advance(Duration::from_secs(3_600));
        assert_eq!(
            fixture.refusal(&request(&token)),
            Some(pb::ActionRefusal::Expired)
        );
    }

    #[tokio::test]
    async fn a_token_for_another_action_or_resource_is_refused_locally() {
        let fixture = Fixture::new();
        let token = fixture.action_token();
        let wrong_action = pb::ConsumeActionTokenRequest {
            action: "approve_invoice".into(),
            ..request(&token)
        };
        assert_eq!(
            fixture.refusal(&wrong_action),
            Some(pb::ActionRefusal::WrongAction)
        );
        let wrong_resource = pb::ConsumeActionTokenRequest {
            resource_id: "inv-2".into(),
            ..request(&token)
        };
        assert_eq!(
            fixture.refusal(&wrong_resource),
            Some(pb::ActionRefusal::WrongResource)
        );
    }

    #[tokio::test]
    async fn forgeries_and_access_tokens_are_refused_locally() {
        let fixture = Fixture::new();
        let token = fixture.action_token();
        let forged = tamper_signature(&token);
        assert_eq!(forged.len(), token.len());
        assert_ne!(forged, token);
        assert_eq!(
            fixture.refusal(&request(&forged)),
            Some(pb::ActionRefusal::BadSignature)
        );

        // Signed by the action key but typed as an access token, header and claim.
        let access = fixture.sign("at+jwt", &action_claims("access"));
        assert_eq!(
            fixture.refusal(&request(&access)),
            Some(pb::ActionRefusal::WrongTokenType)
        );
        // Only the header says access: still not an action token.
        let access_typ = fixture.sign("at+jwt", &action_claims("action"));
        assert_eq!(
            fixture.refusal(&request(&access_typ)),
            Some(pb::ActionRefusal::WrongTokenType)
        );
        // Only the claim says access.
        let access_claim = fixture.sign("action+jwt", &action_claims("access"));
        assert_eq!(
            fixture.refusal(&request(&access_claim)),
            Some(pb::ActionRefusal::WrongTokenType)
        );
    }
}
