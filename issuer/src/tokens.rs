//! Access-token issuance and introspection: building the seed's claims within policy
//! bounds, signing with the active key, and checking a token the way sidecars do.

use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::bundle::TrustBundle;
use tessera_common::claims::{AccessClaims, TokenType};
use tessera_common::ids::{KeyId, SessionId, Subject, TenantId};
use tessera_common::verify::{ClaimRules, Rejection, Rules, TenantRule, Verified, Verifier};

use crate::keys::signer::{SignError, Signer};

/// Issuance policy (DESIGN §4 defaults).
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// `iss` of every token.
    pub issuer: String,
    /// Audiences a token may be issued for; the first is the default.
    pub audiences: Vec<String>,
    pub default_ttl: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Clients should refresh this long before expiry.
    pub refresh_before: Duration,
    /// Clock leeway verifiers allow.
    pub leeway: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            issuer: "tessera".into(),
            audiences: vec!["tessera-api".into()],
            default_ttl: Duration::from_secs(15 * 60),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(15 * 60),
            refresh_before: Duration::from_secs(5 * 60),
            leeway: Duration::from_secs(30),
        }
    }
}

/// A validated issuance request (built at the gRPC edge).
#[derive(Clone, Debug)]
pub struct AccessTokenRequest {
    pub subject: Subject,
    pub tenant_id: TenantId,
    pub role: String,
    pub permissions: Vec<String>,
    pub session_id: Option<SessionId>,
    pub audience: Option<String>,
    pub ttl: Option<Duration>,
    pub mfa_verified: bool,
    pub features: Vec<String>,
    pub device_fingerprint: Option<String>,
    pub ip_address: Option<String>,
    pub last_password_change: i64,
    pub family_id: Option<String>,
}

/// A signed token and its facts. Its `Debug` leaves the token out (a bearer credential).
#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub kid: KeyId,
    pub expires_at: UnixMillis,
    pub refresh_after: UnixMillis,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("jti", &self.jti)
            .field("kid", &self.kid)
            .field("expires_at", &self.expires_at)
            .field("refresh_after", &self.refresh_after)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("ttl_seconds must be between {min} and {max}, got {got}")]
    TtlOutOfBounds { min: u64, max: u64, got: u64 },
    #[error("audience `{0}` is not one of the issuer's audiences")]
    UnknownAudience(String),
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Builds the claims of an access token issued at `now` with id `jti`.
pub fn build_claims(
    request: &AccessTokenRequest,
    policy: &TokenPolicy,
    now: UnixMillis,
    jti: String,
) -> Result<AccessClaims, IssueError> {
    let ttl = request.ttl.unwrap_or(policy.default_ttl);
    if ttl < policy.min_ttl || ttl > policy.max_ttl {
        return Err(IssueError::TtlOutOfBounds {
            min: policy.min_ttl.as_secs(),
            max: policy.max_ttl.as_secs(),
            got: ttl.as_secs(),
        });
    }
    let audience = match &request.audience {
        Some(audience) if policy.audiences.iter().any(|known| known == audience) => {
            audience.clone()
        }
        Some(audience) => return Err(IssueError::UnknownAudience(audience.clone())),
        None => policy.audiences.first().cloned().unwrap_or_default(),
    };
    let expires_at = now.plus(ttl);
    Ok(AccessClaims {
        iss: policy.issuer.clone(),
        sub: request.subject.to_string(),
        aud: audience,
        iat: now.as_secs(),
        exp: expires_at.as_secs(),
        nbf: now.as_secs(),
        jti,
        iat_ms: now.0,
        tenant_id: request.tenant_id.to_string(),
        role: request.role.clone(),
        permissions: request.permissions.clone(),
        session_id: request
            .session_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        token_type: TokenType::Access.as_str().to_owned(),
        device_fingerprint: request.device_fingerprint.clone(),
        ip_address: request.ip_address.clone(),
        mfa_verified: request.mfa_verified,
        last_password_change: request.last_password_change,
        features: request.features.clone(),
        family_id: request.family_id.clone(),
    })
}

/// Signs an access token for `request` with `signer` at `now`.
pub fn issue(
    signer: &Signer,
    request: &AccessTokenRequest,
    policy: &TokenPolicy,
    now: UnixMillis,
) -> Result<IssuedToken, IssueError> {
    let jti = uuid::Uuid::now_v7().to_string();
    let claims = build_claims(request, policy, now, jti.clone())?;
    let token = signer.sign_jws(TokenType::Access.jws_typ(), &claims)?;
    let expires_at = UnixMillis::from_secs(claims.exp);
    let refresh_after = expires_at.minus(policy.refresh_before).max(now);
    Ok(IssuedToken {
        token,
        jti,
        kid: signer.kid().clone(),
        expires_at,
        refresh_after,
    })
}

