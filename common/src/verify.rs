//! JWS verification of Tessera tokens against published keys (DESIGN §7, RFC 8725).
//!
//! The order of checks is part of the contract:
//! 1. size (≤ 8 KiB), then the header: compact form, strict base64url, a `crit` header
//!    refused outright (Tessera understands no extension, RFC 7515 §4.1.11); `jwk`, `jku`,
//!    `x5u` and `x5c` are never read, so a token cannot bring its own key;
//! 2. kid known, algorithm pinned by the key (never `none`, never HMAC), signature;
//! 3. claims ([`check_claims`]): iss, aud, exp and nbf with leeway; `iat` not in the
//!    future and agreeing with `iat_ms`; `exp - iat` within the longest lifetime the key's
//!    set signs; the token type asked for, and one the key's set signs; the key's signing
//!    window (a pending key's tokens, and a retiring key's tokens issued after it stopped
//!    signing, are refused);
//! 4. the tenant the caller requires ([`check_tenant`]), before revocation, so a caller
//!    never learns whether another tenant's token is revoked;
//! 5. revocation, then permissions and role.
//!
//! Each failure is a typed [`Rejection`]; detail goes to logs only. Everything from step 3
//! on depends on the instant or the caller, so a verifier that caches step 2 must run
//! steps 3 to 5 on every cache hit.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use serde::Deserialize;

use crate::claims::{ACCESS_TOKEN_TYP, ACTION_TOKEN_TYPES, AccessClaims, JwsHeader};
use crate::clock::UnixMillis;
use crate::keys::{KeySetName, KeySetPolicy};
use crate::limits::MAX_TOKEN_BYTES;
use crate::revocation::{RevocationSet, TokenFacts};

pub(crate) mod key;

pub use key::{KeyImportError, VerifyingKey};

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

/// Decodes the claims of a signature-checked JWS, returning them with their JSON text.
pub fn decode_claims(jws: &ParsedJws<'_>) -> Result<(AccessClaims, String), Rejection> {
    let payload = URL_SAFE_NO_PAD
        .decode(jws.payload_b64)
        .map_err(|_| Rejection::Malformed)?;
    let claims: AccessClaims =
        serde_json::from_slice(&payload).map_err(|_| Rejection::Malformed)?;
    let json = String::from_utf8(payload).map_err(|_| Rejection::Malformed)?;
    Ok((claims, json))
}

/// The rules for the claim checks.
#[derive(Clone, Debug)]
pub struct ClaimRules<'a> {
    pub issuer: &'a str,
    /// Accepted audiences; empty accepts any audience.
    pub audiences: &'a [String],
    /// The audience the caller requires, if any: `aud` must equal it, and it must itself
    /// be accepted (a caller can narrow the accepted audiences, never widen them).
    pub required_audience: Option<&'a str>,
    pub leeway: Duration,
    /// Token type required (`access` by default).
    pub token_type: &'a str,
    /// Longest access-token lifetime the issuer signs (the bundle policy's
    /// `max_token_ttl_seconds`).
    pub max_access_ttl: Duration,
}

/// Checks iss, aud, exp, nbf and iat (with leeway), the lifetime bound, the token type
/// and the signing window of `key`, in that order.
pub fn check_claims(
    header: &JwsHeader,
    claims: &AccessClaims,
    key: &VerifyingKey,
    rules: &ClaimRules<'_>,
    now: UnixMillis,
) -> Result<(), Rejection> {
    if claims.iss != rules.issuer {
        return Err(Rejection::WrongIssuer);
    }
    check_audience(claims, rules)?;
    check_times(claims, rules.leeway, now)?;
    check_lifetime(claims, key.key_set, rules.max_access_ttl)?;
    check_token_type(header, claims, key.key_set, rules.token_type)?;
    check_signing_window(claims, key, rules.leeway, now)
}

