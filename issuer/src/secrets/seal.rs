//! Envelope sealing of secret values (issue 12): each version gets its own random data
//! key; the value is sealed under it with AES-256-GCM, bound to the secret's name and
//! version as associated data (a sealed value copied to another row does not open), and
//! the data key is wrapped under the current KEK, bound the same way. Rotating the KEK
//! therefore only re-wraps 32-byte keys, and the store never holds a value in the clear.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::{SecretError, SecretValue};
use crate::keyring::Keyring;
use crate::store::WrappedKey;

const DATA_KEY_BYTES: usize = 32;

/// A sealed value and its wrapped data key, as stored.
pub struct Sealed {
    pub data_key: WrappedKey,
    pub sealed_value: Vec<u8>,
}

fn value_aad(name: &str, version: u64) -> String {
    format!("tessera-secret-value-v1|{name}|{version}")
}

fn data_key_name(name: &str, version: u64) -> String {
    format!("secret-data-key|{name}|{version}")
}

/// Fills `bytes` from the OS random source (fatal when it fails: a predictable key or
/// nonce is worse than stopping).
pub(crate) fn fill_random(bytes: &mut [u8]) {
    SystemRandom::new()
        .fill(bytes)
        .expect("operating system random source failed");
}

/// Seals `value` as version `version` of `name`.
pub fn seal(
    keyring: &Keyring,
    name: &str,
    version: u64,
    value: &SecretValue,
) -> Result<Sealed, SecretError> {
    let mut data_key = Zeroizing::new([0u8; DATA_KEY_BYTES]);
    fill_random(data_key.as_mut_slice());
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, data_key.as_slice()).map_err(|_| SecretError::Sealing)?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let mut in_out = Zeroizing::new(value.expose().to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(value_aad(name, version).as_bytes()),
        &mut *in_out,
    )
    .map_err(|_| SecretError::Sealing)?;
    let mut sealed_value = nonce.to_vec();
    sealed_value.extend_from_slice(&in_out);
    let kek = keyring.current_kek().map_err(|_| SecretError::Sealing)?;
    Ok(Sealed {
        data_key: kek.wrap_secret(&data_key_name(name, version), data_key.as_slice()),
        sealed_value,
    })
}

/// Opens version `version` of `name`; fails when the KEK, the name or the version do not
/// match what sealed it.
pub fn open(
    keyring: &Keyring,
    name: &str,
    version: u64,
    data_key: &WrappedKey,
    sealed_value: &[u8],
) -> Result<SecretValue, SecretError> {
    let kek = keyring
        .kek(data_key.kek_version)
        .map_err(|_| SecretError::Sealing)?;
    let raw_key = kek
        .unwrap_secret(&data_key_name(name, version), data_key)
        .map_err(|_| SecretError::Sealing)?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &raw_key).map_err(|_| SecretError::Sealing)?,
    );
    if sealed_value.len() < NONCE_LEN {
        return Err(SecretError::Sealing);
    }
    let (nonce, sealed) = sealed_value.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Sealing)?;
    let mut in_out = Zeroizing::new(sealed.to_vec());
    let len = key
        .open_in_place(
            nonce,
            Aad::from(value_aad(name, version).as_bytes()),
            &mut in_out,
        )
        .map_err(|_| SecretError::Sealing)?
        .len();
    Ok(SecretValue::new(in_out[..len].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::Kek;

    #[test]
    fn sealed_values_open_only_as_their_own_name_and_version() {
        let keyring = Keyring::from_kek(Kek::from_bytes(&[5; 32]).unwrap()).unwrap();
        let value = SecretValue::new(b"hunter2-very-secret".to_vec());
        let sealed = seal(&keyring, "payments/db", 3, &value).unwrap();
        assert!(
            !sealed
                .sealed_value
                .windows(6)
                .any(|window| window == b"hunter")
        );
        let opened = open(
            &keyring,
            "payments/db",
            3,
            &sealed.data_key,
            &sealed.sealed_value,
        );
        assert_eq!(opened.unwrap().expose(), value.expose());
        assert!(
            open(
                &keyring,
                "payments/db",
                4,
                &sealed.data_key,
                &sealed.sealed_value
            )
            .is_err()
        );
        assert!(
            open(
                &keyring,
                "payments/dc",
                3,
                &sealed.data_key,
                &sealed.sealed_value
            )
            .is_err()
        );
        let other = Keyring::from_kek(Kek::from_bytes(&[6; 32]).unwrap()).unwrap();
        assert!(
            open(
                &other,
                "payments/db",
                3,
                &sealed.data_key,
                &sealed.sealed_value
            )
            .is_err()
        );
    }
}
