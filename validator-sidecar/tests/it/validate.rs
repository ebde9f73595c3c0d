//! ValidateToken over the socket: valid tokens of every algorithm and every rejection
//! reason, in DESIGN §7's order.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tessera_proto::v1 as pb;

use crate::fake_issuer::FakeIssuer;
use crate::harness::{Sidecar, reason, serving, validate, validate_with, wait_serving};
use crate::keys::{TestKey, claims, now_ms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_every_algorithm_return_typed_claims_and_json() {
    let rsa = TestKey::rs256("rsa-1");
    let ec = TestKey::es256("ec-1");
    let ed = TestKey::eddsa("ed-1");
    let issuer = FakeIssuer::start(&[&rsa, &ec, &ed]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    for key in [&rsa, &ec, &ed] {
        let claims = claims("alice");
        let token = key.sign(&claims);
        // Twice: the second answer comes from the verified-token cache.
        for _ in 0..2 {
            let response = validate(&mut client, &token).await;
            assert!(response.valid, "{}: {:?}", key.alg, reason(&response));
            assert_eq!(reason(&response), pb::Reason::Unspecified);
            let typed = response.claims.unwrap();
            assert_eq!(typed.subject, "alice");
            assert_eq!(typed.tenant_id, "acme");
            assert_eq!(typed.role, "manager");
            assert_eq!(typed.permissions, vec!["orders:read", "orders:write"]);
            assert_eq!(typed.session_id, "session-alice");
            assert_eq!(typed.jti, claims["jti"].as_str().unwrap());
            assert_eq!(typed.kid, key.kid);
            assert_eq!(typed.issuer, "tessera");
            assert_eq!(typed.audience, "tessera-api");
            assert_eq!(typed.token_type, "access");
            assert!(typed.mfa_verified);
            assert_eq!(typed.features, vec!["beta"]);
            assert_eq!(
                typed.expires_at.unwrap().seconds,
                claims["exp"].as_i64().unwrap()
            );
            let issued_at = typed.issued_at.unwrap();
            let issued_ms = issued_at.seconds * 1000 + i64::from(issued_at.nanos / 1_000_000);
            assert_eq!(issued_ms, claims["iat_ms"].as_i64().unwrap());
            let json: serde_json::Value = serde_json::from_str(&response.claims_json).unwrap();
            assert_eq!(json, claims);
        }
    }
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_check_has_its_reason() {
    let rsa = TestKey::rs256("rsa-reasons");
    let ec = TestKey::es256("ec-reasons");
    let issuer = FakeIssuer::start(&[&rsa, &ec]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let now_s = now_ms() / 1000;

    // Tampered signature: one flipped bit in the last signature character.
    let token = ec.sign(&claims("bob"));
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        reason(&validate(&mut client, &tampered).await),
        pb::Reason::BadSignature
    );
    // Tampered payload, signature kept.
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged_claims = claims("bob");
    forged_claims["role"] = json!("owner");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged_claims.to_string()),
        parts[2]
    );
    assert_eq!(
        reason(&validate(&mut client, &forged).await),
        pb::Reason::BadSignature
    );

    // Expired beyond the 30 s leeway; within the leeway still valid.
    let mut expired = claims("bob");
    expired["exp"] = json!(now_s - 31);
    assert_eq!(
        reason(&validate(&mut client, &rsa.sign(&expired)).await),
        pb::Reason::Expired
    );
    let mut within_leeway = claims("bob");
    within_leeway["exp"] = json!(now_s - 5);
    assert!(validate(&mut client, &rsa.sign(&within_leeway)).await.valid);
    let mut early = claims("bob");
    early["nbf"] = json!(now_s + 120);
    assert_eq!(
        reason(&validate(&mut client, &ec.sign(&early)).await),
        pb::Reason::NotYetValid
    );

    // Issuer and audience.
    let mut foreign = claims("bob");
    foreign["iss"] = json!("someone-else");
    assert_eq!(
        reason(&validate(&mut client, &ec.sign(&foreign)).await),
        pb::Reason::WrongIssuer
    );
    let mut other_audience = claims("bob");
    other_audience["aud"] = json!("payments");
    assert_eq!(
        reason(&validate(&mut client, &ec.sign(&other_audience)).await),
        pb::Reason::WrongAudience
    );
    let good = ec.sign(&claims("bob"));
    let for_billing = validate_with(
        &mut client,
        pb::ValidateTokenRequest {
            token: good.clone(),
            audience: "billing".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(reason(&for_billing), pb::Reason::WrongAudience);

    // Token type: a refresh-typed token, and an access token without `typ: at+jwt`.
    let mut refresh = claims("bob");
    refresh["token_type"] = json!("refresh");
    assert_eq!(
        reason(&validate(&mut client, &ec.sign(&refresh)).await),
        pb::Reason::WrongTokenType
    );
    let untyped = ec.sign_with_header(&json!({"alg": "ES256", "kid": ec.kid}), &claims("bob"));
    assert_eq!(
        reason(&validate(&mut client, &untyped).await),
        pb::Reason::WrongTokenType
    );

    // Algorithm pinned by the key: `none`, and HS256 keyed with the RSA key's modulus.
    let header_none =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": rsa.kid, "typ": "at+jwt"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims("bob").to_string());
    let alg_none = format!("{header_none}.{payload}.");
    assert_eq!(
        reason(&validate(&mut client, &alg_none).await),
        pb::Reason::AlgorithmMismatch
    );
    let header_hs = URL_SAFE_NO_PAD
        .encode(json!({"alg": "HS256", "kid": rsa.kid, "typ": "at+jwt"}).to_string());
    let signing_input = format!("{header_hs}.{payload}");
    let hmac_key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        rsa.jwk["n"].as_str().unwrap().as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&hmac_key, signing_input.as_bytes());
    let alg_swapped = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_eq!(
        reason(&validate(&mut client, &alg_swapped).await),
        pb::Reason::AlgorithmMismatch
    );
    // An ES256 header on the RSA kid.
    let cross = rsa.sign_with_header(
        &json!({"alg": "ES256", "kid": rsa.kid, "typ": "at+jwt"}),
        &claims("bob"),
    );
    assert_eq!(
        reason(&validate(&mut client, &cross).await),
        pb::Reason::AlgorithmMismatch
    );

    // Size and shape.
    let oversize = format!("{}.{}", good, "A".repeat(9 * 1024));
    assert_eq!(
        reason(&validate(&mut client, &oversize).await),
        pb::Reason::TooLarge
    );
    for garbage in [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "e30.e30.e30",
    ] {
        assert_eq!(
            reason(&validate(&mut client, garbage).await),
            pb::Reason::Malformed,
            "{garbage}"
        );
    }
    let no_kid = ec.sign_with_header(&json!({"alg": "ES256", "typ": "at+jwt"}), &claims("bob"));
    assert_eq!(
        reason(&validate(&mut client, &no_kid).await),
        pb::Reason::Malformed
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_and_role_are_enforced() {
    let ed = TestKey::eddsa("ed-authz");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let token = ed.sign(&claims("carol"));
    let ask = |permissions: &[&str], role: &str| pb::ValidateTokenRequest {
        token: token.clone(),
        required_permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        required_role: role.into(),
        ..Default::default()
    };
    assert!(
        validate_with(&mut client, ask(&["orders:read"], "manager"))
            .await
            .valid
    );
    assert!(
        validate_with(&mut client, ask(&["orders:read", "orders:write"], ""))
            .await
            .valid
    );
    let missing = validate_with(&mut client, ask(&["orders:read", "orders:delete"], "")).await;
    assert_eq!(reason(&missing), pb::Reason::InsufficientPermissions);
    assert!(missing.claims.is_none() && missing.claims_json.is_empty());
    assert_eq!(
        reason(&validate_with(&mut client, ask(&[], "owner")).await),
        pb::Reason::WrongRole
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_audiences_narrow_the_bundle() {
    let ed = TestKey::eddsa("ed-aud");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), &["--audience", "billing"]).await;
    wait_serving(&sidecar).await;
    let mut client = sidecar.client().await;
    let mut for_billing = claims("dave");
    for_billing["aud"] = json!("billing");
    assert!(validate(&mut client, &ed.sign(&for_billing)).await.valid);
    // Accepted by the issuer's policy, but not by this sidecar.
    let for_api = ed.sign(&claims("dave"));
    assert_eq!(
        reason(&validate(&mut client, &for_api).await),
        pb::Reason::WrongAudience
    );
    sidecar.stop().await;
}
