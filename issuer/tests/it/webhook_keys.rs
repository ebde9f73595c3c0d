//! The `webhook` key set (HMAC-SHA256): created and rotated like the JWS sets, listed by
//! ListKeys (metadata only), never in the JWKS or the trust-bundle stream, and its
//! material wrapped in the store under the KEK, unwrapping to a key that MACs.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::SystemClock;
use tessera_common::ids::KeyId;
use tessera_common::keys::{Algorithm, KeySetName};
use tessera_issuer::config::IssuerConfig;
use tessera_issuer::kek::Kek;
use tessera_issuer::keys::mac::MacKey;
use tessera_proto::v1 as pb;
use tessera_proto::v1::trust_bundle_update::Kind;

use crate::harness::TestIssuer;

async fn list(issuer: &TestIssuer, key_set: &str) -> Vec<pb::Key> {
    issuer
        .keys()
        .await
        .list_keys(issuer.as_admin(pb::ListKeysRequest {
            key_set: key_set.into(),
            include_unpublished: true,
        }))
        .await
        .expect("list keys")
        .into_inner()
        .keys
}

async fn rotate(issuer: &TestIssuer, key_set: &str, emergency: bool) -> pb::RotateKeysResponse {
    issuer
        .keys()
        .await
        .rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
            key_set: key_set.into(),
            reason: "test".into(),
            emergency,
            ..Default::default()
        }))
        .await
        .expect("rotate")
        .into_inner()
}

async fn jwks_json(issuer: &TestIssuer) -> String {
    issuer
        .keys()
        .await
        .get_jwks(issuer.as_admin(pb::GetJwksRequest {}))
        .await
        .expect("jwks")
        .into_inner()
        .jwks_json
}

