//! The validity bounds of issue 8 at the sidecar, over the socket: tokens a buggy or
//! compromised issuer could sign (future `iat`, ten-year lifetime, an action key's token
//! as an access token, a pending key, a retiring key after it stopped signing, a `crit`
//! header), the required tenant, the cache never skipping a check that depends on the
//! instant or the query, and a cache file that lies about its last contact.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_common::{ManualClock, UnixMillis};
use tessera_proto::v1 as pb;

use crate::fake_issuer::{FakeIssuer, revocation};
use crate::harness::{Sidecar, eventually, reason, serving, validate, validate_with, wait_serving};
use crate::keys::{TestKey, claims, now_ms};

/// The leeway the fake issuer publishes.
const LEEWAY_MS: i64 = 30_000;

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// `key` published in `key_set`, signing from `activates_at_ms` until `deactivates_at_ms`.
fn scheduled(
    key: &TestKey,
    key_set: &str,
    activates_at_ms: i64,
    deactivates_at_ms: Option<i64>,
) -> pb::Key {
    pb::Key {
        key_set: key_set.into(),
        activates_at: Some(timestamp(activates_at_ms)),
        deactivates_at: deactivates_at_ms.map(timestamp),
        verify_until: deactivates_at_ms.map(|at| timestamp(at + 86_400_000)),
        ..key.published()
    }
}

/// Claims of an access token issued at `iat_ms`, living `lifetime_seconds`.
fn issued_at(sub: &str, iat_ms: i64, lifetime_seconds: i64) -> Value {
    let mut claims = claims(sub);
    claims["iat"] = json!(iat_ms.div_euclid(1000));
    claims["iat_ms"] = json!(iat_ms);
    claims["nbf"] = json!(iat_ms.div_euclid(1000));
    claims["exp"] = json!(iat_ms.div_euclid(1000) + lifetime_seconds);
    claims
}

