//! The hand-written answers are byte for byte what prost writes for the generated
//! responses built by `convert`.

use std::sync::Arc;

use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use prost::Message;
use serde_json::{Value, json};
use tessera_common::claims::{JwsHeader, TokenType};
use tessera_common::jwk::Jwk;
use tessera_common::keys::{Algorithm, KeySchedule, KeySetName};
use tessera_common::verify::{Rejection, VerifyingKey};
use tessera_proto::v1 as pb;

use super::*;
use crate::cache::VerifiedToken;

fn verifying_key() -> Arc<VerifyingKey> {
    let key_pair = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key_pair.public_key().as_ref());
    let schedule = KeySchedule {
        kid: tessera_common::ids::KeyId::new("k1").unwrap(),
        key_set: KeySetName::Access,
        algorithm: Algorithm::EdDsa,
        created_at: UnixMillis(0),
        activates_at: UnixMillis(0),
        deactivates_at: None,
        verify_until: None,
        revoked_at: None,
        public_jwk: Jwk {
            kty: "OKP".into(),
            kid: "k1".into(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
            n: None,
            e: None,
            crv: Some("Ed25519".into()),
            x: Some(x),
            y: None,
        },
    };
    Arc::new(VerifyingKey::from_schedule(&schedule).unwrap())
}

/// A verified token of `token_type` with `claims` (decoded as the pipeline does).
fn token(token_type: TokenType, kid: &str, claims: &Value) -> Arc<VerifiedToken> {
    let claims_json = claims.to_string();
    let verified = Verified {
        kid: kid.into(),
        header: JwsHeader {
            alg: "EdDSA".into(),
            kid: Some(kid.into()),
            typ: Some(token_type.jws_typ().into()),
        },
        token_type,
        claims: AnyClaims::decode(claims_json.as_bytes(), token_type).unwrap(),
        claims_json,
        verifying_key: verifying_key(),
    };
    Arc::new(VerifiedToken::new("h.p.s", verified))
}

fn common(token_type: &str) -> Value {
    json!({
        "iss": "tessera", "sub": "u1", "aud": "tessera-api", "iat": 1_700_000_000,
        "exp": 1_700_000_900, "nbf": 1_700_000_000, "jti": "j1",
        "iat_ms": 1_700_000_000_123_i64, "tenant_id": "acme", "token_type": token_type,
    })
}

fn verdicts() -> Vec<Verdict> {
    let mut access = common("access");
    access["role"] = json!("manager");
    access["permissions"] = json!(["orders:read", "", "orders:write"]);
    access["session_id"] = json!("s1");
    access["mfa_verified"] = json!(true);
    access["features"] = json!(["beta", "gamma"]);
    access["family_id"] = json!("f1");
    // Empty strings and lists, false, a pre-epoch expiry: every default left out.
    let mut bare = common("access");
    bare["sub"] = json!("");
    bare["role"] = json!("");
    bare["session_id"] = json!("");
    bare["exp"] = json!(-5);
    bare["iat_ms"] = json!(0);
    let mut action = common("reset");
    action["action"] = json!("reset_password");
    action["resource_id"] = json!("u1");
    action["user_id"] = json!("u1");
    action["single_use"] = json!(true);
    let mut service = common("service");
    service["scopes"] = json!(["billing:read"]);
    // A large claims object: lengths past one varint byte.
    let mut large = access.clone();
    large["permissions"] = json!((0..200).map(|i| format!("perm:{i}")).collect::<Vec<_>>());
    let mut verdicts = vec![
        Ok(token(TokenType::Access, "k1", &access)),
        Ok(token(TokenType::Access, "", &bare)),
        Ok(token(TokenType::Reset, "k-action", &action)),
        Ok(token(TokenType::Service, "k1", &service)),
        Ok(token(TokenType::Access, "k1", &large)),
    ];
    let rejections = [
        Rejection::Malformed,
        Rejection::TooLarge,
        Rejection::UnknownKid,
        Rejection::BadSignature,
        Rejection::Revoked,
        Rejection::BundleStale,
        Rejection::UnknownTokenType,
    ];
    verdicts.extend(rejections.into_iter().map(Err));
    verdicts
}

#[test]
fn unary_answers_are_the_bytes_prost_writes_for_the_generated_response() {
    for verdict in verdicts() {
        let mut ours = Vec::new();
        UnaryAnswer(verdict.clone()).encode(&mut ours);
        let reference = convert::response(&verdict);
        assert_eq!(ours, reference.encode_to_vec(), "{verdict:?}");
        assert_eq!(
            pb::ValidateTokenResponse::decode(ours.as_slice()).unwrap(),
            reference
        );
    }
}

#[test]
fn stream_answers_are_the_bytes_prost_writes_for_the_generated_response() {
    for verdict in verdicts() {
        for request_id in [0, 1, 300, u64::MAX] {
            let answer = StreamAnswer {
                request_id,
                verdict: verdict.clone(),
            };
            let mut ours = Vec::new();
            answer.encode(&mut ours);
            let reference = convert::stream_response(request_id, &verdict);
            assert_eq!(ours, reference.encode_to_vec(), "{request_id} {verdict:?}");
        }
    }
}

#[test]
fn encoded_claims_keep_claims_out_of_debug() {
    let Ok(token) = &verdicts()[0] else {
        unreachable!()
    };
    let shown = format!("{:?} {:?}", token.answer, token);
    assert!(
        !shown.contains("u1") && !shown.contains("manager"),
        "{shown}"
    );
}
