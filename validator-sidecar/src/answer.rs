//! The answers of `ValidatorService`, encoded straight from a verdict.
//!
//! A valid token's typed claims are protobuf-encoded once, when its signature verifies,
//! and kept with the verified token ([`EncodedClaims`]); every answer about that token
//! (every cache hit) then writes a few tags and copies two byte runs, instead of building
//! a `TokenClaims` message of fourteen fields and cloning `claims_json` per answer. The
//! bytes are exactly what prost writes for the generated messages (the tests compare them
//! with `convert::response` and `convert::stream_response` encoded by prost), so clients
//! see no difference.

use prost::bytes::BufMut;
use prost::encoding::{self, WireType, encode_key, encode_varint};
use tessera_common::UnixMillis;
use tessera_common::claims::{AnyClaims, TokenClaims};
use tessera_common::verify::Verified;

use crate::convert;
use crate::validator::Verdict;

/// A verified token's `TokenClaims` message, protobuf-encoded (the message body, without
/// its tag and length).
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedClaims(Box<[u8]>);

impl EncodedClaims {
    /// Encodes the typed claims of `verified`, field by field in tag order as prost does:
    /// the fields `convert::token_claims` fills, empty strings and false left out.
    pub fn encode(verified: &Verified<AnyClaims>) -> Self {
        let claims = &verified.claims;
        let registered = claims.registered();
        let mut buf = Vec::with_capacity(256 + verified.claims_json.len() / 2);
        put_str(1, registered.sub, &mut buf);
        put_str(2, registered.tenant_id, &mut buf);
        put_str(3, claims.role().unwrap_or_default(), &mut buf);
        put_repeated(4, claims.permissions(), &mut buf);
        put_str(5, claims.session_id().unwrap_or_default(), &mut buf);
        put_str(6, registered.jti, &mut buf);
        let expires_at = convert::timestamp(UnixMillis::from_secs(registered.exp));
        encoding::message::encode(7, &expires_at, &mut buf);
        let issued_at = convert::timestamp(UnixMillis(registered.iat_ms));
        encoding::message::encode(8, &issued_at, &mut buf);
        put_str(9, registered.iss, &mut buf);
        put_str(10, registered.aud, &mut buf);
        put_str(11, registered.token_type, &mut buf);
        if let Some(access) = claims.as_access() {
            if access.mfa_verified {
                encoding::bool::encode(12, &true, &mut buf);
            }
            put_repeated(13, &access.features, &mut buf);
        }
        put_str(14, &verified.kid, &mut buf);
        EncodedClaims(buf.into_boxed_slice())
    }

    /// Returns the encoded message body.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for EncodedClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Claims identify users: keep them out of logs.
        write!(f, "EncodedClaims({} bytes)", self.0.len())
    }
}

/// The `ValidateToken` answer: a `ValidateTokenResponse` on the wire.
#[derive(Debug)]
pub struct UnaryAnswer(pub Verdict);

/// One `ValidateStream` answer: a `ValidateStreamResponse` on the wire.
#[derive(Debug)]
pub struct StreamAnswer {
    pub request_id: u64,
    pub verdict: Verdict,
}

/// An answer that writes itself as its protobuf message.
pub trait EncodeAnswer {
    /// Appends the encoded message to `buf`.
    fn encode(&self, buf: &mut impl BufMut);
}

impl EncodeAnswer for UnaryAnswer {
    fn encode(&self, buf: &mut impl BufMut) {
        // ValidateTokenResponse: valid = 1, reason = 2, claims = 3, claims_json = 4.
        encode_verdict(&self.0, 1, buf);
    }
}

impl EncodeAnswer for StreamAnswer {
    fn encode(&self, buf: &mut impl BufMut) {
        // ValidateStreamResponse: request_id = 1, then the verdict's fields from tag 2.
        if self.request_id != 0 {
            encoding::uint64::encode(1, &self.request_id, buf);
        }
        encode_verdict(&self.verdict, 2, buf);
    }
}

/// Writes `valid`, `reason`, `claims` and `claims_json` at tags `first_tag` to
/// `first_tag + 3` (the two responses number the same four fields differently).
fn encode_verdict(verdict: &Verdict, first_tag: u32, buf: &mut impl BufMut) {
    match verdict {
        Ok(token) => {
            encoding::bool::encode(first_tag, &true, buf);
            // reason REASON_UNSPECIFIED is the default: left out.
            put_bytes(first_tag + 2, token.answer.as_bytes(), buf);
            if !token.verified.claims_json.is_empty() {
                put_bytes(first_tag + 3, token.verified.claims_json.as_bytes(), buf);
            }
        }
        Err(rejection) => {
            // valid = false, no claims, empty claims_json: all defaults, left out.
            let reason = convert::reason(*rejection) as i32;
            if reason != 0 {
                encoding::int32::encode(first_tag + 1, &reason, buf);
            }
        }
    }
}

/// Writes a length-delimited field (a string or an embedded message), even when empty.
fn put_bytes(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// Writes a singular string field, left out when empty (proto3).
fn put_str(tag: u32, text: &str, buf: &mut impl BufMut) {
    if !text.is_empty() {
        put_bytes(tag, text.as_bytes(), buf);
    }
}

/// Writes a repeated string field: every element, empty ones included.
fn put_repeated(tag: u32, items: &[String], buf: &mut impl BufMut) {
    for item in items {
        put_bytes(tag, item.as_bytes(), buf);
    }
}

#[cfg(test)]
mod tests;
