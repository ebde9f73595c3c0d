//! Revocation pushed by the issuer: key revocation and revocation entries reject tokens
//! at once, including tokens already in the verified-token cache; unknown kids trigger
//! only a bounded number of resyncs.

use std::time::Duration;

use serde_json::json;
use tessera_proto::v1 as pb;

use crate::fake_issuer::{FakeIssuer, revocation};
use crate::harness::{eventually, reason, serving, validate};
use crate::keys::{TestKey, claims, now_ms, rand_u64};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_revocation_rejects_tokens_even_when_cached() {
    let rsa = TestKey::rs256("rsa-revoked");
    let ec = TestKey::es256("ec-survivor");
    let issuer = FakeIssuer::start(&[&rsa, &ec]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let cached = rsa.sign(&claims("erin"));
    let survivor = ec.sign(&claims("erin"));
    assert!(validate(&mut client, &cached).await.valid);
    assert!(validate(&mut client, &cached).await.valid);
    assert!(validate(&mut client, &survivor).await.valid);

    issuer.revoke_key("rsa-revoked");
    let rejected = eventually(Duration::from_secs(5), || {
        let mut client = client.clone();
        let cached = cached.clone();
        async move { reason(&validate(&mut client, &cached).await) == pb::Reason::KeyRevoked }
    })
    .await;
    assert!(
        rejected,
        "the cached token of a revoked key kept validating"
    );
    // A token of the revoked key never seen before, and the other key's token.
    assert_eq!(
        reason(&validate(&mut client, &rsa.sign(&claims("frank"))).await),
        pb::Reason::KeyRevoked
    );
    assert!(validate(&mut client, &survivor).await.valid);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_entries_reject_cached_tokens_by_jti_and_user_cutoff() {
    let ed = TestKey::eddsa("ed-entries");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;

    let by_jti_claims = claims("gina");
    let by_jti = ed.sign(&by_jti_claims);
    let other = ed.sign(&claims("gina"));
    assert!(validate(&mut client, &by_jti).await.valid);
    issuer.add_revocation(revocation(
        pb::RevocationKind::Jti,
        by_jti_claims["jti"].as_str().unwrap(),
        now_ms(),
    ));
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, token) = (client.clone(), by_jti.clone());
            async move { reason(&validate(&mut client, &token).await) == pb::Reason::Revoked }
        })
        .await
    );
    assert!(
        validate(&mut client, &other).await.valid,
        "a jti entry revoked another token"
    );

    // User cutoff at millisecond precision: tokens issued at or before it are revoked, a
    // token issued one millisecond later (same second) survives.
    let cutoff = now_ms();
    let mut before = claims("hank");
    before["iat_ms"] = json!(cutoff);
    let mut after = claims("hank");
    after["iat_ms"] = json!(cutoff + 1);
    after["iat"] = json!((cutoff + 1) / 1000);
    let before = ed.sign(&before);
    let after = ed.sign(&after);
    assert!(validate(&mut client, &before).await.valid);
    issuer.add_revocation(revocation(pb::RevocationKind::User, "hank", cutoff));
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, token) = (client.clone(), before.clone());
            async move { reason(&validate(&mut client, &token).await) == pb::Reason::Revoked }
        })
        .await
    );
    assert!(
        validate(&mut client, &after).await.valid,
        "a login right after the logout was revoked"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_kids_cause_a_handful_of_resyncs() {
    let ed = TestKey::eddsa("ed-known");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let subscriptions_before = issuer.n_subscriptions();

    // 10,000 tokens with random kids, sent over a stream as fast as the sidecar answers.
    let tokens: Vec<String> = (0..10_000)
        .map(|_| {
            ed.sign_with_header(
                &json!({"alg": "EdDSA", "kid": format!("kid-{}", rand_u64()), "typ": "at+jwt"}),
                &claims("ivan"),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let requests = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| pb::ValidateStreamRequest {
            request_id: i as u64,
            token,
            ..Default::default()
        });
    let mut client = sidecar.client().await;
    let mut responses = client
        .validate_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut n_unknown = 0;
    while let Some(response) = responses.message().await.unwrap() {
        assert_eq!(
            pb::Reason::try_from(response.reason).unwrap(),
            pb::Reason::UnknownKid
        );
        n_unknown += 1;
    }
    assert_eq!(n_unknown, 10_000);
    let elapsed = started.elapsed();
    // Wait for the first resync to land (a subscription at the issuer). The sidecar
    // starts one at most every 2 s, so at most one more can still be on its way.
    assert!(
        eventually(Duration::from_secs(10), || async {
            issuer.n_subscriptions() > subscriptions_before
        })
        .await,
        "an unknown kid never triggered a resync"
    );
    let n_resyncs = issuer.n_subscriptions() - subscriptions_before;
    // One resync per 2 s at most, whatever the kids: a handful over the run.
    let bound = 1 + (elapsed.as_secs_f64() / 2.0).ceil() as usize;
    println!("{n_resyncs} resyncs for 10,000 random kids in {elapsed:?}");
    assert!(
        n_resyncs <= bound,
        "{n_resyncs} resyncs in {elapsed:?} (bound {bound})"
    );
    // Resyncs ask for a full snapshot.
    assert!(
        issuer.since_revisions()[subscriptions_before..]
            .iter()
            .all(|since| *since == 0)
    );

    // The sidecar still serves known kids.
    let mut client = sidecar.client().await;
    assert!(validate(&mut client, &ed.sign(&claims("ivan"))).await.valid);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_published_later_validates_without_restart() {
    let ed = TestKey::eddsa("ed-first");
    let late = TestKey::es256("ec-late");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let token = late.sign(&claims("judy"));
    assert_eq!(
        reason(&validate(&mut client, &token).await),
        pb::Reason::UnknownKid
    );
    issuer.upsert_key(late.published());
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, token) = (client.clone(), token.clone());
            async move { validate(&mut client, &token).await.valid }
        })
        .await
    );
    sidecar.stop().await;
}
