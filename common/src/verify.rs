//! JWS verification of Tessera tokens against published keys (DESIGN §7, RFC 8725): one
//! pipeline for every [`TokenType`], used by the sidecar and by the issuer's
//! introspection ([`Verifier`], in `verify/verifier.rs`).
//!
//! The order of checks is part of the contract:
//! 1. size (≤ 8 KiB), then the header: compact form, strict base64url, a `crit` header
//!    refused outright (Tessera understands no extension, RFC 7515 §4.1.11); `jwk`, `jku`,
//!    `x5u` and `x5c` are never read, so a token cannot bring its own key;
//! 2. kid known and not past its overlap window, algorithm pinned by the key (never
//!    `none`, never HMAC), signature; then the claims, decoded into the struct of the type
//!    the header `typ` names ([`decode_claims`]);
//! 3. the tenant the caller may learn about ([`check_tenant`]), before anything about the
//!    token's state (expiry, key window, revocation) can show;
//! 4. claims ([`check_claims`]): iss, aud, exp and nbf with leeway; `iat` not in the
//!    future and agreeing with `iat_ms`; the token type asked for (`typ`, `token_type` and
//!    the signing key's set all agree); `exp - iat` within that type's longest lifetime;
//!    the key's signing window (a pending key's tokens, and a retiring key's tokens issued
//!    after it stopped signing, are refused);
//! 5. revocation, then permissions and role.
//!
//! Each failure is a typed [`Rejection`]; detail goes to logs only. Everything from step 3
//! on depends on the instant or the caller, so a verifier that caches step 2 must run
//! steps 3 to 5 on every cache hit ([`Verified::check`]).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use serde::Deserialize;

use crate::bundle::ValidationPolicy;
use crate::claims::{JwsHeader, Registered, TokenClaims, TokenType};
use crate::clock::UnixMillis;
use crate::keys::KeySetName;
use crate::limits::MAX_TOKEN_BYTES;
use crate::revocation::{RevocationKind, RevocationSet, TokenFacts};

pub(crate) mod key;
mod verifier;

pub use key::{KeyImportError, VerifyingKey};
pub use verifier::{KeyEntry, Rules, Verified, Verifier, authenticate};

/// Why a token is not valid. The variants mirror the `Reason` enum of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("malformed")]
    Malformed,
    #[error("too_large")]
    TooLarge,
    #[error("unknown_kid")]
    UnknownKid,
    #[error("algorithm_mismatch")]
    AlgorithmMismatch,
    #[error("bad_signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not_yet_valid")]
    NotYetValid,
    #[error("wrong_issuer")]
    WrongIssuer,
    #[error("wrong_audience")]
    WrongAudience,
    #[error("wrong_token_type")]
    WrongTokenType,
    #[error("revoked")]
    Revoked,
    #[error("key_revoked")]
    KeyRevoked,
    #[error("insufficient_permissions")]
    InsufficientPermissions,
    #[error("wrong_role")]
    WrongRole,
    #[error("bundle_stale")]
    BundleStale,
    /// `exp - iat` exceeds the longest lifetime the signing key's set signs.
    #[error("lifetime_too_long")]
    LifetimeTooLong,
    /// Signed by a key outside its signing window: still pending, or retiring and the
    /// token issued after it stopped signing.
    #[error("key_not_active")]
    KeyNotActive,
    /// The token belongs to another tenant than the one the caller requires.
    #[error("wrong_tenant")]
    WrongTenant,
    /// The caller asked for a token type Tessera does not know.
    #[error("unknown_token_type")]
    UnknownTokenType,
}

impl Rejection {
    /// Returns the snake_case name used in metric labels and introspection.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::TooLarge => "too_large",
            Rejection::UnknownKid => "unknown_kid",
            Rejection::AlgorithmMismatch => "algorithm_mismatch",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::WrongIssuer => "wrong_issuer",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::WrongTokenType => "wrong_token_type",
            Rejection::Revoked => "revoked",
            Rejection::KeyRevoked => "key_revoked",
            Rejection::InsufficientPermissions => "insufficient_permissions",
            Rejection::WrongRole => "wrong_role",
            Rejection::BundleStale => "bundle_stale",
            Rejection::LifetimeTooLong => "lifetime_too_long",
            Rejection::KeyNotActive => "key_not_active",
            Rejection::WrongTenant => "wrong_tenant",
            Rejection::UnknownTokenType => "unknown_token_type",
        }
    }
}

