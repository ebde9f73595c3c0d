//! `ValidateApiKey` at the sidecar against the fake issuer's `ApiKeyService`: what is
//! answered locally, what reaches the issuer (counted), caching, purges pushed on the
//! stream, and rate-limit leases.

use std::time::Duration;

use tessera_common::credential::{Credential, CredentialKind};
use tessera_proto::v1 as pb;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::fake_issuer::{FakeIssuer, revocation};
use crate::harness::{eventually, serving};
use crate::keys::now_ms;

async fn validate(
    client: &mut ValidatorServiceClient<Channel>,
    key: &str,
    permissions: &[&str],
    role: &str,
) -> Result<pb::ValidateApiKeyResponse, tonic::Status> {
    let request = pb::ValidateApiKeyRequest {
        key: key.into(),
        required_permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        required_role: role.into(),
        lease_admissions: 0,
    };
    client
        .validate_api_key(request)
        .await
        .map(tonic::Response::into_inner)
}

fn refusal(response: &pb::ValidateApiKeyResponse) -> pb::ApiKeyRefusal {
    pb::ApiKeyRefusal::try_from(response.refusal).unwrap()
}

/// Changes one character of the secret: the checksum no longer matches.
fn typo(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    bytes[25] = if bytes[25] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn a_typo_a_forgery_or_another_kind_never_reaches_the_issuer() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &["read"], "");
    let answer = validate(&mut client, &typo(&key), &[], "").await.unwrap();
    assert!(!answer.valid);
    assert_eq!(refusal(&answer), pb::ApiKeyRefusal::BadChecksum);
    let service = Credential::generate(CredentialKind::Service).expose();
    let issuer_caller = Credential::generate(CredentialKind::IssuerCaller).expose();
    for other in [
        service.as_str(),
        issuer_caller.as_str(),
        "tbk_short",
        "",
        "Bearer x",
    ] {
        let answer = validate(&mut client, other, &[], "").await.unwrap();
        assert_eq!(refusal(&answer), pb::ApiKeyRefusal::Malformed, "{other}");
    }
    assert_eq!(issuer.credentials.calls().validate_api_key, 0);
    sidecar.stop().await;
}

#[tokio::test]
async fn oversized_input_is_invalid_argument_before_any_lookup() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &["read"], "");
    let long_key = format!("{key}{}", "A".repeat(129 - key.len()));
    let wide = "p".repeat(129);
    let many: Vec<&str> = vec!["p"; 129];
    let role = "r".repeat(129);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (&long_key, vec![], ""),
        (&key, many, ""),
        (&key, vec![wide.as_str()], ""),
        (&key, vec![""], ""),
        (&key, vec![], role.as_str()),
    ];
    for (key, permissions, role) in cases {
        let status = validate(&mut client, key, &permissions, role)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    assert_eq!(issuer.credentials.calls().validate_api_key, 0);
    sidecar.stop().await;
}

#[tokio::test]
async fn concurrent_first_sights_of_one_key_make_one_issuer_call() {
    let issuer = FakeIssuer::start(&[]).await;
    issuer.credentials.set_delay(Duration::from_millis(200));
    let (sidecar, _dir) = serving(&issuer).await;
    let key = issuer.credentials.add_api_key("t1", &["read"], "reader");
    let client = sidecar.client().await;
    let answers = futures_util::future::join_all((0..100).map(|_| {
        let mut client = client.clone();
        let key = key.clone();
        async move { validate(&mut client, &key, &["read"], "").await }
    }))
    .await;
    for answer in answers {
        let answer = answer.unwrap();
        assert!(answer.valid, "{answer:?}");
        assert_eq!(answer.tenant_id, "t1");
        assert_eq!(answer.role, "reader");
        // The lease is the sidecar's business.
        assert_eq!(answer.leased_admissions, 0);
    }
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    sidecar.stop().await;
}

#[tokio::test]
async fn permissions_and_role_are_checked_locally_against_the_cached_answer() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer
        .credentials
        .add_api_key("t1", &["read", "list"], "reader");
    assert!(
        validate(&mut client, &key, &["read"], "reader")
            .await
            .unwrap()
            .valid
    );
    let answer = validate(&mut client, &key, &["write"], "").await.unwrap();
    assert_eq!(refusal(&answer), pb::ApiKeyRefusal::InsufficientPermissions);
    let answer = validate(&mut client, &key, &[], "admin").await.unwrap();
    assert_eq!(refusal(&answer), pb::ApiKeyRefusal::InsufficientPermissions);
    assert!(
        validate(&mut client, &key, &["list", "read"], "")
            .await
            .unwrap()
            .valid
    );
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    sidecar.stop().await;
}

