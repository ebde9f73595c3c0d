//! Published keys made usable: a JWK parsed once into an aws-lc-rs public key pinned to
//! its algorithm, with the parts of its schedule the token checks need.

use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clock::UnixMillis;
use crate::jwk::Jwk;
use crate::keys::{Algorithm, KeySchedule, KeySetName};

/// A public key parsed once, pinned to its algorithm, and knowing its key set and signing
/// window (what the token checks need of its schedule).
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    /// The set the key belongs to: it decides which token types the key may sign.
    pub key_set: KeySetName,
    /// First instant the key signs.
    pub activates_at: UnixMillis,
    /// First instant a successor signs instead, once scheduled.
    pub deactivates_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    parsed: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .field("key_set", &self.key_set)
            .field("activates_at", &self.activates_at)
            .field("deactivates_at", &self.deactivates_at)
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
            key_set: key.key_set,
            activates_at: key.activates_at,
            deactivates_at: key.deactivates_at,
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
        // An HMAC key has no public half; one that reached a verifier is refused, so a
        // token can never be checked with a shared secret (RFC 8725 §2.1).
        Algorithm::Hs256 => Err("HMAC keys are never published"),
    }
}

/// Encodes an RSAPublicKey (PKCS#1) from big-endian modulus and exponent.
pub(crate) fn rsa_public_key_der(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: &[u8] = {
            let start = bytes
                .iter()
                .position(|&b| b != 0)
                .unwrap_or(bytes.len().saturating_sub(1));
            // No bytes at all is the integer 0, whose DER content is one zero byte.
            if bytes.is_empty() {
                &[0]
            } else {
                &bytes[start..]
            }
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
}