/// The result of introspecting a token.
#[derive(Clone, Debug)]
pub struct Introspection {
    pub claims: AccessClaims,
    pub claims_json: String,
    pub kid: String,
}

/// Checks the access token `token` against `bundle` at `now` exactly as a sidecar would
/// (the one pipeline of `tessera_common::verify`, with the keys `verifier` parsed once
/// per bundle revision), accepting any of the policy audiences.
///
/// `may_see_tenant` says whether the caller may learn about a token of a tenant. The
/// pipeline asks it right after the signature is verified and the claims decoded, before
/// anything about the token's state: a token of a tenant the caller may not see is
/// [`Rejection::WrongTenant`] whether it is live, expired or revoked, so its state never
/// leaks across tenants. (Rejections before that point depend only on the token's bytes
/// and the published keys, which the caller already has.)
pub fn introspect(
    token: &str,
    bundle: &TrustBundle,
    verifier: &Verifier,
    now: UnixMillis,
    may_see_tenant: &dyn Fn(&str) -> bool,
) -> Result<Introspection, Rejection> {
    let rules = Rules {
        claims: ClaimRules::new(&bundle.policy, TokenType::Access),
        tenant: TenantRule::Admitted(may_see_tenant),
        required_permissions: &[],
        required_role: None,
    };
    let verified: Verified<AccessClaims> =
        verifier.verify(token, &rules, &bundle.revocations, now)?;
    Ok(Introspection {
        claims: verified.claims,
        claims_json: verified.claims_json,
        kid: verified.kid,
    })
}

#[cfg(test)]
mod tests {
    use tessera_common::bundle::ValidationPolicy;
    use tessera_common::keys::{Algorithm, KeySchedule, KeySetName};
    use tessera_common::revocation::{RevocationEntry, RevocationKind};

    use super::*;
    use crate::keys::material;

    fn request() -> AccessTokenRequest {
        AccessTokenRequest {
            subject: Subject::new("user-1").unwrap(),
            tenant_id: TenantId::new("acme").unwrap(),
            role: "staff".into(),
            permissions: vec!["invoices:read".into()],
            session_id: None,
            audience: None,
            ttl: None,
            mfa_verified: true,
            features: vec![],
            device_fingerprint: None,
            ip_address: None,
            last_password_change: 0,
            family_id: None,
        }
    }