/// A cache hit answers with the bytes encoded when the issuer's answer was cached: the
/// same message, field for field, as the first sight's.
#[tokio::test]
async fn a_cached_answer_is_the_first_sights_answer_field_for_field() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer
        .credentials
        .add_api_key("t1", &["read", "list"], "reader");
    let first = validate(&mut client, &key, &["read"], "").await.unwrap();
    let cached = validate(&mut client, &key, &["list"], "reader")
        .await
        .unwrap();
    assert!(first.valid);
    assert_eq!(first.tenant_id, "t1");
    assert_eq!(first.permissions, ["read", "list"]);
    assert!(first.expires_at.is_some());
    assert_eq!(cached, first);
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    sidecar.stop().await;
}

/// As at the issuer, a working key's call costs its admission before its permissions are
/// judged: probing for permissions spends the key's budget like any other call.
#[tokio::test]
async fn a_call_refused_for_permissions_still_spends_its_admission() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &["read"], "");
    // Three admissions in all: the first sight's own and two leased with it.
    issuer.credentials.set_budget(&key, 3, 7);
    assert!(
        validate(&mut client, &key, &["read"], "")
            .await
            .unwrap()
            .valid
    );
    for _ in 0..2 {
        let answer = validate(&mut client, &key, &["write"], "").await.unwrap();
        assert_eq!(refusal(&answer), pb::ApiKeyRefusal::InsufficientPermissions);
    }
    let status = validate(&mut client, &key, &["read"], "")
        .await
        .expect_err("the budget is spent");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_with_a_valid_checksum_is_never_served_from_the_keys_answer() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &["read"], "");
    assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    // The attacker knows the public id and computes a valid checksum.
    let id = &key[4..20];
    let forged =
        Credential::from_parts(CredentialKind::ApiKey, id.to_owned(), "x".repeat(43)).expose();
    let answer = validate(&mut client, &forged, &[], "").await.unwrap();
    assert!(!answer.valid);
    assert_eq!(refusal(&answer), pb::ApiKeyRefusal::Unknown);
    assert_eq!(issuer.credentials.calls().validate_api_key, 2);
    // Replaying the forgery is answered from the short negative cache.
    let answer = validate(&mut client, &forged, &[], "").await.unwrap();
    assert_eq!(refusal(&answer), pb::ApiKeyRefusal::Unknown);
    assert_eq!(issuer.credentials.calls().validate_api_key, 2);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_pushed_revocation_sends_the_next_validation_to_the_issuer_which_refuses() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &["read"], "");
    assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    issuer.credentials.revoke_api_key(&key);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut client = client.clone();
            let key = key.clone();
            async move {
                let answer = validate(&mut client, &key, &[], "").await.unwrap();
                !answer.valid && refusal(&answer) == pb::ApiKeyRefusal::Revoked
            }
        })
        .await,
        "the revoked key was still accepted"
    );
    // The push did it, not a lease call that found the key revoked once the cached
    // lease ran out.
    assert_eq!(issuer.credentials.calls().lease, 0);
    assert_eq!(issuer.credentials.calls().validate_api_key, 2);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_tenant_emergency_entry_invalidates_that_tenants_cached_answers_only() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let victim = issuer.credentials.add_api_key("t1", &[], "");
    let bystander = issuer.credentials.add_api_key("t2", &[], "");
    assert!(validate(&mut client, &victim, &[], "").await.unwrap().valid);
    assert!(
        validate(&mut client, &bystander, &[], "")
            .await
            .unwrap()
            .valid
    );
    assert_eq!(issuer.credentials.calls().validate_api_key, 2);
    issuer.add_revocation(revocation(pb::RevocationKind::Tenant, "t1", now_ms()));
    let revision = issuer.revision();
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut client = client.clone();
            let victim = victim.clone();
            let issuer = &issuer;
            async move {
                validate(&mut client, &victim, &[], "").await.unwrap();
                issuer.credentials.calls().validate_api_key == 3
            }
        })
        .await,
        "the tenant's cached answer was still used after revision {revision}"
    );
    assert!(
        validate(&mut client, &bystander, &[], "")
            .await
            .unwrap()
            .valid
    );
    assert_eq!(issuer.credentials.calls().validate_api_key, 3);
    sidecar.stop().await;
}

