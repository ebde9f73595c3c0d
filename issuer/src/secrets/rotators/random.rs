//! `random`: a random string of a given length and alphabet (a token, a pepper, a
//! webhook signing secret). Nothing to install; the test checks the value's shape.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Created, Rotator, RotatorError, VersionView};
use crate::secrets::SecretValue;
use crate::secrets::seal::fill_random;

const DEFAULT_LENGTH: u32 = 48;
const MIN_LENGTH: u32 = 16;
const MAX_LENGTH: u32 = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomConfig {
    pub length: u32,
    /// `alphanumeric`, `hex`, `base64url` or `ascii` (printable, no space).
    pub alphabet: String,
}

impl Default for RandomConfig {
    fn default() -> Self {
        RandomConfig {
            length: DEFAULT_LENGTH,
            alphabet: "alphanumeric".to_owned(),
        }
    }
}

impl RandomConfig {
    /// Fills defaults for zero or empty fields.
    pub fn with_defaults(length: u32, alphabet: &str) -> RandomConfig {
        RandomConfig {
            length: if length == 0 { DEFAULT_LENGTH } else { length },
            alphabet: if alphabet.is_empty() {
                "alphanumeric".to_owned()
            } else {
                alphabet.to_owned()
            },
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&self.length) {
            return Err(format!("length: {MIN_LENGTH} to {MAX_LENGTH}"));
        }
        alphabet(&self.alphabet)
            .map(|_| ())
            .ok_or_else(|| "alphabet: alphanumeric, hex, base64url or ascii".to_owned())
    }
}

fn alphabet(name: &str) -> Option<Vec<u8>> {
    let ranges: &[(u8, u8)] = match name {
        "alphanumeric" => &[(b'0', b'9'), (b'A', b'Z'), (b'a', b'z')],
        "hex" => &[(b'0', b'9'), (b'a', b'f')],
        "base64url" => &[
            (b'0', b'9'),
            (b'A', b'Z'),
            (b'a', b'z'),
            (b'-', b'-'),
            (b'_', b'_'),
        ],
        "ascii" => &[(b'!', b'~')],
        _ => return None,
    };
    Some(ranges.iter().flat_map(|(low, high)| *low..=*high).collect())
}

/// Returns `length` characters drawn uniformly from `alphabet` (rejection sampling, so
/// no character is likelier than another).
pub fn random_string(length: usize, alphabet_name: &str) -> Option<Vec<u8>> {
    let chars = alphabet(alphabet_name)?;
    let limit = 256 - (256 % chars.len());
    let mut out = Vec::with_capacity(length);
    let mut pool = [0u8; 64];
    while out.len() < length {
        fill_random(&mut pool);
        for byte in pool {
            if usize::from(byte) < limit && out.len() < length {
                out.push(chars[usize::from(byte) % chars.len()]);
            }
        }
    }
    Some(out)
}

pub struct RandomRotator {
    config: RandomConfig,
}

impl RandomRotator {
    pub fn new(config: RandomConfig) -> RandomRotator {
        RandomRotator { config }
    }
}

#[async_trait]
impl Rotator for RandomRotator {
    async fn create(&self, _: Option<VersionView<'_>>) -> Result<Created, RotatorError> {
        let length = usize::try_from(self.config.length).unwrap_or(usize::MAX);
        let value = random_string(length, &self.config.alphabet)
            .ok_or_else(|| RotatorError::Config("unknown alphabet".to_owned()))?;
        Ok(Created {
            value: SecretValue::new(value),
            label: String::new(),
        })
    }

    async fn set(&self, _: VersionView<'_>) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn test(&self, pending: VersionView<'_>) -> Result<(), RotatorError> {
        let chars = alphabet(&self.config.alphabet)
            .ok_or_else(|| RotatorError::Config("unknown alphabet".to_owned()))?;
        let value = pending.value.expose();
        if value.len() != usize::try_from(self.config.length).unwrap_or(usize::MAX)
            || !value.iter().all(|byte| chars.contains(byte))
        {
            return Err(RotatorError::TestFailed(
                "value does not match the configured length and alphabet".to_owned(),
            ));
        }
        Ok(())
    }

    async fn finish(
        &self,
        _: VersionView<'_>,
        _: Option<VersionView<'_>>,
        _: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn discard(
        &self,
        _: VersionView<'_>,
        _: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn reinstate(&self, _: VersionView<'_>) -> Result<(), RotatorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_have_the_length_and_alphabet_asked() {
        for name in ["alphanumeric", "hex", "base64url", "ascii"] {
            let value = random_string(100, name).unwrap();
            let chars = alphabet(name).unwrap();
            assert_eq!(value.len(), 100);
            assert!(value.iter().all(|byte| chars.contains(byte)), "{name}");
        }
        assert_ne!(random_string(32, "hex"), random_string(32, "hex"));
        assert!(random_string(8, "emoji").is_none());
    }
}