async fn next_update(
    stream: &mut tonic::Streaming<pb::TrustBundleUpdate>,
) -> pb::TrustBundleUpdate {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("update within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

/// Returns every kid a bundle update names.
fn kids_in(update: &pb::TrustBundleUpdate) -> Vec<String> {
    match &update.kind {
        Some(Kind::Snapshot(snapshot)) => snapshot.keys.iter().map(|key| key.kid.clone()).collect(),
        Some(Kind::Delta(delta)) => delta
            .changes
            .iter()
            .filter_map(|change| match &change.change {
                Some(pb::bundle_change::Change::KeyUpserted(key))
                | Some(pb::bundle_change::Change::KeyRevoked(key)) => Some(key.kid.clone()),
                Some(pb::bundle_change::Change::KeyUnpublished(kid)) => Some(kid.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn webhook_key_is_created_rotated_listed_and_never_published() {
    let issuer = TestIssuer::start().await;
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest {
            since_revision: 0,
            subscriber_id: "webhook-test".into(),
            credential_changes: false,
            secret_changes: false,
        }))
        .await
        .expect("watch")
        .into_inner();
    let snapshot = next_update(&mut stream).await;

    // Bootstrapped with the others, listed with metadata only.
    let keys = list(&issuer, "webhook").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let first = &keys[0];
    assert_eq!(first.algorithm, "HS256");
    assert_eq!(first.key_set, "webhook");
    assert_eq!(first.state, pb::KeyState::Active as i32);
    let jwk: serde_json::Value = serde_json::from_str(&first.public_jwk_json).expect("jwk");
    assert_eq!(jwk["kty"], "oct");
    assert!(jwk.get("k").is_none(), "no secret in the listing: {jwk}");
    assert!(
        !kids_in(&snapshot).contains(&first.kid),
        "not in the snapshot"
    );

    let rotated = rotate(&issuer, "webhook", false).await;
    assert_eq!(rotated.previous_kid, first.kid);
    let keys = list(&issuer, "webhook").await;
    let states: Vec<(String, i32)> = keys
        .iter()
        .map(|key| (key.kid.clone(), key.state))
        .collect();
    assert!(
        states.contains(&(rotated.new_kid.clone(), pb::KeyState::Active as i32)),
        "{states:?}"
    );
    assert!(
        states.contains(&(first.kid.clone(), pb::KeyState::Retiring as i32)),
        "{states:?}"
    );

    // Neither key in the JWKS.
    let jwks = jwks_json(&issuer).await;
    for kid in [&first.kid, &rotated.new_kid] {
        assert!(!jwks.contains(kid.as_str()), "{kid} in {jwks}");
    }
    assert!(
        !jwks.contains("HS256") && !jwks.contains("\"oct\""),
        "{jwks}"
    );

    // An access rotation follows on the stream; nothing of the webhook set came before
    // or with it (filtered at the source: the webhook commit appended no event).
    let access = rotate(&issuer, "access", false).await;
    let mut seen = Vec::new();
    while !seen.contains(&access.new_kid) {
        let update = next_update(&mut stream).await;
        seen.extend(kids_in(&update));
    }
    for kid in [&first.kid, &rotated.new_kid] {
        assert!(!seen.contains(kid), "{kid} reached the stream: {seen:?}");
    }
    let bundle = issuer.app.hub.current();
    assert!(
        bundle
            .keys
            .values()
            .all(|key| key.key_set != KeySetName::Webhook),
        "the hub holds no webhook key"
    );
    issuer.stop().await;
}

#[tokio::test]
async fn webhook_material_is_wrapped_in_the_store_and_unwraps_to_a_key_that_macs() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let kek_path = data_dir.path().join("kek");
    let config = IssuerConfig::development(data_dir.path());
    let issuer = TestIssuer::start_in(config, data_dir, Arc::new(SystemClock)).await;
    let now = issuer.app.now();

    let stored = issuer
        .app
        .store
        .key_set(KeySetName::Webhook)
        .await
        .expect("key set");
    let key = stored.keys.first().expect("a webhook key");
    let wrapped = key
        .wrapped_private
        .as_ref()
        .expect("wrapped material stored");
    let kek = Kek::from_file(&kek_path).expect("kek");
    let secret = kek
        .unwrap(KeySetName::Webhook, key.schedule.kid.as_str(), wrapped)
        .expect("unwraps under the KEK, bound to set and kid");
    assert_eq!(secret.len(), 32);
    assert!(
        kek.unwrap(KeySetName::Access, key.schedule.kid.as_str(), wrapped)
            .is_err(),
        "bound to its key set"
    );
    let unwrapped =
        MacKey::from_secret(key.schedule.kid.clone(), Algorithm::Hs256, &secret).expect("mac key");

    // The issuer's MAC API signs with the same key, and verifies in constant time.
    let payload = br#"{"event":"invoice.paid"}"#;
    let signer = issuer
        .app
        .keys
        .mac_key(KeySetName::Webhook, now)
        .await
        .expect("webhook signer");
    assert_eq!(signer.kid(), &key.schedule.kid);
    let tag = signer.sign(payload);
    assert_eq!(unwrapped.verify(payload, &tag), Ok(()));
    assert!(unwrapped.verify(b"{}", &tag).is_err());

    // After a rotation the predecessor's tags still verify (overlap); after an
    // emergency rotation they do not, and its material is gone from the store.
    let old_kid = key.schedule.kid.clone();
    let rotated = rotate(&issuer, "webhook", false).await;
    let now = issuer.app.now();
    let next = issuer
        .app
        .keys
        .mac_key(KeySetName::Webhook, now)
        .await
        .expect("signer");
    assert_eq!(next.kid().as_str(), rotated.new_kid);
    let previous = issuer
        .app
        .keys
        .mac_key_by_kid(KeySetName::Webhook, &old_kid, now)
        .await
        .expect("retiring key verifies");
    assert_eq!(previous.verify(payload, &tag), Ok(()));

    rotate(&issuer, "webhook", true).await;
    let now = issuer.app.now();
    assert!(
        issuer
            .app
            .keys
            .mac_key_by_kid(KeySetName::Webhook, &old_kid, now)
            .await
            .is_err(),
        "a revoked key verifies nothing"
    );
    let after = issuer
        .app
        .store
        .key_set(KeySetName::Webhook)
        .await
        .expect("key set");
    let old = after
        .keys
        .iter()
        .find(|stored| stored.schedule.kid == old_kid)
        .expect("old key kept for audit");
    assert!(old.wrapped_private.is_none(), "revoked material deleted");
    assert!(KeyId::new(rotated.new_kid).is_ok());
    issuer.stop().await;
}
