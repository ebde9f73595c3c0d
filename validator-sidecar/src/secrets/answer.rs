//! `GetSecretValueResponse` as sent: the message encoded once per fetched version (with
//! and without `previous`), held in memory that is wiped when the version is dropped, and
//! written per call with only `staleness_seconds` appended.

use std::sync::Arc;

use prost::Message as _;
use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint};
use tessera_proto::v1 as pb;
use zeroize::Zeroize;

/// Tag of `GetSecretValueResponse.staleness_seconds`, the last field: appending it after
/// the encoded rest gives the bytes prost writes for the whole message.
const STALENESS_TAG: u32 = 6;

/// Bytes that hold a secret value: wiped on drop, never shown by `Debug`.
pub struct SecretBytes(Box<[u8]>);

impl SecretBytes {
    /// Returns the bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

/// Encodes `message` into wiped-on-drop bytes, then wipes the message's values.
pub fn encode(mut message: pb::GetSecretValueResponse) -> Arc<SecretBytes> {
    let mut buf = Vec::with_capacity(message.encoded_len());
    // The buffer has exactly the room the message needs: encoding cannot fail, and
    // `into_boxed_slice` keeps the allocation (no unwiped copy is left behind).
    let _ = message.encode(&mut buf);
    message.value.zeroize();
    message.previous_value.zeroize();
    Arc::new(SecretBytes(buf.into_boxed_slice()))
}

/// One `GetSecret` answer: the version's encoded message and the staleness of this call.
#[derive(Clone, Debug)]
pub struct SecretAnswer {
    pub body: Arc<SecretBytes>,
    pub staleness_seconds: u32,
}

impl crate::answer::EncodeAnswer for SecretAnswer {
    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(self.body.as_bytes());
        // proto3 leaves a zero out.
        if self.staleness_seconds != 0 {
            encode_key(STALENESS_TAG, WireType::Varint, buf);
            encode_varint(u64::from(self.staleness_seconds), buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::EncodeAnswer;

    #[test]
    fn the_answer_is_the_bytes_prost_writes() {
        let message = pb::GetSecretValueResponse {
            name: "db/main".into(),
            version: 7,
            value: b"hunter2".to_vec(),
            previous_version: 6,
            previous_value: b"hunter1".to_vec(),
            staleness_seconds: 0,
        };
        let body = encode(message.clone());
        for staleness_seconds in [0, 1, 300, u32::MAX] {
            let mut written = Vec::new();
            SecretAnswer {
                body: body.clone(),
                staleness_seconds,
            }
            .encode(&mut written);
            let expected = pb::GetSecretValueResponse {
                staleness_seconds,
                ..message.clone()
            };
            assert_eq!(written, expected.encode_to_vec());
        }
        assert!(!format!("{body:?}").contains("hunter"));
    }
}
