//! The key-encryption key: wraps private keys at rest with AES-256-GCM, binding each
//! ciphertext to its key set and kid (associated data) so a wrapped key cannot be moved
//! onto another key's row.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_common::keys::KeySetName;
use zeroize::Zeroizing;

use crate::store::WrappedKey;

/// Length of the raw KEK.
pub const KEK_BYTES: usize = 32;

/// Why the KEK could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("cannot read KEK file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write KEK file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("KEK must be {KEK_BYTES} bytes, base64-encoded")]
    BadEncoding,
    #[error(
        "wrapped key does not decrypt under this KEK (wrong KEK, or the row was tampered with)"
    )]
    Unwrap,
    #[error("wrapped item was sealed by KEK {wrapped}, not by KEK {kek}")]
    WrongVersion {
        wrapped: KekVersion,
        kek: KekVersion,
    },
    #[error("KEK {0} is not in the keyring")]
    UnknownVersion(KekVersion),
    #[error("no KEK is loaded (the issuer is sealed)")]
    Sealed,
    #[error("the operating system random source failed")]
    Random,
}

/// Which key-encryption key sealed a wrapped item. The KEK a file or `TESSERA_KEK` holds
/// is version 1 (everything wrapped before versions existed was sealed by it); a new
/// version only ever adds to the keyring, so items sealed by older ones stay readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KekVersion(i32);

impl KekVersion {
    /// The KEK from the file or environment variable.
    pub const FIRST: KekVersion = KekVersion(1);

    /// Returns the version numbered `number`, or `None` when it is not positive.
    pub const fn new(number: i32) -> Option<KekVersion> {
        if number >= 1 {
            Some(KekVersion(number))
        } else {
            None
        }
    }

    /// Returns the version number (as stored).
    pub const fn get(self) -> i32 {
        self.0
    }
}

impl std::fmt::Display for KekVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// One version of the KEK. Its `Debug` is redacted.
pub struct Kek {
    version: KekVersion,
    key: LessSafeKey,
    /// HMAC key for deriving subkeys (the credential pepper) from the KEK.
    derivation: aws_lc_rs::hmac::Key,
    /// A short, non-secret fingerprint (first bytes of SHA-256 of the key) for logs.
    fingerprint: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Kek(version={}, fingerprint={})",
            self.version, self.fingerprint
        )
    }
}

