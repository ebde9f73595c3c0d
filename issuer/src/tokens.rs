//! Access-token issuance and introspection: building the seed's claims within policy
//! bounds, signing with the active key, and checking a token the way sidecars do.

use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::bundle::TrustBundle;
use tessera_common::claims::{ACCESS_TOKEN_TYP, AccessClaims};
use tessera_common::ids::{KeyId, SessionId, Subject, TenantId};
use tessera_common::verify::{self, ClaimRules, Rejection, VerifyingKey};

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

/// A signed token and its facts.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub kid: KeyId,
    pub expires_at: UnixMillis,
    pub refresh_after: UnixMillis,
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
        token_type: "access".into(),
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
    let token = signer.sign_jws(ACCESS_TOKEN_TYP, &claims)?;
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

/// Checks `token` against `bundle` at `now` exactly as a sidecar would (signature, pinned
/// algorithm, issuer, lifetime, type, revocation), accepting any of the policy audiences.
pub fn introspect(
    token: &str,
    bundle: &TrustBundle,
    now: UnixMillis,
) -> Result<Introspection, Rejection> {
    let jws = verify::parse_compact(token)?;
    let kid = jws.header.kid.clone().ok_or(Rejection::Malformed)?;
    let kid_key = KeyId::new(kid.clone()).map_err(|_| Rejection::Malformed)?;
    let schedule = bundle.keys.get(&kid_key).ok_or(Rejection::UnknownKid)?;
    let key = VerifyingKey::from_schedule(schedule).map_err(|_| Rejection::UnknownKid)?;
    verify::check_signature(&jws, &key)?;
    let (claims, claims_json) = verify::decode_claims(&jws)?;
    let rules = ClaimRules {
        issuer: &bundle.policy.issuer,
        audiences: &bundle.policy.audiences,
        required_audience: None,
        leeway: Duration::from_secs(u64::from(bundle.policy.leeway_seconds)),
        token_type: "access",
    };
    verify::check_claims(&jws.header, &claims, &rules, now)?;
    verify::check_revocation(&claims, &kid, &key, &bundle.revocations)?;
    Ok(Introspection {
        claims,
        claims_json,
        kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(claims.token_type, "access");
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
}
