//! The verification pipeline at the issuer (issue 9, point 3): revocation entries live as
//! long as the longest-lived token type any key set signs (not the access bound), the
//! bundle publishes each type's bound, and introspection verifies with the keys the hub
//! parsed once per bundle revision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tessera_common::claims::TokenType;
use tessera_common::revocation::RevocationKind;
use tessera_common::{Clock, ManualClock, SystemClock};
use tessera_proto::v1 as pb;
use tessera_proto::v1::revoke_tokens_request::Target;
use tessera_proto::v1::trust_bundle_update::Kind;

use crate::harness::{TestIssuer, issue_request};

async fn revoke(issuer: &TestIssuer, target: Target) -> pb::RevokeTokensResponse {
    issuer
        .tokens()
        .await
        .revoke_tokens(issuer.as_admin(pb::RevokeTokensRequest {
            target: Some(target),
            scope_tenant_id: "acme".into(),
            reason: "verification test".into(),
        }))
        .await
        .expect("revoke")
        .into_inner()
}

fn millis(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp.seconds * 1000 + i64::from(timestamp.nanos / 1_000_000)
}

/// Waits until the hub has applied `revision`.
async fn hub_reaches(issuer: &TestIssuer, revision: u64) {
    for _ in 0..500 {
        if issuer.app.hub.revision().0 >= revision {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the hub never reached revision {revision}");
}

#[tokio::test]
async fn a_revocation_entry_outlives_the_longest_lived_token_type() {
    // An email-verification token lives 24 h; an entry that revokes its user must live
    // as long, not the 15 min 30 s of the access bound (what `drop_after` was before).
    let start = SystemClock.now();
    let clock = Arc::new(ManualClock::new(start));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone()).await;
    let revoked = revoke(&issuer, Target::UserId("alice".into())).await;
    let drop_after = millis(revoked.drop_after.as_ref().expect("drop_after"));
    let day_and_leeway = (86_400 + 30) * 1000;
    assert_eq!(drop_after - start.0, day_and_leeway);

    // Sixteen minutes on, another commit makes the hub prune: the entry is still there,
    // so a verification link issued before the revocation stays revoked.
    clock.advance(Duration::from_secs(16 * 60));
    let later = revoke(&issuer, Target::Jti("unrelated".into())).await;
    hub_reaches(&issuer, later.revision).await;
    let bundle = issuer.app.hub.current();
    let kept = bundle
        .revocations
        .entries()
        .any(|entry| entry.kind == RevocationKind::User && entry.value == "alice");
    assert!(kept, "the user entry was dropped after 16 minutes");
    issuer.stop().await;
}

#[tokio::test]
async fn the_bundle_publishes_the_longest_lifetime_of_every_token_type() {
    let issuer = TestIssuer::start().await;
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest::default()))
        .await
        .expect("watch")
        .into_inner();
    let first = stream.message().await.expect("ok").expect("snapshot");
    let Some(Kind::Snapshot(snapshot)) = first.kind else {
        panic!("first message is not a snapshot");
    };
    let policy = snapshot.policy.expect("policy");
    let published: BTreeMap<String, u32> = policy
        .token_lifetimes
        .into_iter()
        .map(|lifetime| (lifetime.token_type, lifetime.max_ttl_seconds))
        .collect();
    let expected: BTreeMap<String, u32> = [
        ("access", 900),
        ("action", 7 * 86_400),
        ("reset", 3_600),
        ("verification", 86_400),
        ("service", 86_400),
    ]
    .into_iter()
    .map(|(name, seconds)| (name.to_owned(), seconds))
    .collect();
    assert_eq!(published, expected);
    assert_eq!(policy.max_token_ttl_seconds, 900);
    issuer.stop().await;
}

#[tokio::test]
async fn introspection_uses_the_keys_the_hub_parsed_once_per_revision() {
    let issuer = TestIssuer::start().await;
    let issued = issuer
        .tokens()
        .await
        .issue_access_token(issuer.as_admin(issue_request("acme")))
        .await
        .expect("issue")
        .into_inner();
    let introspect = || async {
        issuer
            .tokens()
            .await
            .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest {
                token: issued.token.clone(),
            }))
            .await
            .expect("introspect")
            .into_inner()
    };
    let before = issuer.app.hub.verification().verifier;
    for _ in 0..3 {
        let response = introspect().await;
        assert!(response.active, "{}", response.reason);
        assert_eq!(response.token_type, TokenType::Access.as_str());
    }
    // No call built a verifier of its own: the hub's is still the one of this revision.
    assert!(Arc::ptr_eq(
        &before,
        &issuer.app.hub.verification().verifier
    ));

    // A new revision gets a new verifier that reuses the unchanged keys' parsed form.
    let revoked = revoke(&issuer, Target::Jti("someone-else".into())).await;
    hub_reaches(&issuer, revoked.revision).await;
    let after = issuer.app.hub.verification().verifier;
    assert!(!Arc::ptr_eq(&before, &after));
    let parsed = |verifier: &tessera_common::verify::Verifier| {
        verifier
            .key(&issued.kid)
            .and_then(|entry| entry.verifying_key.clone())
            .expect("the signing key is parsed")
    };
    assert!(Arc::ptr_eq(&parsed(&before), &parsed(&after)));
    assert!(introspect().await.active);
    issuer.stop().await;
}
