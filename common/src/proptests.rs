//! Property tests of the parsers that see untrusted bytes and of the one hand-written
//! encoder: the compact JWS parser (`verify::parse_compact`), the opaque credential parser
//! (`credential::Credential::parse`) and the PKCS#1 DER encoder of RSA public keys
//! (`verify::key::rsa_public_key_der`). Each holds for any input proptest can make, not
//! only for the examples the unit tests pick.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;

use crate::claims::JwsHeader;
use crate::credential::{
    CHECKSUM_CHARS, Credential, CredentialError, CredentialKind, MAX_CREDENTIAL_BYTES,
};
use crate::verify::key::rsa_public_key_der;
use crate::verify::{Rejection, parse_compact};

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn credential_kind() -> impl Strategy<Value = CredentialKind> {
    proptest::sample::select(CredentialKind::ALL.to_vec())
}

/// A credential of any kind with an id of 1 to 32 base62 characters and a secret of the
/// kind's length.
fn credential() -> impl Strategy<Value = Credential> {
    credential_kind().prop_flat_map(|kind| {
        let secret =
            proptest::string::string_regex(&format!("[0-9A-Za-z]{{{}}}", kind.secret_chars()))
                .expect("a valid regex");
        ("[0-9A-Za-z]{1,32}", secret)
            .prop_map(move |(id, secret)| Credential::from_parts(kind, id, secret))
    })
}

// === the compact JWS parser ===

proptest! {
    #[test]
    fn jws_parser_never_panics_on_any_string(text in any::<String>()) {
        let _ = parse_compact(&text);
    }

    #[test]
    fn jws_parser_never_panics_on_jws_shaped_text(text in "[A-Za-z0-9_=.+/-]{0,300}") {
        let _ = parse_compact(&text);
    }

    #[test]
    fn jws_parser_round_trips_a_well_formed_token(
        alg in "[A-Za-z0-9]{1,10}",
        kid in proptest::option::of(any::<String>()),
        typ in proptest::option::of("[a-z+]{1,12}"),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        signature in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let header = JwsHeader { alg, kid, typ };
        let header_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        let payload_b64 = URL_SAFE_NO_PAD.encode(&payload);
        let signing_input = format!("{header_b64}.{payload_b64}");
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&signature));

        let parsed = parse_compact(&token).unwrap();
        prop_assert_eq!(parsed.header.alg, header.alg);
        prop_assert_eq!(parsed.header.kid, header.kid);
        prop_assert_eq!(parsed.header.typ, header.typ);
        prop_assert_eq!(parsed.signing_input, signing_input.as_str());
        prop_assert_eq!(parsed.payload_b64, payload_b64.as_str());
        prop_assert_eq!(parsed.signature, signature);
    }

    #[test]
    fn jws_parser_refuses_a_token_with_a_part_too_many_or_too_few(
        parts in proptest::collection::vec("[A-Za-z0-9_-]{0,20}", 0..6),
    ) {
        prop_assume!(parts.len() != 3);
        prop_assert_eq!(parse_compact(&parts.join(".")).unwrap_err(), Rejection::Malformed);
    }
}

// === the credential parser ===