#[tokio::test]
async fn an_exhausted_lease_is_resource_exhausted_without_an_issuer_call_per_request() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &[], "");
    // Three admissions: the first sight's, and two leased with it.
    issuer.credentials.set_budget(&key, 3, 7);
    for _ in 0..3 {
        assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    }
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    assert_eq!(issuer.credentials.calls().lease, 0);
    for _ in 0..20 {
        let status = validate(&mut client, &key, &[], "").await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let metadata = status.metadata();
        assert_eq!(
            metadata
                .get("tessera-refusal")
                .and_then(|v| v.to_str().ok()),
            Some("RATE_LIMITED")
        );
        let retry_after: u64 = metadata
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((1..=7).contains(&retry_after), "{retry_after}");
    }
    // One lease call found the budget gone; the refusal is remembered.
    assert_eq!(issuer.credentials.calls().lease, 1);
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_spent_lease_is_renewed_with_one_call_for_concurrent_requests() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &[], "");
    // 1 + 1 leased with the first sight, then 100 more in the next lease.
    issuer.credentials.set_budget(&key, 2, 7);
    let mut first = client.clone();
    assert!(validate(&mut first, &key, &[], "").await.unwrap().valid);
    assert!(validate(&mut first, &key, &[], "").await.unwrap().valid);
    issuer.credentials.set_budget(&key, 100, 7);
    issuer.credentials.set_delay(Duration::from_millis(100));
    let answers = futures_util::future::join_all((0..40).map(|_| {
        let mut client = client.clone();
        let key = key.clone();
        async move { validate(&mut client, &key, &[], "").await }
    }))
    .await;
    // 40 admissions from one lease of 100: one lease call between them.
    assert!(answers.iter().all(|answer| answer.as_ref().unwrap().valid));
    assert_eq!(issuer.credentials.calls().lease, 1);
    sidecar.stop().await;
}

#[tokio::test]
async fn the_issuers_rate_limit_on_a_first_sight_is_passed_through() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &[], "");
    issuer.credentials.set_budget(&key, 0, 42);
    let status = validate(&mut client, &key, &[], "").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let metadata = status.metadata();
    assert_eq!(
        metadata.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("42")
    );
    assert_eq!(
        metadata
            .get("tessera-refusal")
            .and_then(|v| v.to_str().ok()),
        Some("RATE_LIMITED")
    );
    // Only those two: the issuer's other trailers stay between it and the sidecar.
    assert!(metadata.get("x-issuer-internal").is_none());
    // Remembered until retry-after: a hammering client costs no issuer call per request.
    for _ in 0..10 {
        let status = validate(&mut client, &key, &[], "").await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry_after: u64 = status
            .metadata()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((41..=42).contains(&retry_after), "{retry_after}");
    }
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    sidecar.stop().await;
}

#[tokio::test]
async fn the_issuer_down_on_a_miss_is_unavailable_never_a_made_up_answer() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let cached = issuer.credentials.add_api_key("t1", &[], "");
    assert!(validate(&mut client, &cached, &[], "").await.unwrap().valid);
    issuer.credentials.set_failing(true);
    let unseen = issuer.credentials.add_api_key("t1", &[], "");
    let status = validate(&mut client, &unseen, &[], "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // A cached answer with lease left still serves.
    assert!(validate(&mut client, &cached, &[], "").await.unwrap().valid);
    // The failure was not cached: once the issuer answers, so does the sidecar.
    issuer.credentials.set_failing(false);
    assert!(validate(&mut client, &unseen, &[], "").await.unwrap().valid);
    sidecar.stop().await;
}

#[tokio::test]
async fn an_unreachable_issuer_on_a_miss_is_unavailable() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &[], "");
    issuer.stop();
    let status = validate(&mut client, &key, &[], "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_snapshot_drops_every_cached_answer() {
    let known = crate::keys::TestKey::eddsa("ed-known");
    let issuer = FakeIssuer::start(&[&known]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &[], "");
    assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    // A token of a kid the sidecar does not know makes it resync: a full snapshot, after
    // which pushed events may have been missed.
    let subscriptions = issuer.n_subscriptions();
    let stranger = crate::keys::TestKey::eddsa("ed-unknown");
    let token = stranger.sign(&crate::keys::claims("mallory"));
    crate::harness::validate(&mut client, &token).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            issuer.n_subscriptions() > subscriptions
        })
        .await,
        "no resync"
    );
    assert_eq!(issuer.since_revisions().last(), Some(&0));
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut client = client.clone();
            let key = key.clone();
            let issuer = &issuer;
            async move {
                assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
                issuer.credentials.calls().validate_api_key == 2
            }
        })
        .await,
        "the answer cached before the snapshot was still used"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn answers_are_cached_for_the_configured_ttl_only() {
    let issuer = FakeIssuer::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar =
        crate::harness::Sidecar::start(&issuer.url(), dir.path(), &["--api-key-cache-ttl", "1"])
            .await;
    crate::harness::wait_serving(&sidecar).await;
    let mut client = sidecar.client().await;
    let key = issuer.credentials.add_api_key("t1", &[], "");
    assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    assert_eq!(issuer.credentials.calls().validate_api_key, 1);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert!(validate(&mut client, &key, &[], "").await.unwrap().valid);
    assert_eq!(issuer.credentials.calls().validate_api_key, 2);
    sidecar.stop().await;
}
