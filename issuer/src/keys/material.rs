//! Key generation: a fresh key per algorithm, its private material (to be wrapped under
//! the KEK at once) and its JWK. For an asymmetric algorithm the material is the PKCS#8
//! key pair and the JWK its public half; for HS256 the material is a 256-bit secret and
//! the JWK is metadata only (`kty: oct` without `k`), so nothing secret can be published
//! through it.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tessera_common::jwk::Jwk;
use tessera_common::keys::Algorithm;
use zeroize::Zeroizing;

/// Why a key could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyMaterialError {
    #[error("key generation failed for {0}")]
    Generate(Algorithm),
    #[error("stored private key for {0} is not a valid PKCS#8 document")]
    Parse(Algorithm),
    #[error("{0} keys do not sign JWS")]
    NotJws(Algorithm),
    #[error("{0} keys do not compute MACs")]
    NotMac(Algorithm),
    #[error("stored {0} secret has the wrong length")]
    SecretLength(Algorithm),
}

/// Length of an HS256 secret: the hash output size (RFC 7518 §3.2).
pub const HMAC_KEY_BYTES: usize = 32;

/// A freshly generated key: private material (wiped on drop) and public JWK.
pub struct GeneratedKey {
    /// PKCS#8 for RS256, ES256 and EdDSA; the raw secret for HS256.
    pub private_key: Zeroizing<Vec<u8>>,
    /// The public key, or for HS256 the key's metadata only.
    pub public_jwk: Jwk,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("public_jwk", &self.public_jwk)
            .finish_non_exhaustive()
    }
}

/// Generates a key pair for `algorithm` whose JWK carries `kid`.
pub fn generate(algorithm: Algorithm, kid: &str) -> Result<GeneratedKey, KeyMaterialError> {
    let failed = |_| KeyMaterialError::Generate(algorithm);
    match algorithm {
        Algorithm::Rs256 => {
            let key_pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?;
            let pkcs8: Pkcs8V1Der<'_> = key_pair.as_der().map_err(failed)?;
            let public = key_pair.public_key();
            let jwk = Jwk {
                kty: "RSA".into(),
                n: Some(URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero())),
                e: Some(
                    URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
                ),
                ..base_jwk(algorithm, kid)
            };
            Ok(GeneratedKey {
                private_key: Zeroizing::new(pkcs8.as_ref().to_vec()),
                public_jwk: jwk,
            })
        }
        Algorithm::Es256 => {
            let key_pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(failed)?;
            let pkcs8 = key_pair.to_pkcs8v1().map_err(failed)?;
            // The public key is the uncompressed point 04 ‖ X ‖ Y.
            let point = key_pair.public_key().as_ref();
            let (x, y) = point[1..].split_at(32);
            let jwk = Jwk {
                kty: "EC".into(),
                crv: Some("P-256".into()),
                x: Some(URL_SAFE_NO_PAD.encode(x)),
                y: Some(URL_SAFE_NO_PAD.encode(y)),
                ..base_jwk(algorithm, kid)
            };
            Ok(GeneratedKey {
                private_key: Zeroizing::new(pkcs8.as_ref().to_vec()),
                public_jwk: jwk,
            })
        }
        Algorithm::EdDsa => {
            let key_pair = Ed25519KeyPair::generate().map_err(failed)?;
            let pkcs8 = key_pair.to_pkcs8v1().map_err(failed)?;
            let jwk = Jwk {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(URL_SAFE_NO_PAD.encode(key_pair.public_key().as_ref())),
                ..base_jwk(algorithm, kid)
            };
            Ok(GeneratedKey {
                private_key: Zeroizing::new(pkcs8.as_ref().to_vec()),
                public_jwk: jwk,
            })
        }
        Algorithm::Hs256 => {
            let mut secret = Zeroizing::new(vec![0u8; HMAC_KEY_BYTES]);
            SystemRandom::new()
                .fill(secret.as_mut_slice())
                .map_err(|_| KeyMaterialError::Generate(algorithm))?;
            Ok(GeneratedKey {
                private_key: secret,
                public_jwk: Jwk {
                    kty: "oct".into(),
                    ..base_jwk(algorithm, kid)
                },
            })
        }
    }
}

fn base_jwk(algorithm: Algorithm, kid: &str) -> Jwk {
    Jwk {
        kty: String::new(),
        kid: kid.to_owned(),
        alg: algorithm.as_str().to_owned(),
        use_: "sig".into(),
        n: None,
        e: None,
        crv: None,
        x: None,
        y: None,
    }
}

/// Returns a new key id: `<set>-<UUIDv7>` so ids sort by creation and name their set.
pub fn new_kid(key_set: tessera_common::keys::KeySetName) -> String {
    format!("{}-{}", key_set.as_str(), uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_key_is_a_fresh_secret_and_its_jwk_carries_none_of_it() {
        let first = generate(Algorithm::Hs256, "webhook-1").unwrap();
        let second = generate(Algorithm::Hs256, "webhook-2").unwrap();
        assert_eq!(first.private_key.len(), HMAC_KEY_BYTES);
        assert_ne!(first.private_key, second.private_key);
        let jwk = serde_json::to_value(&first.public_jwk).unwrap();
        assert_eq!(
            jwk,
            serde_json::json!({"kty": "oct", "kid": "webhook-1", "alg": "HS256", "use": "sig"})
        );
        assert!(!format!("{first:?}").contains("private_key"));
    }
}
