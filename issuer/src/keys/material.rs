//! Key generation: a fresh key pair per algorithm, its PKCS#8 private key (to be wrapped
//! under the KEK at once) and its public JWK.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
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
}

/// A freshly generated key: private PKCS#8 (wiped on drop) and public JWK.
pub struct GeneratedKey {
    pub pkcs8: Zeroizing<Vec<u8>>,
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
                pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
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
                pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
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
                pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
                public_jwk: jwk,
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