    #[test]
    fn claims_carry_the_seed_fields_and_millisecond_issuance() {
        let now = UnixMillis(1_700_000_000_123);
        let claims = build_claims(&request(), &TokenPolicy::default(), now, "j".into()).unwrap();
        assert_eq!(claims.iat, 1_700_000_000);
        assert_eq!(claims.iat_ms, 1_700_000_000_123);
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.aud, "tessera-api");
        assert_eq!(claims.token_type, TokenType::Access.as_str());
        assert!(!claims.session_id.is_empty());
    }

    #[test]
    fn ttl_and_audience_are_bounded_by_policy() {
        let policy = TokenPolicy::default();
        let now = UnixMillis(0);
        let too_long = AccessTokenRequest {
            ttl: Some(Duration::from_secs(3600)),
            ..request()
        };
        let message = build_claims(&too_long, &policy, now, "j".into())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("ttl_seconds") && message.contains("3600"),
            "{message}"
        );
        let stranger = AccessTokenRequest {
            audience: Some("elsewhere".into()),
            ..request()
        };
        assert!(matches!(
            build_claims(&stranger, &policy, now, "j".into()),
            Err(IssueError::UnknownAudience(_))
        ));
    }

    /// A bundle holding one active EdDSA access key, and its signer.
    fn bundle_and_signer() -> (TrustBundle, Signer) {
        let generated = material::generate(Algorithm::EdDsa, "k1").unwrap();
        let kid = KeyId::new("k1").unwrap();
        let signer =
            Signer::from_pkcs8(kid.clone(), Algorithm::EdDsa, &generated.private_key).unwrap();
        let mut bundle = TrustBundle::empty(ValidationPolicy::new(
            "tessera".into(),
            vec!["tessera-api".into()],
            Duration::from_secs(30),
            Duration::from_secs(900),
        ));
        bundle.keys.insert(
            kid.clone(),
            KeySchedule {
                kid,
                key_set: KeySetName::Access,
                algorithm: Algorithm::EdDsa,
                created_at: UnixMillis(0),
                activates_at: UnixMillis(0),
                deactivates_at: None,
                verify_until: None,
                revoked_at: None,
                public_jwk: generated.public_jwk,
            },
        );
        (bundle, signer)
    }

    /// Introspects `token` against `bundle` with its keys freshly parsed.
    fn introspect_with(
        token: &str,
        bundle: &TrustBundle,
        now: UnixMillis,
        may_see_tenant: impl Fn(&str) -> bool,
    ) -> Result<Introspection, Rejection> {
        let verifier = Verifier::build(&bundle.keys, None);
        introspect(token, bundle, &verifier, now, &may_see_tenant)
    }

    #[test]
    fn introspection_hides_the_state_of_another_tenants_token() {
        let (mut bundle, signer) = bundle_and_signer();
        let issued_at = UnixMillis(1_700_000_000_000);
        let token = issue(&signer, &request(), &TokenPolicy::default(), issued_at).unwrap();
        let only_globex = |tenant: &str| tenant == "globex";
        let only_acme = |tenant: &str| tenant == "acme";
        let live = issued_at.plus(Duration::from_secs(60));
        assert!(introspect_with(&token.token, &bundle, live, only_acme).is_ok());
        assert_eq!(
            introspect_with(&token.token, &bundle, live, only_globex).unwrap_err(),
            Rejection::WrongTenant
        );
        // Expired: the owner learns it, another tenant does not.
        let late = issued_at.plus(Duration::from_secs(3_600));
        assert_eq!(
            introspect_with(&token.token, &bundle, late, only_acme).unwrap_err(),
            Rejection::Expired
        );
        assert_eq!(
            introspect_with(&token.token, &bundle, late, only_globex).unwrap_err(),
            Rejection::WrongTenant
        );
        // Revoked: likewise.
        bundle.revocations.insert(RevocationEntry {
            kind: RevocationKind::Jti,
            value: token.jti.clone(),
            tenant_id: None,
            revoked_at: live,
            drop_after: late,
        });
        assert_eq!(
            introspect_with(&token.token, &bundle, live, only_acme).unwrap_err(),
            Rejection::Revoked
        );
        assert_eq!(
            introspect_with(&token.token, &bundle, live, only_globex).unwrap_err(),
            Rejection::WrongTenant
        );
    }

    #[test]
    fn introspection_answers_for_access_tokens_only() {
        // The same key and claims, typed as another kind of token: introspection asks the
        // pipeline for an access token, so neither the header nor the claim may differ.
        let (bundle, signer) = bundle_and_signer();
        let now = UnixMillis(1_700_000_000_000);
        let any = |_: &str| true;
        let claims = build_claims(&request(), &TokenPolicy::default(), now, "j".into()).unwrap();
        let as_service = signer
            .sign_jws(TokenType::Service.jws_typ(), &claims)
            .unwrap();
        assert_eq!(
            introspect_with(&as_service, &bundle, now, any).unwrap_err(),
            Rejection::WrongTokenType
        );
        let relabelled = AccessClaims {
            token_type: TokenType::Service.as_str().into(),
            ..claims
        };
        let token = signer
            .sign_jws(TokenType::Access.jws_typ(), &relabelled)
            .unwrap();
        assert_eq!(
            introspect_with(&token, &bundle, now, any).unwrap_err(),
            Rejection::WrongTokenType
        );
    }

    #[test]
    fn introspection_applies_the_shared_validity_bounds() {
        let (bundle, signer) = bundle_and_signer();
        let now = UnixMillis(1_700_000_000_000);
        let any = |_: &str| true;
        let sign = |claims: &AccessClaims| {
            signer
                .sign_jws(TokenType::Access.jws_typ(), claims)
                .unwrap()
        };
        let mut claims =
            build_claims(&request(), &TokenPolicy::default(), now, "j".into()).unwrap();
        assert!(introspect_with(&sign(&claims), &bundle, now, any).is_ok());
        claims.exp = claims.iat + 10 * 365 * 86_400;
        assert_eq!(
            introspect_with(&sign(&claims), &bundle, now, any).unwrap_err(),
            Rejection::LifetimeTooLong
        );
        let future = now.plus(Duration::from_secs(3_600));
        let claims = build_claims(&request(), &TokenPolicy::default(), future, "j".into()).unwrap();
        assert_eq!(
            introspect_with(&sign(&claims), &bundle, now, any).unwrap_err(),
            Rejection::NotYetValid
        );
    }
}
