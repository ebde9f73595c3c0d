//! JWS verification of Tessera access tokens against published keys (DESIGN §7).
//!
//! The order of checks is part of the contract: size, header, kid, algorithm pinned by the
//! key, signature, then claims (iss, aud, exp, nbf with leeway), token type, revocation,
//! permissions and role. Each failure is a typed [`Rejection`]; detail goes to logs only.

use std::time::Duration;

use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::claims::{ACCESS_TOKEN_TYP, AccessClaims, JwsHeader};
use crate::clock::UnixMillis;
use crate::jwk::Jwk;
use crate::keys::{Algorithm, KeySchedule};
use crate::limits::MAX_TOKEN_BYTES;
use crate::revocation::{RevocationSet, TokenFacts};

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
        }
    }
}

/// A public key parsed once and pinned to its algorithm.
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    pub revoked_at: Option<UnixMillis>,
    parsed: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Why a published key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable key `{kid}`: {detail}")]
pub struct KeyImportError {
    pub kid: String,
    pub detail: &'static str,
}

impl VerifyingKey {
    /// Parses the JWK of `key`, checking that its type matches the pinned algorithm.
    pub fn from_schedule(key: &KeySchedule) -> Result<Self, KeyImportError> {
        let parsed =
            parse_jwk(&key.public_jwk, key.algorithm).map_err(|detail| KeyImportError {
                kid: key.kid.to_string(),
                detail,
            })?;
        Ok(VerifyingKey {
            algorithm: key.algorithm,
            revoked_at: key.revoked_at,
            parsed,
        })
    }

    /// Returns true when `signature` over `message` verifies under this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.parsed.verify_sig(message, signature).is_ok()
    }
}

fn parse_jwk(jwk: &Jwk, algorithm: Algorithm) -> Result<ParsedPublicKey, &'static str> {
    let field = |value: &Option<String>, name: &'static str| -> Result<Vec<u8>, &'static str> {
        let text = value.as_deref().ok_or(name)?;
        URL_SAFE_NO_PAD.decode(text).map_err(|_| name)
    };
    match algorithm {
        Algorithm::Rs256 => {
            if jwk.kty != "RSA" {
                return Err("kty is not RSA");
            }
            let der = rsa_public_key_der(&field(&jwk.n, "bad n")?, &field(&jwk.e, "bad e")?);
            ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
                .map_err(|_| "rejected RSA key")
        }
        Algorithm::Es256 => {
            if jwk.kty != "EC" || jwk.crv.as_deref() != Some("P-256") {
                return Err("kty/crv is not EC P-256");
            }
            let mut point = vec![0x04];
            point.extend(field(&jwk.x, "bad x")?);
            point.extend(field(&jwk.y, "bad y")?);
            ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .map_err(|_| "rejected EC key")
        }
        Algorithm::EdDsa => {
            if jwk.kty != "OKP" || jwk.crv.as_deref() != Some("Ed25519") {
                return Err("kty/crv is not OKP Ed25519");
            }
            ParsedPublicKey::new(&signature::ED25519, field(&jwk.x, "bad x")?)
                .map_err(|_| "rejected Ed25519 key")
        }
    }
}

/// Encodes an RSAPublicKey (PKCS#1) from big-endian modulus and exponent.
fn rsa_public_key_der(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: &[u8] = {
            let start = bytes
                .iter()
                .position(|&b| b != 0)
                .unwrap_or(bytes.len().saturating_sub(1));
            &bytes[start..]
        };
        let mut content = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_some_and(|&b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend_from_slice(trimmed);
        tlv(0x02, &content)
    }
    let mut body = integer(modulus);
    body.extend(integer(exponent));
    tlv(0x30, &body)
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | len_bytes.len() as u8);
        out.extend(len_bytes);
    }
    out.extend_from_slice(content);
    out
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
    let header: JwsHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| Rejection::Malformed)?;
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
}

/// Checks iss, aud, exp, nbf (with leeway) and the token type.
pub fn check_claims(
    header: &JwsHeader,
    claims: &AccessClaims,
    rules: &ClaimRules<'_>,
    now: UnixMillis,
) -> Result<(), Rejection> {
    if claims.iss != rules.issuer {
        return Err(Rejection::WrongIssuer);
    }
    let accepted = rules.audiences.is_empty() || rules.audiences.contains(&claims.aud);
    let audience_ok = accepted
        && rules
            .required_audience
            .is_none_or(|required| claims.aud == required);
    if !audience_ok {
        return Err(Rejection::WrongAudience);
    }
    let leeway_ms = i64::try_from(rules.leeway.as_millis()).unwrap_or(i64::MAX);
    if now.0 >= claims.exp.saturating_mul(1000).saturating_add(leeway_ms) {
        return Err(Rejection::Expired);
    }
    if now.0.saturating_add(leeway_ms) < claims.nbf.saturating_mul(1000) {
        return Err(Rejection::NotYetValid);
    }
    let type_ok = claims.token_type == rules.token_type
        && (rules.token_type != "access" || header.typ.as_deref() == Some(ACCESS_TOKEN_TYP));
    if !type_ok {
        return Err(Rejection::WrongTokenType);
    }
    Ok(())
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
    use super::*;

    #[test]
    fn der_integer_gets_a_leading_zero_when_the_high_bit_is_set() {
        assert_eq!(
            rsa_public_key_der(&[0x80], &[0x01, 0x00, 0x01]),
            vec![
                0x30, 0x09, 0x02, 0x02, 0x00, 0x80, 0x02, 0x03, 0x01, 0x00, 0x01
            ]
        );
    }

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

    #[test]
    fn a_required_audience_must_match_and_be_accepted() {
        let header = JwsHeader {
            alg: "EdDSA".into(),
            kid: Some("k1".into()),
            typ: Some(ACCESS_TOKEN_TYP.into()),
        };
        let accepted = vec!["api".to_owned(), "billing".to_owned()];
        let rules = |required| ClaimRules {
            issuer: "tessera",
            audiences: &accepted,
            required_audience: required,
            leeway: Duration::from_secs(30),
            token_type: "access",
        };
        let now = UnixMillis::from_secs(1_500);
        assert_eq!(
            check_claims(&header, &access_claims("api"), &rules(None), now),
            Ok(())
        );
        assert_eq!(
            check_claims(&header, &access_claims("api"), &rules(Some("api")), now),
            Ok(())
        );
        let wrong = Err(Rejection::WrongAudience);
        assert_eq!(
            check_claims(&header, &access_claims("api"), &rules(Some("billing")), now),
            wrong
        );
        assert_eq!(
            check_claims(&header, &access_claims("other"), &rules(Some("other")), now),
            wrong
        );
        assert_eq!(
            check_claims(&header, &access_claims("other"), &rules(None), now),
            wrong
        );
        // Leeway: 30 s past exp still passes, 30 s more does not.
        let late = UnixMillis::from_secs(1_929);
        assert_eq!(
            check_claims(&header, &access_claims("api"), &rules(None), late),
            Ok(())
        );
        let too_late = UnixMillis::from_secs(1_930);
        assert_eq!(
            check_claims(&header, &access_claims("api"), &rules(None), too_late),
            Err(Rejection::Expired)
        );
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
