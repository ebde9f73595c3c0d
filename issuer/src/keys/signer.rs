//! Signing with parsed key pairs. jsonwebtoken re-parses the private key on every call
//! (for RSA that caps signing at ~30 % of the achievable rate), so the issuer parses each
//! key once and assembles the compact JWS itself.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tessera_common::claims::JwsHeader;
use tessera_common::ids::KeyId;
use tessera_common::keys::Algorithm;

use super::material::KeyMaterialError;

enum ParsedKeyPair {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A key able to sign, pinned to its algorithm. Its `Debug` shows only the kid.
pub struct Signer {
    kid: KeyId,
    algorithm: Algorithm,
    key_pair: ParsedKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why a JWS could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("claims could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("signature operation failed")]
    Crypto,
}

impl Signer {
    /// Parses a PKCS#8 private key for `algorithm`.
    pub fn from_pkcs8(
        kid: KeyId,
        algorithm: Algorithm,
        pkcs8: &[u8],
    ) -> Result<Signer, KeyMaterialError> {
        let parse_failed = |_| KeyMaterialError::Parse(algorithm);
        let key_pair = match algorithm {
            Algorithm::Rs256 => {
                ParsedKeyPair::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(parse_failed)?)
            }
            Algorithm::Es256 => ParsedKeyPair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(parse_failed)?,
            ),
            Algorithm::EdDsa => {
                ParsedKeyPair::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(parse_failed)?)
            }
            // A MAC key is a `MacKey`: a JWS verifiers accept is never signed with one.
            Algorithm::Hs256 => return Err(KeyMaterialError::NotJws(algorithm)),
        };
        Ok(Signer {
            kid,
            algorithm,
            key_pair,
            rng: SystemRandom::new(),
        })
    }

    /// Returns the key id.
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    /// Returns the pinned algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign_jws<T: serde::Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, SignError> {
        let header = JwsHeader {
            alg: self.algorithm.as_str().to_owned(),
            kid: Some(self.kid.as_str().to_owned()),
            typ: Some(typ.to_owned()),
        };
        let header_json = serde_json::to_vec(&header)?;
        let claims_json = serde_json::to_vec(claims)?;
        let mut token =
            String::with_capacity((header_json.len() + claims_json.len()) * 4 / 3 + 400);
        URL_SAFE_NO_PAD.encode_string(&header_json, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
        let signature = self.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }

    /// Signs raw bytes.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.key_pair {
            ParsedKeyPair::Rsa(key_pair) => {
                let mut signature = vec![0u8; key_pair.public_modulus_len()];
                key_pair
                    .sign(
                        &signature::RSA_PKCS1_SHA256,
                        &self.rng,
                        message,
                        &mut signature,
                    )
                    .map_err(|_| SignError::Crypto)?;
                Ok(signature)
            }
            ParsedKeyPair::Ecdsa(key_pair) => Ok(key_pair
                .sign(&self.rng, message)
                .map_err(|_| SignError::Crypto)?
                .as_ref()
                .to_vec()),
            ParsedKeyPair::Ed25519(key_pair) => Ok(key_pair.sign(message).as_ref().to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_common::UnixMillis;
    use tessera_common::keys::{KeySchedule, KeySetName};
    use tessera_common::verify::{VerifyingKey, check_signature, parse_compact};

    use super::*;
    use crate::keys::material;

    #[test]
    fn every_algorithm_signs_what_the_shared_verifier_accepts() {
        for algorithm in [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa] {
            let generated = material::generate(algorithm, "k1").unwrap();
            let signer =
                Signer::from_pkcs8(KeyId::new("k1").unwrap(), algorithm, &generated.private_key)
                    .unwrap();
            let token = signer
                .sign_jws("at+jwt", &serde_json::json!({"sub": "u"}))
                .unwrap();
            let schedule = KeySchedule {
                kid: KeyId::new("k1").unwrap(),
                key_set: KeySetName::Access,
                algorithm,
                created_at: UnixMillis(0),
                activates_at: UnixMillis(0),
                deactivates_at: None,
                verify_until: None,
                revoked_at: None,
                public_jwk: generated.public_jwk.clone(),
            };
            let verifying_key = VerifyingKey::from_schedule(&schedule).unwrap();
            let jws = parse_compact(&token).unwrap();
            assert_eq!(check_signature(&jws, &verifying_key), Ok(()), "{algorithm}");
            let mut tampered = token.clone();
            tampered.insert(token.find('.').unwrap() + 2, 'A');
            let jws = parse_compact(&tampered).unwrap();
            assert!(
                check_signature(&jws, &verifying_key).is_err(),
                "{algorithm}"
            );
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let generated = material::generate(Algorithm::EdDsa, "k").unwrap();
        let signer = Signer::from_pkcs8(
            KeyId::new("k").unwrap(),
            Algorithm::EdDsa,
            &generated.private_key,
        )
        .unwrap();
        assert_eq!(
            format!("{signer:?}"),
            "Signer { kid: KeyId(\"k\"), algorithm: EdDsa, .. }"
        );
        assert!(!format!("{generated:?}").contains("pkcs8"));
    }
}