/// A compact JWS split into its parts, signature not yet checked.
#[derive(Debug)]
pub struct ParsedJws<'a> {
    pub header: JwsHeader,
    /// `base64url(header).base64url(payload)`: the signed bytes.
    pub signing_input: &'a str,
    pub payload_b64: &'a str,
    pub signature: Vec<u8>,
}

/// The header as read from the wire: [`JwsHeader`] plus whether `crit` was present.
/// Unknown members (`jwk`, `jku`, `x5u`, `x5c`, …) are skipped unread on purpose: the key
/// always comes from the bundle by kid, never from the token. A duplicated member is a
/// parse error (serde refuses duplicate fields), so `alg` cannot be smuggled twice.
#[derive(Deserialize)]
struct WireHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// Deserializes any value (even `null`) as `true`: for members refused whatever they hold.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// Splits and decodes a compact JWS (size and header checks).
pub fn parse_compact(token: &str) -> Result<ParsedJws<'_>, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::TooLarge);
    }
    let (signing_input, signature_b64) = token.rsplit_once('.').ok_or(Rejection::Malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(Rejection::Malformed)?;
    if payload_b64.contains('.') {
        return Err(Rejection::Malformed);
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| Rejection::Malformed)?;
    let wire: WireHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| Rejection::Malformed)?;
    // RFC 7515 §4.1.11: a recipient must refuse a `crit` extension it does not
    // understand, and Tessera understands none (not even RFC 7797's unencoded payload).
    if wire.crit {
        return Err(Rejection::Malformed);
    }
    let header = JwsHeader {
        alg: wire.alg,
        kid: wire.kid,
        typ: wire.typ,
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| Rejection::Malformed)?;
    Ok(ParsedJws {
        header,
        signing_input,
        payload_b64,
        signature,
    })
}

/// Checks the algorithm pinned by `key` and the signature; never accepts `none`, and
/// never lets a header choose an algorithm the key is not pinned to.
pub fn check_signature(jws: &ParsedJws<'_>, key: &VerifyingKey) -> Result<(), Rejection> {
    if jws.header.alg != key.algorithm.as_str() {
        return Err(Rejection::AlgorithmMismatch);
    }
    if !key.verify(jws.signing_input.as_bytes(), &jws.signature) {
        return Err(Rejection::BadSignature);
    }
    Ok(())
}

/// The claims of a signature-checked JWS, decoded for the type its `typ` names.
#[derive(Debug)]
pub struct Decoded<C> {
    pub token_type: TokenType,
    pub claims: C,
    /// The claims object exactly as signed.
    pub claims_json: String,
}

/// Decodes the claims of a signature-checked JWS into `C`, for the token type its header
/// `typ` names (explicit typing, RFC 8725 §3.11): a missing or unknown `typ`, or one whose
/// claims `C` does not describe, is the wrong token type.
pub fn decode_claims<C: TokenClaims>(jws: &ParsedJws<'_>) -> Result<Decoded<C>, Rejection> {
    let token_type = jws
        .header
        .typ
        .as_deref()
        .and_then(TokenType::from_jws_typ)
        .filter(|token_type| C::TYPES.contains(token_type))
        .ok_or(Rejection::WrongTokenType)?;
    let payload = URL_SAFE_NO_PAD
        .decode(jws.payload_b64)
        .map_err(|_| Rejection::Malformed)?;
    let claims = C::decode(&payload, token_type).map_err(|_| Rejection::Malformed)?;
    let claims_json = String::from_utf8(payload).map_err(|_| Rejection::Malformed)?;
    Ok(Decoded {
        token_type,
        claims,
        claims_json,
    })
}

/// Which audiences a verifier accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audiences<'a> {
    /// Any audience (the issuer publishes none).
    Any,
    /// One of these.
    OneOf(&'a [String]),
    /// None at all: the operator's narrowing and the issuer's audiences are disjoint.
    None,
}

impl<'a> Audiences<'a> {
    /// Returns the published list as a rule: an empty list accepts any audience.
    pub fn from_list(audiences: &'a [String]) -> Self {
        if audiences.is_empty() {
            Audiences::Any
        } else {
            Audiences::OneOf(audiences)
        }
    }
}