fn check_audience(claims: &AccessClaims, rules: &ClaimRules<'_>) -> Result<(), Rejection> {
    let accepted = rules.audiences.is_empty() || rules.audiences.contains(&claims.aud);
    let audience_ok = accepted
        && rules
            .required_audience
            .is_none_or(|required| claims.aud == required);
    if audience_ok {
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
fn check_times(claims: &AccessClaims, leeway: Duration, now: UnixMillis) -> Result<(), Rejection> {
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

/// Returns the longest lifetime of a token signed by `key_set`: the published access
/// bound, or the action set's fixed policy (24 h, email verification links; DESIGN §4).
pub fn max_lifetime(key_set: KeySetName, max_access_ttl: Duration) -> Duration {
    match key_set {
        KeySetName::Access => max_access_ttl,
        KeySetName::Action => KeySetPolicy::default_for(KeySetName::Action).max_token_ttl,
    }
}

/// `exp - iat` within the key set's bound: a token minted to outlive the bound would also
/// outlive its revocation entries, which are dropped after that bound.
fn check_lifetime(
    claims: &AccessClaims,
    key_set: KeySetName,
    max_access_ttl: Duration,
) -> Result<(), Rejection> {
    let bound = i64::try_from(max_lifetime(key_set, max_access_ttl).as_secs()).unwrap_or(i64::MAX);
    if claims.exp.saturating_sub(claims.iat) > bound {
        return Err(Rejection::LifetimeTooLong);
    }
    Ok(())
}

/// Returns whether keys of `key_set` sign tokens of `token_type`: access keys sign access
/// tokens only; action keys sign action links, password-reset and email-verification
/// tokens, and never an access token.
pub fn key_set_signs(key_set: KeySetName, token_type: &str) -> bool {
    match key_set {
        KeySetName::Access => token_type == "access",
        KeySetName::Action => ACTION_TOKEN_TYPES.contains(&token_type),
    }
}

fn check_token_type(
    header: &JwsHeader,
    claims: &AccessClaims,
    key_set: KeySetName,
    required: &str,
) -> Result<(), Rejection> {
    let type_ok = claims.token_type == required
        && (required != "access" || header.typ.as_deref() == Some(ACCESS_TOKEN_TYP))
        && key_set_signs(key_set, &claims.token_type);
    if type_ok {
        Ok(())
    } else {
        Err(Rejection::WrongTokenType)
    }
}

/// The key must have been the signer when the token was issued, and may not be a pending
/// key now. The leeway absorbs clock skew between issuer and verifier: a key counts as
/// active from `activates_at - leeway`, and a retiring key's tokens count as issued in
/// time up to `deactivates_at + leeway`.
fn check_signing_window(
    claims: &AccessClaims,
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

/// Checks that the token belongs to `required_tenant`, when the caller requires one.
pub fn check_tenant(claims: &AccessClaims, required_tenant: Option<&str>) -> Result<(), Rejection> {
    match required_tenant {
        Some(tenant) if claims.tenant_id != tenant => Err(Rejection::WrongTenant),
        _ => Ok(()),
    }
}

/// Checks revocation entries and the key's own revocation.
pub fn check_revocation(
    claims: &AccessClaims,
    kid: &str,
    key: &VerifyingKey,
    revocations: &RevocationSet,
) -> Result<(), Rejection> {
    if key.revoked_at.is_some() {
        return Err(Rejection::KeyRevoked);
    }
    let facts = TokenFacts {
        jti: &claims.jti,
        session_id: &claims.session_id,
        subject: &claims.sub,
        tenant_id: &claims.tenant_id,
        family_id: claims.family_id.as_deref(),
        kid,
        issued_at: UnixMillis(claims.iat_ms),
    };
    match revocations.matching(&facts) {
        Some(entry) if entry.kind == crate::revocation::RevocationKind::Key => {
            Err(Rejection::KeyRevoked)
        }
        Some(_) => Err(Rejection::Revoked),
        None => Ok(()),
    }
}

/// Checks required permissions (all of them) and the required role.
pub fn check_authorization(
    claims: &AccessClaims,
    required_permissions: &[String],
    required_role: Option<&str>,
) -> Result<(), Rejection> {
    if !required_permissions
        .iter()
        .all(|permission| claims.permissions.iter().any(|held| held == permission))
    {
        return Err(Rejection::InsufficientPermissions);
    }
    if let Some(role) = required_role
        && claims.role != role
    {
        return Err(Rejection::WrongRole);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwk::Jwk;
    use crate::keys::{Algorithm, KeySchedule};

    fn access_claims(aud: &str) -> AccessClaims {
        AccessClaims {
            iss: "tessera".into(),
            sub: "u1".into(),
            aud: aud.into(),
            iat: 1_000,
            exp: 1_900,
            nbf: 1_000,
            jti: "j1".into(),
            iat_ms: 1_000_000,
            tenant_id: "t1".into(),
            role: "viewer".into(),
            permissions: vec!["a".into()],
            session_id: "s1".into(),
            token_type: "access".into(),
            device_fingerprint: None,
            ip_address: None,
            mfa_verified: false,
            last_password_change: 0,
            features: vec![],
            family_id: None,
        }
    }

    fn header() -> JwsHeader {
        JwsHeader {
            alg: "EdDSA".into(),
            kid: Some("k1".into()),
            typ: Some(ACCESS_TOKEN_TYP.into()),
        }
    }

    /// An Ed25519 key pair and the verifying key of its schedule in `key_set`, active from
    /// `activates_at` until `deactivates_at`.
    fn key_pair(
        key_set: KeySetName,
        activates_at: UnixMillis,
        deactivates_at: Option<UnixMillis>,
    ) -> (aws_lc_rs::signature::Ed25519KeyPair, VerifyingKey) {
        use aws_lc_rs::signature::KeyPair;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        let schedule = KeySchedule {
            kid: crate::ids::KeyId::new("k1").unwrap(),
            key_set,
            algorithm: Algorithm::EdDsa,
            created_at: UnixMillis(0),
            activates_at,
            deactivates_at,
            verify_until: deactivates_at.map(|at| at.plus(Duration::from_secs(86_400))),
            revoked_at: None,
            public_jwk: Jwk {
                kty: "OKP".into(),
                kid: "k1".into(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
                n: None,
                e: None,
                crv: Some("Ed25519".into()),
                x: Some(URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())),
                y: None,
            },
        };
        let key = VerifyingKey::from_schedule(&schedule).unwrap();
        (pair, key)
    }

    fn access_key() -> VerifyingKey {
        key_pair(KeySetName::Access, UnixMillis(0), None).1
    }

    fn rules<'a>(accepted: &'a [String], required: Option<&'static str>) -> ClaimRules<'a> {
        ClaimRules {
            issuer: "tessera",
            audiences: accepted,
            required_audience: required,
            leeway: Duration::from_secs(30),
            token_type: "access",
            max_access_ttl: Duration::from_secs(900),
        }
    }

    fn sign(
        pair: &aws_lc_rs::signature::Ed25519KeyPair,
        header: &serde_json::Value,
        claims: &AccessClaims,
    ) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let signature = pair.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    #[test]
    fn a_required_audience_must_match_and_be_accepted() {
        let header = header();
        let key = access_key();
        let accepted = vec!["api".to_owned(), "billing".to_owned()];
        let now = UnixMillis::from_secs(1_500);
        let check = |aud: &str, required| {
            check_claims(
                &header,
                &access_claims(aud),
                &key,
                &rules(&accepted, required),
                now,
            )
        };
        assert_eq!(check("api", None), Ok(()));
        assert_eq!(check("api", Some("api")), Ok(()));
        let wrong = Err(Rejection::WrongAudience);
        assert_eq!(check("api", Some("billing")), wrong);
        assert_eq!(check("other", Some("other")), wrong);
        assert_eq!(check("other", None), wrong);
        // Leeway: 30 s past exp still passes, 30 s more does not.
        let at = |now| {
            check_claims(
                &header,
                &access_claims("api"),
                &key,
                &rules(&accepted, None),
                now,
            )
        };
        assert_eq!(at(UnixMillis::from_secs(1_929)), Ok(()));
        assert_eq!(at(UnixMillis::from_secs(1_930)), Err(Rejection::Expired));
    }

    #[test]
    fn a_token_issued_in_the_future_is_not_yet_valid() {
        let key = access_key();
        let now = UnixMillis::from_secs(1_000);
        let issued_at = |iat_ms: i64| AccessClaims {
            iat: iat_ms.div_euclid(1000),
            iat_ms,
            nbf: 0,
            exp: iat_ms / 1000 + 600,
            ..access_claims("api")
        };
        let check =
            |claims: &AccessClaims| check_claims(&header(), claims, &key, &rules(&[], None), now);
        // Within the leeway (30 s of skew): accepted.
        assert_eq!(check(&issued_at(1_030_000)), Ok(()));
        // One millisecond beyond: refused, although nbf is in the past.
        assert_eq!(check(&issued_at(1_030_001)), Err(Rejection::NotYetValid));
        assert_eq!(check(&issued_at(9_000_000)), Err(Rejection::NotYetValid));
    }

    #[test]
    fn iat_and_iat_ms_must_name_the_same_instant() {
        let key = access_key();
        let now = UnixMillis::from_secs(1_500);
        let mut claims = access_claims("api");
        claims.iat_ms = 1_000_999;
        assert_eq!(
            check_claims(&header(), &claims, &key, &rules(&[], None), now),
            Ok(())
        );
        // An old iat (escaping nothing) with a recent iat_ms, and the reverse.
        claims.iat_ms = 1_001_000;
        assert_eq!(
            check_claims(&header(), &claims, &key, &rules(&[], None), now),
            Err(Rejection::Malformed)
        );
        claims.iat_ms = 999_999;
        assert_eq!(
            check_claims(&header(), &claims, &key, &rules(&[], None), now),
            Err(Rejection::Malformed)
        );
    }

    #[test]
    fn a_lifetime_beyond_the_key_sets_bound_is_refused() {
        let access = access_key();
        let now = UnixMillis::from_secs(1_500);
        let lasting = |seconds: i64| AccessClaims {
            exp: 1_000 + seconds,
            ..access_claims("api")
        };
        let check = |claims: &AccessClaims| {
            check_claims(&header(), claims, &access, &rules(&[], None), now)
        };
        assert_eq!(check(&lasting(900)), Ok(()));
        assert_eq!(check(&lasting(901)), Err(Rejection::LifetimeTooLong));
        assert_eq!(
            check(&lasting(10 * 365 * 86_400)),
            Err(Rejection::LifetimeTooLong)
        );
        // The action set's bound is its own (24 h), not the access one.
        let action = key_pair(KeySetName::Action, UnixMillis(0), None).1;
        let action_rules = ClaimRules {
            token_type: "verification",
            ..rules(&[], None)
        };
        let verification = |seconds| AccessClaims {
            token_type: "verification".into(),
            ..lasting(seconds)
        };
        let untyped = JwsHeader {
            typ: None,
            ..header()
        };
        let check_action =
            |claims: &AccessClaims| check_claims(&untyped, claims, &action, &action_rules, now);
        assert_eq!(check_action(&verification(86_400)), Ok(()));
        assert_eq!(
            check_action(&verification(86_401)),
            Err(Rejection::LifetimeTooLong)
        );
    }

    #[test]
    fn an_action_key_token_never_passes_as_an_access_token() {
        let action = key_pair(KeySetName::Action, UnixMillis(0), None).1;
        let now = UnixMillis::from_secs(1_500);
        assert_eq!(
            check_claims(
                &header(),
                &access_claims("api"),
                &action,
                &rules(&[], None),
                now
            ),
            Err(Rejection::WrongTokenType)
        );
        // And an access key does not sign action tokens.
        let reset = AccessClaims {
            token_type: "reset".into(),
            ..access_claims("api")
        };
        let reset_rules = ClaimRules {
            token_type: "reset",
            ..rules(&[], None)
        };
        assert_eq!(
            check_claims(&header(), &reset, &access_key(), &reset_rules, now),
            Err(Rejection::WrongTokenType)
        );
        assert_eq!(
            check_claims(&header(), &reset, &action, &reset_rules, now),
            Ok(())
        );
        assert!(key_set_signs(KeySetName::Access, "access"));
        assert!(!key_set_signs(KeySetName::Access, "action"));
    }

    #[test]
    fn a_pending_keys_tokens_are_refused_beyond_the_leeway() {
        // The key activates at 1,100 s; tokens are issued at 1,000 s and checked at 1,050 s.
        let pending = key_pair(KeySetName::Access, UnixMillis::from_secs(1_100), None).1;
        let check = |claims: &AccessClaims, now| {
            check_claims(&header(), claims, &pending, &rules(&[], None), now)
        };
        assert_eq!(
            check(&access_claims("api"), UnixMillis::from_secs(1_050)),
            Err(Rejection::KeyNotActive)
        );
        // Once the key is active, a token issued before its activation is still refused.
        assert_eq!(
            check(&access_claims("api"), UnixMillis::from_secs(1_200)),
            Err(Rejection::KeyNotActive)
        );
        // Within the leeway of activation (clock skew): accepted.
        let skewed = AccessClaims {
            iat: 1_070,
            iat_ms: 1_070_000,
            ..access_claims("api")
        };
        assert_eq!(check(&skewed, UnixMillis::from_secs(1_075)), Ok(()));
    }

    #[test]
    fn a_retiring_key_verifies_only_tokens_issued_before_it_stopped_signing() {
        let retiring = key_pair(
            KeySetName::Access,
            UnixMillis(0),
            Some(UnixMillis::from_secs(1_000)),
        )
        .1;
        let issued_at = |seconds: i64| AccessClaims {
            iat: seconds,
            iat_ms: seconds * 1000,
            nbf: seconds,
            exp: seconds + 900,
            ..access_claims("api")
        };
        let now = UnixMillis::from_secs(1_100);
        let check = |claims: &AccessClaims| {
            check_claims(&header(), claims, &retiring, &rules(&[], None), now)
        };
        assert_eq!(check(&issued_at(999)), Ok(()));
        assert_eq!(check(&issued_at(1_030)), Ok(()), "within the leeway");
        assert_eq!(check(&issued_at(1_031)), Err(Rejection::KeyNotActive));
    }

    #[test]
    fn a_token_of_another_tenant_is_refused_when_a_tenant_is_required() {
        let claims = access_claims("api");
        assert_eq!(check_tenant(&claims, None), Ok(()));
        assert_eq!(check_tenant(&claims, Some("t1")), Ok(()));
        assert_eq!(
            check_tenant(&claims, Some("t2")),
            Err(Rejection::WrongTenant)
        );
    }

    #[test]
    fn a_crit_header_is_refused_whatever_it_holds() {
        let (pair, _) = key_pair(KeySetName::Access, UnixMillis(0), None);
        let claims = access_claims("api");
        for crit in [json!(["exp"]), json!([]), json!(null), json!("b64")] {
            let header = json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt", "crit": crit});
            assert_eq!(
                parse_compact(&sign(&pair, &header, &claims)).unwrap_err(),
                Rejection::Malformed,
                "{crit}"
            );
        }
        let duplicated_alg = format!(
            "{}.{}.AA",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert_eq!(
            parse_compact(&duplicated_alg).unwrap_err(),
            Rejection::Malformed
        );
    }

    #[test]
    fn embedded_keys_in_the_header_are_never_used() {
        // The attacker signs with their own key and embeds it (jwk) or points at it (jku,
        // x5u, x5c); the token names the real kid. Only the bundle's key is tried.
        let (_, real) = key_pair(KeySetName::Access, UnixMillis(0), None);
        let (attacker, _) = key_pair(KeySetName::Access, UnixMillis(0), None);
        use aws_lc_rs::signature::KeyPair;
        let attacker_x = URL_SAFE_NO_PAD.encode(attacker.public_key().as_ref());
        let embedded = [
            (
                "jwk",
                json!({"kty": "OKP", "crv": "Ed25519", "x": attacker_x, "kid": "k1"}),
            ),
            ("jku", json!("https://attacker.example/jwks.json")),
            ("x5u", json!("https://attacker.example/cert.pem")),
            ("x5c", json!(["MIIBattacker"])),
        ];
        for (member, value) in embedded {
            let mut header = json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"});
            header[member] = value;
            let token = sign(&attacker, &header, &access_claims("api"));
            let jws = parse_compact(&token).unwrap();
            assert_eq!(jws.header, self::header(), "{member}");
            assert_eq!(
                check_signature(&jws, &real),
                Err(Rejection::BadSignature),
                "{member}"
            );
        }
    }

    #[test]
    fn encoding_tricks_are_malformed() {
        let (pair, key) = key_pair(KeySetName::Access, UnixMillis(0), None);
        let token = sign(
            &pair,
            &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}),
            &access_claims("api"),
        );
        assert!(check_signature(&parse_compact(&token).unwrap(), &key).is_ok());
        let (header, rest) = token.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let standard_alphabet = |segment: &str| segment.replace('-', "+").replace('_', "/");
        let full = |token: &str| -> Result<(), Rejection> {
            let jws = parse_compact(token)?;
            check_signature(&jws, &key)?;
            decode_claims(&jws).map(|_| ())
        };
        let tricks = [
            format!("{header}=.{payload}.{signature}"),
            format!("{header}.{payload}.{signature}="),
            format!("{header} .{payload}.{signature}"),
            format!("{header}.{payload}.{signature}\n"),
            format!("{header}.{payload}.{signature}.{signature}"),
            format!("{header}.{payload}.{}", standard_alphabet(signature)),
        ];
        for trick in tricks {
            assert_ne!(trick, token);
            assert_eq!(full(&trick), Err(Rejection::Malformed), "{trick}");
        }
        // A padded payload changes the signed bytes; signed as such, it still does not
        // decode.
        assert_eq!(
            full(&format!("{header}.{payload}==.{signature}")),
            Err(Rejection::BadSignature)
        );
        let padded_input = format!("{header}.{payload}==");
        let padded = format!(
            "{padded_input}.{}",
            URL_SAFE_NO_PAD.encode(pair.sign(padded_input.as_bytes()))
        );
        assert_eq!(full(&padded), Err(Rejection::Malformed));
    }

    #[test]
    fn parse_compact_rejects_oversize_and_garbage() {
        assert_eq!(
            parse_compact(&"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err(),
            Rejection::TooLarge
        );
        for token in ["", "a.b", "a.b.c.d", "!!.e30.AA", "e30.e30.!!"] {
            assert!(parse_compact(token).is_err(), "{token}");
        }
    }
}