proptest! {
    #[test]
    fn credential_parser_never_panics_on_any_string(text in any::<String>()) {
        let _ = Credential::parse(&text);
    }

    #[test]
    fn credential_parser_never_panics_on_credential_shaped_text(
        text in "tb[a-z]_[0-9A-Za-z_]{0,120}",
    ) {
        let _ = Credential::parse(&text);
    }

    #[test]
    fn credential_expose_then_parse_round_trips(credential in credential()) {
        let text = credential.expose();
        prop_assert!(text.len() <= MAX_CREDENTIAL_BYTES);
        let parsed = Credential::parse(&text).unwrap();
        prop_assert_eq!(parsed.kind, credential.kind);
        prop_assert_eq!(parsed.id, credential.id);
        prop_assert_eq!(parsed.secret.expose(), credential.secret.expose());
    }

    /// CRC32 detects every error within one byte, so changing any base62 character of
    /// the id, the secret or the checksum to another is caught.
    #[test]
    fn a_flipped_character_fails_the_checksum(
        credential in credential(),
        position in any::<proptest::sample::Index>(),
        replacement in proptest::sample::select(BASE62.as_bytes().to_vec()),
    ) {
        let text = credential.expose();
        let body_start = credential.kind.prefix().len();
        let separator = body_start + credential.id.len();
        // Any base62 position past the prefix: the id, the secret or the checksum.
        let candidates: Vec<usize> = (body_start..text.len())
            .filter(|&index| index != separator)
            .collect();
        let index = candidates[position.index(candidates.len())];
        let mut bytes = text.clone().into_bytes();
        prop_assume!(bytes[index] != replacement);
        bytes[index] = replacement;
        let flipped = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(Credential::parse(&flipped).unwrap_err(), CredentialError::BadChecksum);
    }
}

#[test]
fn generated_credentials_of_every_kind_round_trip() {
    for kind in CredentialKind::ALL {
        let credential = Credential::generate(kind);
        let text = credential.expose();
        assert_eq!(
            text.len() - text.rfind('_').unwrap() - 1,
            kind.secret_chars() + CHECKSUM_CHARS
        );
        let parsed = Credential::parse(&text).unwrap();
        assert_eq!((parsed.kind, &parsed.id), (kind, &credential.id));
        assert_eq!(parsed.secret.expose(), credential.secret.expose());
    }
}

// === the DER encoder ===

/// Reads one DER TLV (definite, minimal length); returns the tag, the content and what
/// follows. `None` for anything a strict DER reader refuses.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let n_bytes = usize::from(first & 0x7f);
        if n_bytes == 0 || n_bytes > 4 || rest.len() < n_bytes || rest[0] == 0 {
            return None;
        }
        let (length_bytes, after) = rest.split_at(n_bytes);
        rest = after;
        let length = length_bytes
            .iter()
            .fold(0usize, |length, &byte| length << 8 | usize::from(byte));
        // Minimal: a length under 128 must use the short form.
        if length < 0x80 {
            return None;
        }
        length
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// Returns the magnitude of a DER INTEGER's content (big-endian, no leading zero), or
/// `None` when the content is empty, negative or not minimal.
fn non_negative_integer(content: &[u8]) -> Option<&[u8]> {
    match content {
        [] => None,
        [first, ..] if first & 0x80 != 0 => None,
        [0, next, ..] if next & 0x80 == 0 => None,
        [0, rest @ ..] => Some(rest),
        _ => Some(content),
    }
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&byte| byte != 0)
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Parses an RSAPublicKey: SEQUENCE { INTEGER modulus, INTEGER exponent }, nothing after.
fn parse_rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, body, []) = read_tlv(der)? else {
        return None;
    };
    let (0x02, modulus, rest) = read_tlv(body)? else {
        return None;
    };
    let (0x02, exponent, []) = read_tlv(rest)? else {
        return None;
    };
    Some((
        non_negative_integer(modulus)?,
        non_negative_integer(exponent)?,
    ))
}

proptest! {
    #[test]
    fn rsa_public_key_der_parses_back_to_the_same_integers(
        modulus in proptest::collection::vec(any::<u8>(), 0..1100),
        exponent in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let der = rsa_public_key_der(&modulus, &exponent);
        let (parsed_modulus, parsed_exponent) = parse_rsa_public_key(&der)
            .ok_or_else(|| TestCaseError::fail(format!("not strict DER: {der:02x?}")))?;
        prop_assert_eq!(without_leading_zeros(parsed_modulus), without_leading_zeros(&modulus));
        prop_assert_eq!(without_leading_zeros(parsed_exponent), without_leading_zeros(&exponent));
    }
}
