//! The Standard Webhooks wire format, as pure functions of keys, bytes and `now`: signing
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and verification with its
//! bounds. No I/O and no clock: the caller passes the time.
//!
//! Contract (https://www.standardwebhooks.com, "Symmetric"):
//! - The signed content is `{id}.{timestamp}.{payload}`; a signature is the standard
//!   base64 (padded) of HMAC-SHA256(secret, content); the header lists `v1,<signature>`
//!   entries separated by single spaces.
//! - An id is `msg_` + 1..=124 of `[A-Za-z0-9_-]`. The dot is excluded on purpose: with a
//!   dot in the id, `a.1700000000` + `1700000001` and `a` + `1700000000` (payload
//!   prefixed by `1700000001.`) would sign the same content.
//! - A timestamp is 1..=12 decimal digits (seconds). It verifies when it lies within
//!   `TOLERANCE` of `now` on either side, edges included.
//! - A header lists at most `MAX_SIGNATURE_ENTRIES` entries in at most
//!   `MAX_SIGNATURE_HEADER_BYTES`; entries of another version than `v1` are ignored.
//! - Every `v1` entry is compared with every key's tag in constant time (aws-lc-rs
//!   `hmac::verify`); the first match wins.
//! - A replay within the tolerance verifies: the standard leaves de-duplication to the
//!   receiver, by `webhook-id`.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_common::UnixMillis;
use tessera_common::ids::KeyId;

/// Largest payload signed or verified (1 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// How far a timestamp may lie from `now`, either side.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Most `webhook-signature` entries read.
pub const MAX_SIGNATURE_ENTRIES: usize = 16;
/// Longest `webhook-signature` header read.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 4096;
/// Longest `webhook-id`.
pub const MAX_ID_BYTES: usize = 128;
/// Prefix of every message id.
pub const ID_PREFIX: &str = "msg_";
/// Longest timestamp, in digits (seconds until the year 33658).
const MAX_TIMESTAMP_DIGITS: usize = 12;

/// A validated `webhook-id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookId(String);

/// Why a message id is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("webhook_id: must be `msg_` followed by 1 to 124 of A-Z a-z 0-9 _ -")]
pub struct InvalidWebhookId;

impl WebhookId {
    /// Validates `value` (see the contract above).
    pub fn new(value: impl Into<String>) -> Result<WebhookId, InvalidWebhookId> {
        let value = value.into();
        let rest = value.strip_prefix(ID_PREFIX).ok_or(InvalidWebhookId)?;
        let safe = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if rest.is_empty() || value.len() > MAX_ID_BYTES || !rest.chars().all(safe) {
            return Err(InvalidWebhookId);
        }
        Ok(WebhookId(value))
    }

    /// Returns a fresh id: `msg_` and a UUIDv7 in hex (time-ordered, 74 random bits),
    /// unique enough for receivers to de-duplicate on.
    pub fn generate() -> WebhookId {
        WebhookId(format!("{ID_PREFIX}{}", uuid::Uuid::now_v7().simple()))
    }

    /// Returns the id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key that signs or verifies webhook tags, with the id it is known by.
pub trait TagKey {
    /// Returns the key id.
    fn kid(&self) -> &KeyId;
    /// Returns the HMAC key.
    fn hmac_key(&self) -> &hmac::Key;
}

/// The three headers of a signed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    pub webhook_id: WebhookId,
    /// Seconds since the epoch.
    pub timestamp: i64,
    /// `v1,<sig>` entries, space-separated, in the order of `kids`.
    pub signature: String,
    pub kids: Vec<KeyId>,
}

/// Why a payload could not be signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("payload: larger than {MAX_PAYLOAD_BYTES} bytes")]
    PayloadTooLarge,
    #[error("no webhook key signs now")]
    NoKey,
}