impl Kek {
    /// Builds version 1 of the KEK from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Kek, KekError> {
        if bytes.len() != KEK_BYTES {
            return Err(KekError::BadEncoding);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KekError::BadEncoding)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let fingerprint = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Kek {
            version: KekVersion::FIRST,
            key: LessSafeKey::new(unbound),
            derivation: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes),
            fingerprint,
        })
    }

    /// Decodes a base64 KEK (as found in a file or `TESSERA_KEK`).
    pub fn from_base64(text: &str) -> Result<Kek, KekError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| KekError::BadEncoding)?,
        );
        Kek::from_bytes(&bytes)
    }

    /// Reads a base64 KEK from `path`.
    pub fn from_file(path: &Path) -> Result<Kek, KekError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KekError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        Kek::from_base64(&text)
    }

    /// Reads the KEK at `path`, creating it (random, mode 0600) if it does not exist.
    /// Returns the KEK and whether it was created. For the development setup only.
    pub fn load_or_create(path: &Path) -> Result<(Kek, bool), KekError> {
        if path.exists() {
            return Ok((Kek::from_file(path)?, false));
        }
        let mut raw = Zeroizing::new([0u8; KEK_BYTES]);
        SystemRandom::new()
            .fill(raw.as_mut())
            .map_err(|_| KekError::Random)?;
        let text = Zeroizing::new(STANDARD.encode(raw.as_ref()));
        crate::files::write_private(path, text.as_bytes()).map_err(|source| KekError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok((Kek::from_bytes(raw.as_ref())?, true))
    }

    /// Returns this KEK as version `version` (for a keyring holding several).
    pub fn with_version(self, version: KekVersion) -> Kek {
        Kek { version, ..self }
    }

    /// Returns the version this KEK seals as.
    pub fn version(&self) -> KekVersion {
        self.version
    }

    /// Derives a 32-byte subkey for `label` (e.g. the credential pepper, version 1).
    pub fn derive(&self, label: &str) -> Zeroizing<Vec<u8>> {
        let tag = aws_lc_rs::hmac::sign(&self.derivation, label.as_bytes());
        Zeroizing::new(tag.as_ref().to_vec())
    }

    /// Returns the non-secret fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Seals `plaintext` (a PKCS#8 private key) for the key `kid` of `key_set`.
    pub fn wrap(&self, key_set: KeySetName, kid: &str, plaintext: &[u8]) -> WrappedKey {
        self.seal(&associated_data(key_set, kid), plaintext)
    }

    /// Opens a wrapped key; fails if the KEK (or its version), the key set or the kid do
    /// not match.
    pub fn unwrap(
        &self,
        key_set: KeySetName,
        kid: &str,
        wrapped: &WrappedKey,
    ) -> Result<Zeroizing<Vec<u8>>, KekError> {
        self.open(&associated_data(key_set, kid), wrapped)
    }

    /// Seals a root secret other than a private key (a later pepper version), bound to
    /// its `name` so it cannot be moved under another.
    pub fn wrap_secret(&self, name: &str, plaintext: &[u8]) -> WrappedKey {
        self.seal(&format!("tessera-secret-v1|{name}"), plaintext)
    }

    /// Opens what [`Kek::wrap_secret`] sealed under `name`.
    pub fn unwrap_secret(
        &self,
        name: &str,
        wrapped: &WrappedKey,
    ) -> Result<Zeroizing<Vec<u8>>, KekError> {
        self.open(&format!("tessera-secret-v1|{name}"), wrapped)
    }

    fn seal(&self, aad: &str, plaintext: &[u8]) -> WrappedKey {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        // A failing OS random source is fatal: sealing with a predictable nonce is worse.
        SystemRandom::new()
            .fill(&mut nonce_bytes)
            .expect("operating system random source failed");
        let mut in_out = plaintext.to_vec();
        // Sealing only fails for inputs beyond AES-GCM's length limit (64 GiB).
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .expect("private key larger than the AES-GCM limit");
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&in_out);
        zeroize::Zeroize::zeroize(&mut in_out);
        WrappedKey {
            kek_version: self.version,
            sealed,
        }
    }

    fn open(&self, aad: &str, wrapped: &WrappedKey) -> Result<Zeroizing<Vec<u8>>, KekError> {
        if wrapped.kek_version != self.version {
            return Err(KekError::WrongVersion {
                wrapped: wrapped.kek_version,
                kek: self.version,
            });
        }
        if wrapped.sealed.len() < NONCE_LEN {
            return Err(KekError::Unwrap);
        }
        let (nonce_bytes, sealed) = wrapped.sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| KekError::Unwrap)?;
        let mut in_out = Zeroizing::new(sealed.to_vec());
        let plaintext_len = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
            .map_err(|_| KekError::Unwrap)?
            .len();
        in_out.truncate(plaintext_len);
        Ok(in_out)
    }
}

fn associated_data(key_set: KeySetName, kid: &str) -> String {
    format!("tessera-key-v1|{key_set}|{kid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::from_bytes(&[byte; KEK_BYTES]).unwrap()
    }

    #[test]
    fn wrap_round_trips_and_binds_kid_and_key_set() {
        let kek = kek(7);
        let wrapped = kek.wrap(KeySetName::Access, "k1", b"private");
        assert_eq!(
            kek.unwrap(KeySetName::Access, "k1", &wrapped)
                .unwrap()
                .as_slice(),
            b"private"
        );
        assert!(kek.unwrap(KeySetName::Access, "k2", &wrapped).is_err());
        assert!(kek.unwrap(KeySetName::Action, "k1", &wrapped).is_err());
        assert!(
            super::Kek::from_bytes(&[8; KEK_BYTES])
                .unwrap()
                .unwrap(KeySetName::Access, "k1", &wrapped)
                .is_err()
        );
    }

    #[test]
    fn wrapped_keys_record_the_kek_version_and_open_only_under_it() {
        let v2 = KekVersion::new(2).unwrap();
        let wrapped = kek(7)
            .with_version(v2)
            .wrap(KeySetName::Access, "k1", b"private");
        assert_eq!(wrapped.kek_version, v2);
        // The same material under another version number refuses it: the record, not
        // a guess, picks the KEK.
        assert!(matches!(
            kek(7).unwrap(KeySetName::Access, "k1", &wrapped),
            Err(KekError::WrongVersion { .. })
        ));
        let secret = kek(7).wrap_secret("pepper/v2", b"material");
        assert!(kek(7).unwrap_secret("pepper/v3", &secret).is_err());
        assert_eq!(
            kek(7)
                .unwrap_secret("pepper/v2", &secret)
                .unwrap()
                .as_slice(),
            b"material"
        );
    }

    #[test]
    fn wrapped_bytes_do_not_contain_the_plaintext() {
        let wrapped = kek(1).wrap(KeySetName::Access, "k", b"very secret key material");
        assert!(!wrapped.sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let debug = format!("{:?}", kek(3));
        assert!(debug.starts_with("Kek(version=v1, fingerprint="), "{debug}");
    }
}