/// Validates `token` twice (the second answer comes from the verified-token cache) and
/// asserts both answers are `expected`.
async fn assert_twice(sidecar: &Sidecar, token: &str, expected: pb::Reason, what: &str) {
    let mut client = sidecar.client().await;
    for attempt in ["first", "cached"] {
        let response = validate(&mut client, token).await;
        assert_eq!(reason(&response), expected, "{what} ({attempt})");
        assert_eq!(
            response.valid,
            expected == pb::Reason::Unspecified,
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_tokens_from_a_compromised_issuer_get_their_reasons() {
    let access = TestKey::eddsa("ed-access");
    let action = TestKey::eddsa("ed-action");
    let pending = TestKey::eddsa("ed-pending");
    let retiring = TestKey::eddsa("ed-retiring");
    let issuer = FakeIssuer::start(&[&access]).await;
    let now = now_ms();
    issuer.upsert_key(scheduled(&action, "action", 0, None));
    issuer.upsert_key(scheduled(&pending, "access", now + 3_600_000, None));
    issuer.upsert_key(scheduled(&retiring, "access", 0, Some(now - 600_000)));
    let (sidecar, _dir) = serving(&issuer).await;

    assert_twice(
        &sidecar,
        &access.sign(&claims("ok")),
        pb::Reason::Unspecified,
        "in bounds",
    )
    .await;
    let future = issued_at("future", now + 3_600_000, 900);
    assert_twice(
        &sidecar,
        &access.sign(&future),
        pb::Reason::NotYetValid,
        "future iat",
    )
    .await;
    let mut disagreeing = claims("skewed");
    disagreeing["iat_ms"] = json!(disagreeing["iat_ms"].as_i64().unwrap() - 5_000);
    assert_twice(
        &sidecar,
        &access.sign(&disagreeing),
        pb::Reason::Malformed,
        "iat != iat_ms",
    )
    .await;
    let decade = issued_at("decade", now, 10 * 365 * 86_400);
    assert_twice(
        &sidecar,
        &access.sign(&decade),
        pb::Reason::LifetimeTooLong,
        "exp-iat 10 y",
    )
    .await;
    let one_over = issued_at("over", now, 901);
    assert_twice(
        &sidecar,
        &access.sign(&one_over),
        pb::Reason::LifetimeTooLong,
        "901 s",
    )
    .await;
    assert_twice(
        &sidecar,
        &action.sign(&claims("act")),
        pb::Reason::WrongTokenType,
        "action key as access",
    )
    .await;
    assert_twice(
        &sidecar,
        &pending.sign(&claims("early")),
        pb::Reason::KeyNotActive,
        "pending key",
    )
    .await;
    assert_twice(
        &sidecar,
        &retiring.sign(&claims("late")),
        pb::Reason::KeyNotActive,
        "retiring key, issued after",
    )
    .await;
    let before_retirement = issued_at("before", now - 700_000, 900);
    assert_twice(
        &sidecar,
        &retiring.sign(&before_retirement),
        pb::Reason::Unspecified,
        "retiring key, issued before",
    )
    .await;
    let crit = access.sign_with_header(
        &json!({"alg": "EdDSA", "kid": access.kid, "typ": "at+jwt", "crit": ["exp"]}),
        &claims("crit"),
    );
    assert_twice(&sidecar, &crit, pb::Reason::Malformed, "crit header").await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_tenant_is_checked_before_revocation_in_unary_and_stream() {
    let ed = TestKey::eddsa("ed-tenant");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let live = ed.sign(&claims("alice"));
    let revoked_claims = claims("bob");
    let revoked = ed.sign(&revoked_claims);
    let jti = revoked_claims["jti"].as_str().unwrap();
    issuer.add_revocation(revocation(pb::RevocationKind::Jti, jti, now_ms()));
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, revoked) = (client.clone(), revoked.clone());
            async move { reason(&validate(&mut client, &revoked).await) == pb::Reason::Revoked }
        })
        .await
    );
    let for_tenant = |token: &str, tenant: &str| pb::ValidateTokenRequest {
        token: token.into(),
        tenant_id: tenant.into(),
        ..Default::default()
    };
    // The owner's tenant: the real verdict, from the cache the second time.
    for _ in 0..2 {
        let response = validate_with(&mut client, for_tenant(&live, "acme")).await;
        assert!(response.valid, "{:?}", reason(&response));
        let response = validate_with(&mut client, for_tenant(&revoked, "acme")).await;
        assert_eq!(reason(&response), pb::Reason::Revoked);
    }
    // Another tenant: WRONG_TENANT, revoked or not (a cache hit for both).
    for token in [&live, &revoked] {
        let response = validate_with(&mut client, for_tenant(token, "globex")).await;
        assert_eq!(reason(&response), pb::Reason::WrongTenant);
        assert!(response.claims.is_none() && response.claims_json.is_empty());
    }
    let requests = [
        (1, &live, "globex"),
        (2, &revoked, "globex"),
        (3, &live, "acme"),
        (4, &live, ""),
    ]
    .map(|(request_id, token, tenant)| pb::ValidateStreamRequest {
        request_id,
        token: token.clone(),
        tenant_id: tenant.into(),
        ..Default::default()
    });
    let mut responses = sidecar.stream(requests).await;
    let mut verdicts = std::collections::BTreeMap::new();
    while let Some(response) = responses.message().await.unwrap() {
        verdicts.insert(response.request_id, response.reason());
    }
    let expected = [
        (1, pb::Reason::WrongTenant),
        (2, pb::Reason::WrongTenant),
        (3, pb::Reason::Unspecified),
        (4, pb::Reason::Unspecified),
    ];
    assert_eq!(verdicts, expected.into_iter().collect());
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_depend_on_the_instant_run_on_cache_hits() {
    let start = now_ms();
    let clock = Arc::new(ManualClock::new(UnixMillis(start)));
    let active = TestKey::eddsa("ed-clock-active");
    let pending = TestKey::eddsa("ed-clock-pending");
    let issuer = FakeIssuer::start(&[&active]).await;
    // Activates in 50 s: its token below is issued within the skew allowance of that
    // instant, but the key is still pending beyond the leeway now.
    let activates_at = start + 50_000;
    issuer.upsert_key(scheduled(&pending, "access", activates_at, None));
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start_with_clock(&issuer.url(), dir.path(), &[], clock.clone()).await;
    wait_serving(&sidecar).await;

    let early = pending.sign(&issued_at("early", activates_at - LEEWAY_MS + 5_000, 900));
    let ahead = active.sign(&issued_at("ahead", start + 60_000, 900));
    assert_twice(&sidecar, &early, pb::Reason::KeyNotActive, "pending key").await;
    assert_twice(&sidecar, &ahead, pb::Reason::NotYetValid, "iat ahead").await;
    // Time passes; the very same cached verifications now pass.
    clock.advance(Duration::from_secs(35));
    assert_twice(
        &sidecar,
        &early,
        pb::Reason::Unspecified,
        "key active within leeway",
    )
    .await;
    assert_twice(
        &sidecar,
        &ahead,
        pb::Reason::Unspecified,
        "iat within leeway",
    )
    .await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_last_contact_in_the_cache_file_does_not_extend_serving() {
    let ed = TestKey::eddsa("ed-lying-file");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let (sidecar, dir) = serving(&issuer).await;
    let cache_file = sidecar.bundle_cache.clone();
    assert!(eventually(Duration::from_secs(5), || async { cache_file.exists() }).await);
    sidecar.stop().await;
    issuer.stop();

    // Whoever can write the file claims the issuer was heard from a year from now.
    let mut cached: Value = serde_json::from_slice(&std::fs::read(&cache_file).unwrap()).unwrap();
    cached["last_contact"] = json!(now_ms() + 365 * 86_400_000);
    std::fs::write(&cache_file, serde_json::to_vec(&cached).unwrap()).unwrap();

    let args = ["--max-staleness-seconds", "1"];
    let restarted = Sidecar::start(&issuer.url(), dir.path(), &args).await;
    let token = ed.sign(&claims("stale"));
    let mut client = restarted.client().await;
    // Staleness counts from the load at the latest: past one second, fail closed.
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, token) = (client.clone(), token.clone());
            async move { reason(&validate(&mut client, &token).await) == pb::Reason::BundleStale }
        })
        .await,
        "the lying cache file kept the sidecar serving past max_staleness"
    );
    assert_eq!(
        reason(&validate(&mut client, &token).await),
        pb::Reason::BundleStale
    );
    restarted.stop().await;
}
