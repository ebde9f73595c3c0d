//! Test signing keys (RS256, ES256, EdDSA) made with aws-lc-rs, and the compact JWS they
//! sign. The sidecar only ever sees their public JWKs, through the fake issuer.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tessera_proto::v1 as pb;

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private key pinned to one algorithm, with the public JWK the issuer would publish.
pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    signer: Signer,
    pub jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKey {
    /// An RSA-2048 key; as the issuer does, the pair is loaded from its PKCS#8 form.
    pub fn rs256(kid: &str) -> Self {
        let generated = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&generated)
                .unwrap();
        let key_pair = RsaKeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = key_pair.public_key();
        let jwk = json!({
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        });
        TestKey {
            kid: kid.into(),
            alg: "RS256",
            signer: Signer::Rsa(key_pair),
            jwk,
        }
    }

    /// A P-256 key.
    pub fn es256(kid: &str) -> Self {
        let key_pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = key_pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        });
        TestKey {
            kid: kid.into(),
            alg: "ES256",
            signer: Signer::Ec(key_pair),
            jwk,
        }
    }

    /// An Ed25519 key.
    pub fn eddsa(kid: &str) -> Self {
        let key_pair = Ed25519KeyPair::generate().unwrap();
        let jwk = json!({
            "kty": "OKP", "kid": kid, "alg": "EdDSA", "use": "sig", "crv": "Ed25519",
            "x": b64(key_pair.public_key().as_ref()),
        });
        TestKey {
            kid: kid.into(),
            alg: "EdDSA",
            signer: Signer::Ed(key_pair),
            jwk,
        }
    }

    /// Signs `claims` with the standard access-token header.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": self.alg, "kid": self.kid, "typ": "at+jwt"}),
            claims,
        )
    }

    /// Signs `claims` under an arbitrary `header`.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match &self.signer {
            Signer::Rsa(key_pair) => {
                let mut signature = vec![0; key_pair.public_modulus_len()];
                key_pair
                    .sign(
                        &signature::RSA_PKCS1_SHA256,
                        &SystemRandom::new(),
                        signing_input.as_bytes(),
                        &mut signature,
                    )
                    .unwrap();
                signature
            }
            Signer::Ec(key_pair) => key_pair
                .sign(&SystemRandom::new(), signing_input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::Ed(key_pair) => key_pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        format!("{signing_input}.{}", b64(&signature))
    }

    /// The key as the issuer publishes it, active since the epoch.
    pub fn published(&self) -> pb::Key {
        pb::Key {
            kid: self.kid.clone(),
            key_set: "access".into(),
            algorithm: self.alg.into(),
            state: pb::KeyState::Active as i32,
            created_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            activates_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            deactivates_at: None,
            verify_until: None,
            revoked_at: None,
            public_jwk_json: self.jwk.to_string(),
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Claims of a fresh access token for `sub`, valid for 15 minutes.
pub fn claims(sub: &str) -> Value {
    let now = now_ms();
    json!({
        "iss": "tessera",
        "sub": sub,
        "aud": "tessera-api",
        "iat": now / 1000,
        "exp": now / 1000 + 900,
        "nbf": now / 1000,
        "jti": format!("jti-{sub}-{now}-{}", rand_u64()),
        "iat_ms": now,
        "tenant_id": "acme",
        "role": "manager",
        "permissions": ["orders:read", "orders:write"],
        "session_id": format!("session-{sub}"),
        "token_type": "access",
        "mfa_verified": true,
        "features": ["beta"],
    })
}

/// A random number, for unique ids.
pub fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}
