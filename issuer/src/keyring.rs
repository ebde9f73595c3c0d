//! The keyring: every version of the issuer's root secrets, the KEK and the credential
//! pepper, with the current version of each. Components hold an `Arc<Keyring>` and ask it
//! at use time, never at construction, so a sealed start (a later issue) can build them
//! all before the secrets exist and hand the secrets over when it is unsealed.
//!
//! Versions are immutable and only added: whatever an older version sealed or hashed
//! stays readable, because every wrapped item and every credential hash records the
//! version that made it and reading picks that version (`unwrap`, `secret_matches`).
//! New writes use the current (highest) version.
//!
//! - KEK version 1 is the KEK from the file or `TESSERA_KEK`.
//! - Pepper version 1 is derived from KEK version 1 exactly as before versions existed
//!   (labels `tessera-credential-pepper-v1`, `tessera-refresh-successor-v1`), so existing
//!   databases keep working. A later version is 32 random bytes stored in the store's
//!   `meta` table under `pepper/v<N>`, wrapped under the then-current KEK (the value
//!   records that KEK's version): [`introduce_pepper`] adds one, [`load_stored_peppers`]
//!   loads them at start and whenever a record names a version this replica lacks.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tessera_common::credential::{self, PepperVersion, Secret};
use tessera_common::keys::KeySetName;
use zeroize::Zeroizing;

use crate::kek::{Kek, KekError, KekVersion};
use crate::store::{Store, StoreError, WrappedKey};

/// Label of pepper version 1's hashing key, derived from KEK version 1.
const PEPPER_V1_LABEL: &str = "tessera-credential-pepper-v1";
/// Label of pepper version 1's refresh-successor key, derived from KEK version 1.
const SUCCESSOR_V1_LABEL: &str = "tessera-refresh-successor-v1";
/// Labels deriving both keys of a later pepper version from its random material.
const PEPPER_LABEL: &str = "tessera-credential-pepper";
const SUCCESSOR_LABEL: &str = "tessera-refresh-successor";
/// Bytes of a stored pepper's random material.
const PEPPER_MATERIAL_BYTES: usize = 32;

/// Why the keyring could not serve a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("the keyring holds no pepper yet (the issuer is sealed)")]
    Sealed,
    #[error("pepper {0} is not in the keyring")]
    UnknownPepper(PepperVersion),
    #[error("pepper {0} is already in the keyring with other material")]
    PepperExists(PepperVersion),
    #[error("KEK {0} is already in the keyring with other material")]
    KekExists(KekVersion),
    #[error("stored pepper {0} is unreadable")]
    CorruptPepper(PepperVersion),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One version of the credential pepper: the key that hashes credential secrets and the
/// key that derives refresh-token successors. Its `Debug` is redacted.
pub struct Pepper {
    version: PepperVersion,
    hashing: Zeroizing<Vec<u8>>,
    successor: hmac::Key,
    /// A short, non-secret fingerprint of the hashing key, to tell versions apart.
    fingerprint: [u8; 8],
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pepper(version={})", self.version)
    }
}

impl Pepper {
    /// Pepper version 1, derived from `kek` exactly as before versions existed.
    pub fn derived_v1(kek: &Kek) -> Pepper {
        Pepper::from_keys(
            PepperVersion::FIRST,
            kek.derive(PEPPER_V1_LABEL),
            &kek.derive(SUCCESSOR_V1_LABEL),
        )
    }

    /// A later pepper version from its random `material`.
    pub fn from_material(version: PepperVersion, material: &[u8]) -> Pepper {
        let key = hmac::Key::new(hmac::HMAC_SHA256, material);
        let derive =
            |label: &str| Zeroizing::new(hmac::sign(&key, label.as_bytes()).as_ref().to_vec());
        Pepper::from_keys(version, derive(PEPPER_LABEL), &derive(SUCCESSOR_LABEL))
    }

    fn from_keys(version: PepperVersion, hashing: Zeroizing<Vec<u8>>, successor: &[u8]) -> Pepper {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &hashing);
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&digest.as_ref()[..8]);
        Pepper {
            version,
            hashing,
            successor: hmac::Key::new(hmac::HMAC_SHA256, successor),
            fingerprint,
        }
    }

    /// Returns the version.
    pub fn version(&self) -> PepperVersion {
        self.version
    }

    /// Returns HMAC-SHA256(pepper, secret), the stored form of a credential secret.
    pub fn hash(&self, secret: &Secret) -> [u8; 32] {
        credential::hash_secret(&self.hashing, secret)
    }

    /// Returns the key that derives the successors of refresh tokens this version hashed.
    pub fn successor_key(&self) -> &hmac::Key {
        &self.successor
    }
}