/// The rules for the claim checks.
#[derive(Clone, Debug)]
pub struct ClaimRules<'a> {
    pub issuer: &'a str,
    pub audiences: Audiences<'a>,
    /// The audience the caller requires, if any: `aud` must equal it, and it must itself
    /// be accepted (a caller can narrow the accepted audiences, never widen them).
    pub required_audience: Option<&'a str>,
    pub leeway: Duration,
    /// The token type required.
    pub token_type: TokenType,
    /// Longest lifetime of a token of `token_type` (published in the bundle policy).
    pub max_lifetime: Duration,
}

impl<'a> ClaimRules<'a> {
    /// Returns the rules of `policy` for tokens of `token_type`: its issuer, audiences,
    /// leeway and that type's longest lifetime, with no audience required.
    pub fn new(policy: &'a ValidationPolicy, token_type: TokenType) -> Self {
        ClaimRules {
            issuer: &policy.issuer,
            audiences: Audiences::from_list(&policy.audiences),
            required_audience: None,
            leeway: policy.leeway(),
            token_type,
            max_lifetime: policy.max_lifetime(token_type),
        }
    }
}

/// Checks iss, aud, exp, nbf and iat (with leeway), the token type, its lifetime bound and
/// the signing window of `key`, in that order.
pub fn check_claims(
    token_type: TokenType,
    claims: Registered<'_>,
    key: &VerifyingKey,
    rules: &ClaimRules<'_>,
    now: UnixMillis,
) -> Result<(), Rejection> {
    if claims.iss != rules.issuer {
        return Err(Rejection::WrongIssuer);
    }
    check_audience(claims.aud, rules)?;
    check_times(&claims, rules.leeway, now)?;
    check_token_type(token_type, &claims, key.key_set, rules.token_type)?;
    check_lifetime(&claims, rules.max_lifetime)?;
    check_signing_window(&claims, key, rules.leeway, now)
}

fn check_audience(aud: &str, rules: &ClaimRules<'_>) -> Result<(), Rejection> {
    let accepted = match rules.audiences {
        Audiences::Any => true,
        Audiences::OneOf(audiences) => audiences.iter().any(|accepted| accepted == aud),
        Audiences::None => false,
    };
    if accepted
        && rules
            .required_audience
            .is_none_or(|required| aud == required)
    {
        Ok(())
    } else {
        Err(Rejection::WrongAudience)
    }
}

fn leeway_millis(leeway: Duration) -> i64 {
    i64::try_from(leeway.as_millis()).unwrap_or(i64::MAX)
}