/// Signs `payload` as message `webhook_id` at `now` with every key of `keys` (the first is
/// the current signer; at most `MAX_SIGNATURE_ENTRIES` are used).
pub fn sign<K: TagKey>(
    keys: &[K],
    webhook_id: WebhookId,
    payload: &[u8],
    now: UnixMillis,
) -> Result<SignedHeaders, SignError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(SignError::PayloadTooLarge);
    }
    if keys.is_empty() {
        return Err(SignError::NoKey);
    }
    let timestamp = now.0.div_euclid(1000);
    let content = signed_content(webhook_id.as_str(), &timestamp.to_string(), payload);
    let keys = &keys[..keys.len().min(MAX_SIGNATURE_ENTRIES)];
    let signature = keys
        .iter()
        .map(|key| {
            format!(
                "v1,{}",
                STANDARD.encode(hmac::sign(key.hmac_key(), &content))
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    Ok(SignedHeaders {
        webhook_id,
        timestamp,
        signature,
        kids: keys.iter().map(|key| key.kid().clone()).collect(),
    })
}

/// The headers of a received message, as sent (untrusted).
#[derive(Clone, Copy, Debug)]
pub struct ReceivedHeaders<'a> {
    pub webhook_id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The signature of key `kid` matches and the timestamp is within tolerance.
    Valid {
        kid: KeyId,
    },
    SignatureMismatch,
    TimestampTooOld,
    TimestampTooNew,
    /// A header is missing or not in the format; the detail is for logs only.
    MalformedHeaders(&'static str),
    PayloadTooLarge,
}

/// Verifies a received message against `keys` at `now`.
pub fn verify<K: TagKey>(
    keys: &[K],
    headers: ReceivedHeaders<'_>,
    payload: &[u8],
    now: UnixMillis,
) -> Verdict {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Verdict::PayloadTooLarge;
    }
    if WebhookId::new(headers.webhook_id).is_err() {
        return Verdict::MalformedHeaders("webhook-id");
    }
    let Some(timestamp) = parse_timestamp(headers.timestamp) else {
        return Verdict::MalformedHeaders("webhook-timestamp");
    };
    let tags = match parse_signatures(headers.signature) {
        Ok(tags) => tags,
        Err(detail) => return Verdict::MalformedHeaders(detail),
    };
    let now_seconds = now.0.div_euclid(1000);
    let tolerance = TOLERANCE.as_secs() as i64;
    if timestamp < now_seconds.saturating_sub(tolerance) {
        return Verdict::TimestampTooOld;
    }
    if timestamp > now_seconds.saturating_add(tolerance) {
        return Verdict::TimestampTooNew;
    }
    let content = signed_content(headers.webhook_id, headers.timestamp, payload);
    for key in keys {
        for tag in &tags {
            if hmac::verify(key.hmac_key(), &content, tag).is_ok() {
                return Verdict::Valid {
                    kid: key.kid().clone(),
                };
            }
        }
    }
    Verdict::SignatureMismatch
}

/// Returns `{id}.{timestamp}.{payload}`.
fn signed_content(webhook_id: &str, timestamp: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(webhook_id.len() + timestamp.len() + 2 + payload.len());
    content.extend_from_slice(webhook_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(payload);
    content
}

fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty()
        || text.len() > MAX_TIMESTAMP_DIGITS
        || !text.bytes().all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    text.parse().ok()
}

/// Returns the decoded tags of the `v1` entries of a `webhook-signature` header.
fn parse_signatures(header: &str) -> Result<Vec<Vec<u8>>, &'static str> {
    if header.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err("webhook-signature too long");
    }
    let entries: Vec<&str> = header
        .split(' ')
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.is_empty() {
        return Err("webhook-signature empty");
    }
    if entries.len() > MAX_SIGNATURE_ENTRIES {
        return Err("webhook-signature has too many entries");
    }
    let mut tags = Vec::new();
    for entry in entries {
        let Some((version, encoded)) = entry.split_once(',') else {
            return Err("webhook-signature entry without a version");
        };
        if version != "v1" {
            continue;
        }
        let tag = STANDARD
            .decode(encoded)
            .map_err(|_| "webhook-signature entry is not base64")?;
        tags.push(tag);
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestKey {
        kid: KeyId,
        key: hmac::Key,
    }

    impl TagKey for TestKey {
        fn kid(&self) -> &KeyId {
            &self.kid
        }
        fn hmac_key(&self) -> &hmac::Key {
            &self.key
        }
    }

    fn key(kid: &str, secret: &[u8]) -> TestKey {
        TestKey {
            kid: KeyId::new(kid).unwrap(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    const NOW: UnixMillis = UnixMillis(1_700_000_000_500);

    fn headers(signed: &SignedHeaders) -> (String, String) {
        (signed.timestamp.to_string(), signed.signature.clone())
    }

    fn received<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> ReceivedHeaders<'a> {
        ReceivedHeaders {
            webhook_id: id,
            timestamp,
            signature,
        }
    }

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // The vector of the Standard Webhooks libraries' own tests: secret
        // `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`,
        // timestamp 1614265330, payload `{"test": 2432232314}`.
        let secret = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let keys = [key("k1", &secret)];
        let signed = sign(
            &keys,
            WebhookId::new("msg_p5jXN8AQM9LWM0D4loKWxJek").unwrap(),
            br#"{"test": 2432232314}"#,
            UnixMillis(1_614_265_330_000),
        )
        .unwrap();
        assert_eq!(
            signed.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(signed.timestamp, 1_614_265_330);
        assert_eq!(
            verify(
                &keys,
                received(
                    "msg_p5jXN8AQM9LWM0D4loKWxJek",
                    "1614265330",
                    &signed.signature
                ),
                br#"{"test": 2432232314}"#,
                UnixMillis(1_614_265_330_000),
            ),
            Verdict::Valid {
                kid: KeyId::new("k1").unwrap()
            }
        );
    }

    #[test]
    fn both_keys_sign_during_an_overlap_and_either_secret_verifies() {
        let successor = key("new", &[1; 32]);
        let predecessor = key("old", &[2; 32]);
        let keys = [successor, predecessor];
        let id = WebhookId::new("msg_overlap").unwrap();
        let signed = sign(&keys, id, b"payload", NOW).unwrap();
        let entries: Vec<&str> = signed.signature.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|entry| entry.starts_with("v1,")));
        assert_eq!(
            signed.kids,
            vec![KeyId::new("new").unwrap(), KeyId::new("old").unwrap()]
        );
        let (timestamp, signature) = headers(&signed);
        // A receiver that only knows one secret verifies with it.
        for (index, only) in [key("new", &[1; 32]), key("old", &[2; 32])]
            .into_iter()
            .enumerate()
        {
            let kid = only.kid.clone();
            assert_eq!(
                verify(
                    &[only],
                    received("msg_overlap", &timestamp, &signature),
                    b"payload",
                    NOW
                ),
                Verdict::Valid { kid },
                "secret {index}"
            );
            // And each single entry alone verifies with its own secret.
            assert!(entries[index].len() > 3);
        }
        // After the overlap the signer list holds only the successor: one entry, which
        // the predecessor's secret does not verify.
        let after = sign(&keys[..1], WebhookId::new("msg_after").unwrap(), b"p", NOW).unwrap();
        assert_eq!(after.signature.split(' ').count(), 1);
        assert_eq!(
            verify(
                &[key("old", &[2; 32])],
                received("msg_after", &after.timestamp.to_string(), &after.signature),
                b"p",
                NOW
            ),
            Verdict::SignatureMismatch
        );
    }

    #[test]
    fn tolerance_edges_are_five_minutes_either_side_inclusive() {
        let keys = [key("k", &[3; 32])];
        let id = WebhookId::new("msg_edges").unwrap();
        let check = |sent_at: UnixMillis, received_at: UnixMillis| {
            let signed = sign(&keys, id.clone(), b"x", sent_at).unwrap();
            verify(
                &keys,
                received(
                    "msg_edges",
                    &signed.timestamp.to_string(),
                    &signed.signature,
                ),
                b"x",
                received_at,
            )
        };
        let sent = UnixMillis(1_700_000_000_000);
        let valid = Verdict::Valid {
            kid: KeyId::new("k").unwrap(),
        };
        assert_eq!(check(sent, sent.plus(TOLERANCE)), valid);
        assert_eq!(
            check(sent, sent.plus(TOLERANCE + Duration::from_secs(1))),
            Verdict::TimestampTooOld
        );
        assert_eq!(check(sent, sent.minus(TOLERANCE)), valid);
        assert_eq!(
            check(sent, sent.minus(TOLERANCE + Duration::from_secs(1))),
            Verdict::TimestampTooNew
        );
        // A replay within the tolerance verifies again (the standard's behaviour).
        assert_eq!(check(sent, sent.plus(Duration::from_secs(60))), valid);
    }

    #[test]
    fn any_change_to_payload_id_timestamp_or_signature_is_refused() {
        let keys = [key("k", &[4; 32])];
        let signed = sign(&keys, WebhookId::new("msg_a").unwrap(), b"body", NOW).unwrap();
        let (timestamp, signature) = headers(&signed);
        let later = (signed.timestamp + 1).to_string();
        assert_eq!(
            verify(
                &keys,
                received("msg_a", &timestamp, &signature),
                b"bodY",
                NOW
            ),
            Verdict::SignatureMismatch
        );
        assert_eq!(
            verify(
                &keys,
                received("msg_b", &timestamp, &signature),
                b"body",
                NOW
            ),
            Verdict::SignatureMismatch
        );
        assert_eq!(
            verify(&keys, received("msg_a", &later, &signature), b"body", NOW),
            Verdict::SignatureMismatch
        );
        let forged = format!("v1,{}", STANDARD.encode([0u8; 32]));
        assert_eq!(
            verify(&keys, received("msg_a", &timestamp, &forged), b"body", NOW),
            Verdict::SignatureMismatch
        );
        // Another key's signature does not verify.
        assert_eq!(
            verify(
                &[key("other", &[5; 32])],
                received("msg_a", &timestamp, &signature),
                b"body",
                NOW
            ),
            Verdict::SignatureMismatch
        );
        // Unknown versions are ignored, but a v1 entry among them still counts.
        let mixed = format!("v2,AAAA {signature} v1a,zz");
        assert!(matches!(
            verify(&keys, received("msg_a", &timestamp, &mixed), b"body", NOW),
            Verdict::Valid { .. }
        ));
        assert_eq!(
            verify(
                &keys,
                received("msg_a", &timestamp, "v2,AAAA"),
                b"body",
                NOW
            ),
            Verdict::SignatureMismatch
        );
    }

    #[test]
    fn malformed_headers_are_refused_before_any_mac() {
        let keys = [key("k", &[6; 32])];
        let signed = sign(&keys, WebhookId::new("msg_m").unwrap(), b"b", NOW).unwrap();
        let (timestamp, signature) = headers(&signed);
        let malformed = |id: &str, ts: &str, sig: &str| {
            matches!(
                verify(&keys, received(id, ts, sig), b"b", NOW),
                Verdict::MalformedHeaders(_)
            )
        };
        for id in [
            "",
            "msg_",
            "m_abc",
            "msg_a.b",
            "msg_a b",
            &format!("msg_{}", "a".repeat(125)),
        ] {
            assert!(malformed(id, &timestamp, &signature), "id {id:?}");
        }
        for ts in [
            "",
            "-1",
            "+1700000000",
            "1700000000.5",
            " 1700000000",
            "1234567890123",
        ] {
            assert!(malformed("msg_m", ts, &signature), "timestamp {ts:?}");
        }
        for sig in ["", "   ", "v1", "v1,not base64!", &"v2,AA ".repeat(800)] {
            assert!(malformed("msg_m", &timestamp, sig), "signature {sig:?}");
        }
    }

    #[test]
    fn too_many_signatures_are_refused_even_with_a_valid_one() {
        let keys = [key("k", &[7; 32])];
        let signed = sign(&keys, WebhookId::new("msg_n").unwrap(), b"b", NOW).unwrap();
        let (timestamp, signature) = headers(&signed);
        let filler = format!("v1,{}", STANDARD.encode([9u8; 32]));
        let at_limit = [
            vec![filler.as_str(); MAX_SIGNATURE_ENTRIES - 1],
            vec![signature.as_str()],
        ]
        .concat()
        .join(" ");
        assert!(matches!(
            verify(&keys, received("msg_n", &timestamp, &at_limit), b"b", NOW),
            Verdict::Valid { .. }
        ));
        let over = format!("{filler} {at_limit}");
        assert_eq!(
            verify(&keys, received("msg_n", &timestamp, &over), b"b", NOW),
            Verdict::MalformedHeaders("webhook-signature has too many entries")
        );
    }

    #[test]
    fn oversized_payloads_are_refused_by_sign_and_verify() {
        let keys = [key("k", &[8; 32])];
        let at_limit = vec![b'a'; MAX_PAYLOAD_BYTES];
        let signed = sign(&keys, WebhookId::new("msg_big").unwrap(), &at_limit, NOW).unwrap();
        let (timestamp, signature) = headers(&signed);
        assert!(matches!(
            verify(
                &keys,
                received("msg_big", &timestamp, &signature),
                &at_limit,
                NOW
            ),
            Verdict::Valid { .. }
        ));
        let over = vec![b'a'; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            sign(&keys, WebhookId::new("msg_big").unwrap(), &over, NOW),
            Err(SignError::PayloadTooLarge)
        );
        assert_eq!(
            verify(
                &keys,
                received("msg_big", &timestamp, &signature),
                &over,
                NOW
            ),
            Verdict::PayloadTooLarge
        );
        let none: [TestKey; 0] = [];
        assert_eq!(
            sign(&none, WebhookId::new("msg_x").unwrap(), b"", NOW),
            Err(SignError::NoKey)
        );
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let first = WebhookId::generate();
        let second = WebhookId::generate();
        assert_ne!(first, second);
        assert_eq!(WebhookId::new(first.as_str()), Ok(first));
    }
}