/// A secret hashed for storage, with the pepper version that hashed it.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedSecret {
    pub pepper_version: PepperVersion,
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for HashedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashedSecret(pepper {})", self.pepper_version)
    }
}

/// Every version of the root secrets. See the module documentation.
#[derive(Default)]
pub struct Keyring {
    versions: RwLock<Versions>,
}

#[derive(Default)]
struct Versions {
    keks: BTreeMap<KekVersion, Arc<Kek>>,
    peppers: BTreeMap<PepperVersion, Arc<Pepper>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions = self.read();
        f.debug_struct("Keyring")
            .field("keks", &versions.keks.keys().collect::<Vec<_>>())
            .field("peppers", &versions.peppers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// An empty keyring: every use fails with "sealed" until secrets are added.
    pub fn sealed() -> Keyring {
        Keyring::default()
    }

    /// A keyring holding `kek` (version 1, from a file or the environment) and pepper
    /// version 1 derived from it.
    pub fn from_kek(kek: Kek) -> Result<Keyring, KeyringError> {
        let keyring = Keyring::sealed();
        keyring.add_pepper(Pepper::derived_v1(&kek))?;
        keyring.add_kek(kek)?;
        Ok(keyring)
    }

    /// Adds a KEK version; the highest becomes current. Adding the same material again
    /// is a no-op; other material under a held version is refused.
    pub fn add_kek(&self, kek: Kek) -> Result<(), KeyringError> {
        let mut versions = self.write();
        if let Some(held) = versions.keks.get(&kek.version()) {
            return if held.fingerprint() == kek.fingerprint() {
                Ok(())
            } else {
                Err(KeyringError::KekExists(kek.version()))
            };
        }
        versions.keks.insert(kek.version(), Arc::new(kek));
        Ok(())
    }

    /// Adds a pepper version; the highest becomes current. Adding the same material again
    /// is a no-op; other material under a held version is refused.
    pub fn add_pepper(&self, pepper: Pepper) -> Result<(), KeyringError> {
        let mut versions = self.write();
        if let Some(held) = versions.peppers.get(&pepper.version) {
            return if held.fingerprint == pepper.fingerprint {
                Ok(())
            } else {
                Err(KeyringError::PepperExists(pepper.version))
            };
        }
        versions.peppers.insert(pepper.version, Arc::new(pepper));
        Ok(())
    }

    /// Returns the current KEK (the highest version).
    pub fn current_kek(&self) -> Result<Arc<Kek>, KekError> {
        self.read()
            .keks
            .values()
            .next_back()
            .cloned()
            .ok_or(KekError::Sealed)
    }

    /// Returns KEK `version`.
    pub fn kek(&self, version: KekVersion) -> Result<Arc<Kek>, KekError> {
        let versions = self.read();
        match versions.keks.get(&version) {
            Some(kek) => Ok(kek.clone()),
            None if versions.keks.is_empty() => Err(KekError::Sealed),
            None => Err(KekError::UnknownVersion(version)),
        }
    }

    /// Returns the current pepper (the highest version).
    pub fn current_pepper(&self) -> Result<Arc<Pepper>, KeyringError> {
        self.read()
            .peppers
            .values()
            .next_back()
            .cloned()
            .ok_or(KeyringError::Sealed)
    }

    /// Returns pepper `version`.
    pub fn pepper(&self, version: PepperVersion) -> Result<Arc<Pepper>, KeyringError> {
        let versions = self.read();
        match versions.peppers.get(&version) {
            Some(pepper) => Ok(pepper.clone()),
            None if versions.peppers.is_empty() => Err(KeyringError::Sealed),
            None => Err(KeyringError::UnknownPepper(version)),
        }
    }

    /// Seals a private key under the current KEK, recording its version.
    pub fn wrap(
        &self,
        key_set: KeySetName,
        kid: &str,
        plaintext: &[u8],
    ) -> Result<WrappedKey, KekError> {
        Ok(self.current_kek()?.wrap(key_set, kid, plaintext))
    }

    /// Opens a wrapped key with the KEK version it records.
    pub fn unwrap(
        &self,
        key_set: KeySetName,
        kid: &str,
        wrapped: &WrappedKey,
    ) -> Result<Zeroizing<Vec<u8>>, KekError> {
        self.kek(wrapped.kek_version)?.unwrap(key_set, kid, wrapped)
    }

    /// Hashes `secret` under the current pepper, recording its version.
    pub fn hash_secret(&self, secret: &Secret) -> Result<HashedSecret, KeyringError> {
        let pepper = self.current_pepper()?;
        Ok(HashedSecret {
            pepper_version: pepper.version,
            hash: pepper.hash(secret).to_vec(),
        })
    }

    /// Compares `secret` with `stored_hash` (made by pepper `version`) in constant time.
    pub fn secret_matches(
        &self,
        secret: &Secret,
        version: PepperVersion,
        stored_hash: &[u8],
    ) -> Result<bool, KeyringError> {
        let pepper = self.pepper(version)?;
        Ok(credential::secret_matches(
            &pepper.hashing,
            secret,
            stored_hash,
        ))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Versions> {
        // A panic while holding the lock cannot leave the maps half-written (each write
        // is one insert), so a poisoned lock is still consistent.
        self.versions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Versions> {
        self.versions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns the `meta` name under which pepper `version` (≥ 2) is stored.
fn pepper_meta_name(version: PepperVersion) -> String {
    format!("pepper/v{}", version.get())
}

/// Loads every stored pepper version above the keyring's current one into the keyring
/// (versions are consecutive, so loading stops at the first missing one). Returns the
/// current version afterwards.
pub async fn load_stored_peppers(
    keyring: &Keyring,
    store: &dyn Store,
) -> Result<PepperVersion, KeyringError> {
    let mut current = keyring.current_pepper()?.version();
    loop {
        let next = current.next();
        let Some(value) = store.meta(&pepper_meta_name(next)).await? else {
            return Ok(current);
        };
        keyring.add_pepper(open_stored_pepper(keyring, next, &value)?)?;
        current = next;
    }
}

/// Introduces the next pepper version: 32 random bytes, wrapped under the current KEK
/// and stored under `pepper/v<N>` unless another replica stored that version first (then
/// its material is used). New credentials are hashed with it at once on this replica;
/// older ones keep verifying under the version their records name. Returns the version.
pub async fn introduce_pepper(
    keyring: &Keyring,
    store: &dyn Store,
) -> Result<PepperVersion, KeyringError> {
    let current = load_stored_peppers(keyring, store).await?;
    let next = current.next();
    let mut material = Zeroizing::new([0u8; PEPPER_MATERIAL_BYTES]);
    SystemRandom::new()
        .fill(material.as_mut())
        .map_err(|_| KekError::Random)?;
    let kek = keyring.current_kek()?;
    let wrapped = kek.wrap_secret(&pepper_meta_name(next), material.as_ref());
    let mut value = wrapped.kek_version.get().to_be_bytes().to_vec();
    value.extend_from_slice(&wrapped.sealed);
    let stored = store
        .put_meta_if_absent(&pepper_meta_name(next), value)
        .await?;
    keyring.add_pepper(open_stored_pepper(keyring, next, &stored)?)?;
    Ok(next)
}

/// Opens a stored pepper value: the sealing KEK's version (4 bytes, big-endian), then
/// the sealed material.
fn open_stored_pepper(
    keyring: &Keyring,
    version: PepperVersion,
    value: &[u8],
) -> Result<Pepper, KeyringError> {
    let (kek_version, sealed) = value
        .split_first_chunk::<4>()
        .ok_or(KeyringError::CorruptPepper(version))?;
    let kek_version = KekVersion::new(i32::from_be_bytes(*kek_version))
        .ok_or(KeyringError::CorruptPepper(version))?;
    let wrapped = WrappedKey {
        kek_version,
        sealed: sealed.to_vec(),
    };
    let material = keyring
        .kek(kek_version)?
        .unwrap_secret(&pepper_meta_name(version), &wrapped)?;
    Ok(Pepper::from_material(version, &material))
}

#[cfg(test)]
mod tests {
    use tessera_common::credential::{Credential, CredentialKind};

    use super::*;
    use crate::kek::KEK_BYTES;
    use crate::sessions::decision::successor_credential;

    fn kek(byte: u8, version: i32) -> Kek {
        Kek::from_bytes(&[byte; KEK_BYTES])
            .unwrap()
            .with_version(KekVersion::new(version).unwrap())
    }

    #[test]
    fn pepper_v1_is_the_kek_derived_pepper_of_before() {
        let keyring = Keyring::from_kek(kek(1, 1)).unwrap();
        let secret = Credential::generate(CredentialKind::Refresh).secret;
        let before = credential::hash_secret(&kek(1, 1).derive(PEPPER_V1_LABEL), &secret);
        let hashed = keyring.hash_secret(&secret).unwrap();
        assert_eq!(hashed.pepper_version, PepperVersion::FIRST);
        assert_eq!(hashed.hash, before.to_vec());
        // The successor key too: a refresh token rotated before versions existed and
        // presented again within its grace window derives the same successor.
        let presented = Credential::generate(CredentialKind::Refresh);
        let successor_v1 = hmac::Key::new(hmac::HMAC_SHA256, &kek(1, 1).derive(SUCCESSOR_V1_LABEL));
        let pepper = keyring.current_pepper().unwrap();
        assert_eq!(
            successor_credential(pepper.successor_key(), &presented).expose(),
            successor_credential(&successor_v1, &presented).expose()
        );
    }

    #[test]
    fn a_second_pepper_hashes_new_secrets_and_the_first_still_verifies() {
        let keyring = Keyring::from_kek(kek(1, 1)).unwrap();
        let old = Credential::generate(CredentialKind::IssuerCaller).secret;
        let old_hash = keyring.hash_secret(&old).unwrap();
        let v2 = PepperVersion::new(2).unwrap();
        keyring
            .add_pepper(Pepper::from_material(v2, &[9; 32]))
            .unwrap();
        let new = Credential::generate(CredentialKind::IssuerCaller).secret;
        let new_hash = keyring.hash_secret(&new).unwrap();
        assert_eq!(new_hash.pepper_version, v2);
        assert!(
            keyring
                .secret_matches(&old, old_hash.pepper_version, &old_hash.hash)
                .unwrap()
        );
        assert!(keyring.secret_matches(&new, v2, &new_hash.hash).unwrap());
        // The version is part of the check: a hash verified under another version fails.
        assert!(
            !keyring
                .secret_matches(&new, PepperVersion::FIRST, &new_hash.hash)
                .unwrap()
        );
        assert!(matches!(
            keyring.secret_matches(&new, v2.next(), &new_hash.hash),
            Err(KeyringError::UnknownPepper(_))
        ));
    }

    #[test]
    fn a_second_kek_wraps_new_keys_and_the_first_still_unwraps() {
        let keyring = Keyring::from_kek(kek(1, 1)).unwrap();
        let old = keyring.wrap(KeySetName::Access, "k1", b"old key").unwrap();
        keyring.add_kek(kek(2, 2)).unwrap();
        let new = keyring.wrap(KeySetName::Access, "k2", b"new key").unwrap();
        assert_eq!(old.kek_version, KekVersion::FIRST);
        assert_eq!(new.kek_version, KekVersion::new(2).unwrap());
        let opened = keyring.unwrap(KeySetName::Access, "k1", &old).unwrap();
        assert_eq!(opened.as_slice(), b"old key");
        let opened = keyring.unwrap(KeySetName::Access, "k2", &new).unwrap();
        assert_eq!(opened.as_slice(), b"new key");
        // The pepper stays the one derived from KEK version 1.
        assert_eq!(
            keyring.current_pepper().unwrap().version(),
            PepperVersion::FIRST
        );
    }

    #[test]
    fn versions_are_immutable_and_a_sealed_keyring_serves_nothing() {
        let keyring = Keyring::from_kek(kek(1, 1)).unwrap();
        keyring.add_kek(kek(1, 1)).unwrap();
        assert!(matches!(
            keyring.add_kek(kek(7, 1)),
            Err(KeyringError::KekExists(_))
        ));
        assert!(matches!(
            keyring.add_pepper(Pepper::from_material(PepperVersion::FIRST, &[3; 32])),
            Err(KeyringError::PepperExists(_))
        ));
        let sealed = Keyring::sealed();
        assert!(matches!(sealed.current_kek(), Err(KekError::Sealed)));
        assert!(matches!(
            sealed.hash_secret(&Credential::generate(CredentialKind::Refresh).secret),
            Err(KeyringError::Sealed)
        ));
    }

    #[test]
    fn debug_names_versions_only() {
        let keyring = Keyring::from_kek(kek(1, 1)).unwrap();
        let debug = format!("{keyring:?} {:?}", keyring.current_pepper().unwrap());
        assert_eq!(
            debug,
            "Keyring { keks: [KekVersion(1)], peppers: [PepperVersion(1)] } Pepper(version=v1)"
        );
    }
}
