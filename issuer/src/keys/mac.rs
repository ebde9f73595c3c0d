//! MACs with HMAC keys (the `webhook` set): a tag over a payload, and its verification in
//! constant time. The secret exists in clear only inside a `MacKey` in the issuer's memory,
//! like a `Signer`'s private key; it is never published, so only the issuer (and, in
//! issue 10, the receivers it hands a key to) can check a tag.

use aws_lc_rs::hmac;
use tessera_common::ids::KeyId;
use tessera_common::keys::Algorithm;

use super::material::{HMAC_KEY_BYTES, KeyMaterialError};

/// An HMAC-SHA256 key pinned to its kid. Its `Debug` shows only the kid.
pub struct MacKey {
    kid: KeyId,
    key: hmac::Key,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A MAC that did not verify. Deliberately carries no detail: which byte differed is
/// exactly what an attacker forging a tag would want to learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MAC does not verify")]
pub struct MacMismatch;

impl MacKey {
    /// Builds a key from the secret unwrapped from the store; refuses a non-MAC algorithm
    /// or a secret of the wrong length (a truncated row must not become a weak key).
    pub fn from_secret(
        kid: KeyId,
        algorithm: Algorithm,
        secret: &[u8],
    ) -> Result<MacKey, KeyMaterialError> {
        if algorithm != Algorithm::Hs256 {
            return Err(KeyMaterialError::NotMac(algorithm));
        }
        if secret.len() != HMAC_KEY_BYTES {
            return Err(KeyMaterialError::SecretLength(algorithm));
        }
        Ok(MacKey {
            kid,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// Returns the key id (sent with the tag so a receiver picks the right key).
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    /// Returns the pinned algorithm.
    pub fn algorithm(&self) -> Algorithm {
        Algorithm::Hs256
    }

    /// Returns HMAC-SHA256(key, `payload`).
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key, payload).as_ref().to_vec()
    }

    /// Returns a 32-byte secret derived from this key for `context`: HMAC-SHA256(key,
    /// `context`), a pseudo-random function, so a derived secret reveals nothing about the
    /// key or about the secret of any other context. The webhook signer derives each
    /// tenant's secret this way (`webhooks::TenantWebhookKey`).
    pub fn derive_secret(&self, context: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(hmac::sign(&self.key, context).as_ref());
        secret
    }

    /// Checks `tag` over `payload` in constant time (aws-lc-rs `hmac::verify`).
    pub fn verify(&self, payload: &[u8], tag: &[u8]) -> Result<(), MacMismatch> {
        hmac::verify(&self.key, payload, tag).map_err(|_| MacMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::material;

    fn key(kid: &str) -> MacKey {
        let generated = material::generate(Algorithm::Hs256, kid).unwrap();
        MacKey::from_secret(
            KeyId::new(kid).unwrap(),
            Algorithm::Hs256,
            &generated.private_key,
        )
        .unwrap()
    }

    #[test]
    fn tag_verifies_and_any_change_is_refused() {
        let key = key("webhook-1");
        let payload = br#"{"event":"user.created","id":"u1"}"#;
        let tag = key.sign(payload);
        assert_eq!(tag.len(), 32);
        assert_eq!(key.verify(payload, &tag), Ok(()));

        let mut flipped = tag.clone();
        flipped[31] ^= 1;
        assert_eq!(key.verify(payload, &flipped), Err(MacMismatch));
        assert_eq!(key.verify(payload, &tag[..16]), Err(MacMismatch));
        assert_eq!(
            key.verify(b"{\"event\":\"user.deleted\"}", &tag),
            Err(MacMismatch)
        );
        // Another key of the same set does not accept the tag.
        assert_eq!(key_other().verify(payload, &tag), Err(MacMismatch));
    }

    fn key_other() -> MacKey {
        key("webhook-2")
    }

    #[test]
    fn tag_is_standard_hmac_sha256() {
        // Computed independently (Python `hmac.new(b"\x0b" * 32, b"Hi There", sha256)`),
        // so a receiver with any HMAC library checks the same tag.
        let key =
            MacKey::from_secret(KeyId::new("k").unwrap(), Algorithm::Hs256, &[0x0b; 32]).unwrap();
        let hex: String = key
            .sign(b"Hi There")
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(
            hex,
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn refuses_other_algorithms_and_short_secrets_and_debug_is_redacted() {
        let kid = KeyId::new("k").unwrap();
        assert!(matches!(
            MacKey::from_secret(kid.clone(), Algorithm::Rs256, &[0; HMAC_KEY_BYTES]),
            Err(KeyMaterialError::NotMac(Algorithm::Rs256))
        ));
        assert!(matches!(
            MacKey::from_secret(kid.clone(), Algorithm::Hs256, &[0; 16]),
            Err(KeyMaterialError::SecretLength(_))
        ));
        let key = MacKey::from_secret(kid, Algorithm::Hs256, &[7; HMAC_KEY_BYTES]).unwrap();
        assert_eq!(format!("{key:?}"), "MacKey { kid: KeyId(\"k\"), .. }");
    }
}