/// exp and nbf, then iat: a token issued in the future (beyond the leeway) would escape
/// user and session cut-offs, which compare `revoked_at` with the issuance instant
/// (RFC 8725 §3.10 asks for iat sanity too). `iat` and `iat_ms` name one instant; a token
/// where they disagree could show revocation one instant and the caller another.
fn check_times(
    claims: &Registered<'_>,
    leeway: Duration,
    now: UnixMillis,
) -> Result<(), Rejection> {
    let leeway_ms = leeway_millis(leeway);
    if now.0 >= claims.exp.saturating_mul(1000).saturating_add(leeway_ms) {
        return Err(Rejection::Expired);
    }
    let latest_valid_start = now.0.saturating_add(leeway_ms);
    if latest_valid_start < claims.nbf.saturating_mul(1000) {
        return Err(Rejection::NotYetValid);
    }
    if claims.iat_ms.div_euclid(1000) != claims.iat {
        return Err(Rejection::Malformed);
    }
    if latest_valid_start < claims.iat_ms {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

/// Returns whether keys of `key_set` sign tokens of `token_type`: access keys sign access
/// and service tokens; action keys sign action links, password-reset and
/// email-verification tokens, and never an access token; other sets sign no token.
pub fn key_set_signs(key_set: KeySetName, token_type: TokenType) -> bool {
    token_type.key_set() == key_set
}

/// The token is of the type asked for three ways at once: its header `typ`, its
/// `token_type` claim, and the set of the key that signed it.
fn check_token_type(
    token_type: TokenType,
    claims: &Registered<'_>,
    key_set: KeySetName,
    required: TokenType,
) -> Result<(), Rejection> {
    let type_ok = token_type == required
        && claims.token_type == required.as_str()
        && key_set_signs(key_set, required);
    if type_ok {
        Ok(())
    } else {
        Err(Rejection::WrongTokenType)
    }
}

/// `exp - iat` within the type's bound: a token minted to outlive the bound would also
/// outlive its revocation entries, which are dropped after the longest bound.
fn check_lifetime(claims: &Registered<'_>, max_lifetime: Duration) -> Result<(), Rejection> {
    let bound = i64::try_from(max_lifetime.as_secs()).unwrap_or(i64::MAX);
    if claims.exp.saturating_sub(claims.iat) > bound {
        return Err(Rejection::LifetimeTooLong);
    }
    Ok(())
}

/// The key must have been the signer when the token was issued, and may not be a pending
/// key now. The leeway absorbs clock skew between issuer and verifier: a key counts as
/// active from `activates_at - leeway`, and a retiring key's tokens count as issued in
/// time up to `deactivates_at + leeway`.
fn check_signing_window(
    claims: &Registered<'_>,
    key: &VerifyingKey,
    leeway: Duration,
    now: UnixMillis,
) -> Result<(), Rejection> {
    let leeway_ms = leeway_millis(leeway);
    let earliest = key.activates_at.0.saturating_sub(leeway_ms);
    let still_pending = now.0 < earliest;
    let issued_before_activation = claims.iat_ms < earliest;
    let issued_after_deactivation = key
        .deactivates_at
        .is_some_and(|deactivates_at| claims.iat_ms > deactivates_at.0.saturating_add(leeway_ms));
    if still_pending || issued_before_activation || issued_after_deactivation {
        return Err(Rejection::KeyNotActive);
    }
    Ok(())
}

/// Which tenants' tokens the caller may learn about.
#[derive(Clone, Copy)]
pub enum TenantRule<'a> {
    /// Any tenant's.
    Any,
    /// Only this tenant's (`ValidateToken.tenant_id`).
    Exactly(&'a str),
    /// Those the predicate admits (the issuer's tenant confinement of its caller).
    Admitted(&'a dyn Fn(&str) -> bool),
}

impl std::fmt::Debug for TenantRule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantRule::Any => f.write_str("Any"),
            TenantRule::Exactly(tenant) => f.debug_tuple("Exactly").field(tenant).finish(),
            TenantRule::Admitted(_) => f.write_str("Admitted(..)"),
        }
    }
}

/// Checks that the token belongs to a tenant the caller may learn about.
pub fn check_tenant(tenant_id: &str, rule: TenantRule<'_>) -> Result<(), Rejection> {
    let admitted = match rule {
        TenantRule::Any => true,
        TenantRule::Exactly(tenant) => tenant_id == tenant,
        TenantRule::Admitted(admits) => admits(tenant_id),
    };
    if admitted {
        Ok(())
    } else {
        Err(Rejection::WrongTenant)
    }
}

/// Checks revocation entries and the key's own revocation.
pub fn check_revocation<C: TokenClaims>(
    claims: &C,
    kid: &str,
    key: &VerifyingKey,
    revocations: &RevocationSet,
) -> Result<(), Rejection> {
    if key.revoked_at.is_some() {
        return Err(Rejection::KeyRevoked);
    }
    let registered = claims.registered();
    let facts = TokenFacts {
        jti: registered.jti,
        session_id: claims.session_id(),
        subject: registered.sub,
        tenant_id: registered.tenant_id,
        family_id: claims.family_id(),
        kid,
        issued_at: UnixMillis(registered.iat_ms),
    };
    match revocations.matching(&facts) {
        Some(entry) if entry.kind == RevocationKind::Key => Err(Rejection::KeyRevoked),
        Some(_) => Err(Rejection::Revoked),
        None => Ok(()),
    }
}

/// Checks required permissions (all of them) and the required role.
pub fn check_authorization<C: TokenClaims>(
    claims: &C,
    required_permissions: &[String],
    required_role: Option<&str>,
) -> Result<(), Rejection> {
    let held = claims.permissions();
    if !required_permissions
        .iter()
        .all(|permission| held.iter().any(|held| held == permission))
    {
        return Err(Rejection::InsufficientPermissions);
    }
    if let Some(role) = required_role
        && claims.role() != Some(role)
    {
        return Err(Rejection::WrongRole);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
