//! `ValidateToken.token_type` selects the verification pipeline's type: action links,
//! password-reset, email-verification and service tokens validate with their own claims
//! and lifetime bounds, no type passes as another, and an unknown type is a typed reason.

use serde_json::{Value, json};
use tessera_proto::v1 as pb;

use crate::fake_issuer::FakeIssuer;
use crate::harness::{reason, serving, validate_with};
use crate::keys::{TestKey, now_ms, rand_u64};

/// Claims of a fresh token of `token_type` living `lifetime_seconds`: an action-set shape
/// for action, reset and verification tokens, a service shape for service tokens.
fn claims_of(token_type: &str, lifetime_seconds: i64) -> Value {
    let now = now_ms();
    let mut claims = json!({
        "iss": "tessera", "sub": "alice", "aud": "tessera-api", "iat": now / 1000,
        "exp": now / 1000 + lifetime_seconds, "nbf": now / 1000,
        "jti": format!("jti-{token_type}-{}", rand_u64()), "iat_ms": now,
        "tenant_id": "acme", "token_type": token_type,
    });
    let extra = match token_type {
        "service" => json!({"scopes": ["orders:read"]}),
        _ => json!({
            "action": "approve_invoice", "resource_id": "inv-7", "user_id": "alice",
            "single_use": true, "params": {"amount": "12.50"},
            "confirmation_required": true,
        }),
    };
    for (name, value) in extra.as_object().unwrap() {
        claims[name] = value.clone();
    }
    claims
}

fn signed(key: &TestKey, token_type: &str, typ: &str, lifetime_seconds: i64) -> String {
    key.sign_with_header(
        &json!({"alg": key.alg, "kid": key.kid, "typ": typ}),
        &claims_of(token_type, lifetime_seconds),
    )
}

fn asking(token: &str, token_type: &str) -> pb::ValidateTokenRequest {
    pb::ValidateTokenRequest {
        token: token.into(),
        token_type: token_type.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_type_validates_with_its_own_claims_and_bound() {
    let access = TestKey::eddsa("ed-types-access");
    let action = TestKey::eddsa("ed-types-action");
    let issuer = FakeIssuer::start(&[&access]).await;
    issuer.upsert_key(pb::Key {
        key_set: "action".into(),
        ..action.published()
    });
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;

    // Email verification lives 24 h, well past the 15 min access bound.
    let verification = signed(&action, "verification", "verification+jwt", 86_400);
    for _ in 0..2 {
        let response = validate_with(&mut client, asking(&verification, "verification")).await;
        assert!(response.valid, "{:?}", reason(&response));
        let claims = response.claims.unwrap();
        assert_eq!(claims.token_type, "verification");
        assert_eq!(claims.subject, "alice");
        assert!(claims.session_id.is_empty() && claims.role.is_empty());
        let json: Value = serde_json::from_str(&response.claims_json).unwrap();
        assert_eq!(json["params"]["amount"], "12.50");
    }
    // A reset token is bound by its own hour, not by its key set's day.
    let long_reset = signed(&action, "reset", "reset+jwt", 7_200);
    let response = validate_with(&mut client, asking(&long_reset, "reset")).await;
    assert_eq!(reason(&response), pb::Reason::LifetimeTooLong);
    let link = signed(&action, "action", "action+jwt", 1_800);
    assert!(
        validate_with(&mut client, asking(&link, "action"))
            .await
            .valid
    );

    // A service token (signed by the access set): its scopes are its permissions.
    let service = signed(&access, "service", "service+jwt", 86_400);
    let response = validate_with(
        &mut client,
        pb::ValidateTokenRequest {
            required_permissions: vec!["orders:read".into()],
            ..asking(&service, "service")
        },
    )
    .await;
    assert!(response.valid, "{:?}", reason(&response));
    assert_eq!(response.claims.unwrap().permissions, ["orders:read"]);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_type_passes_as_another_and_an_unknown_type_is_named() {
    let access = TestKey::eddsa("ed-cross-access");
    let action = TestKey::eddsa("ed-cross-action");
    let issuer = FakeIssuer::start(&[&access]).await;
    issuer.upsert_key(pb::Key {
        key_set: "action".into(),
        ..action.published()
    });
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let link = signed(&action, "action", "action+jwt", 1_800);
    let service = signed(&access, "service", "service+jwt", 3_600);
    let by_access_key = signed(&access, "verification", "verification+jwt", 600);
    let cases = [
        (&link, "", "an action link as an access token"),
        (&link, "reset", "an action link as a reset token"),
        (&service, "", "a service token as an access token"),
        (
            &by_access_key,
            "verification",
            "a verification token from an access key",
        ),
    ];
    for (token, token_type, what) in cases {
        // Twice: the second verdict comes from the verified-token cache.
        for _ in 0..2 {
            let response = validate_with(&mut client, asking(token, token_type)).await;
            assert_eq!(reason(&response), pb::Reason::WrongTokenType, "{what}");
        }
    }
    for unknown in ["refresh", "ACCESS", "at+jwt"] {
        let response = validate_with(&mut client, asking(&link, unknown)).await;
        assert_eq!(reason(&response), pb::Reason::UnknownTokenType, "{unknown}");
        assert!(!response.valid && response.claims.is_none());
    }
    let requests =
        [(1, "refresh"), (2, "action")].map(|(request_id, token_type)| pb::ValidateStreamRequest {
            request_id,
            token: link.clone(),
            token_type: token_type.into(),
            ..Default::default()
        });
    let mut responses = sidecar.stream(requests).await;
    let mut verdicts = std::collections::BTreeMap::new();
    while let Some(response) = responses.message().await.unwrap() {
        verdicts.insert(response.request_id, response.reason());
    }
    let expected = [
        (1, pb::Reason::UnknownTokenType),
        (2, pb::Reason::Unspecified),
    ];
    assert_eq!(verdicts, expected.into_iter().collect());
    sidecar.stop().await;
}
