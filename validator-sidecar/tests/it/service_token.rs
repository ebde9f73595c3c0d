//! `FetchServiceToken`: the sidecar holds a token of its service identity from the fake
//! issuer, renews it at 80 % of its life and confirms it, and never hands out an expired
//! or revoked one.

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_proto::v1 as pb;
use tonic::Code;

use crate::fake_issuer::FakeIssuer;
use crate::harness::{Sidecar, eventually, serving, wait_serving};

async fn fetch(sidecar: &Sidecar) -> Result<pb::FetchServiceTokenResponse, tonic::Status> {
    sidecar
        .client()
        .await
        .fetch_service_token(pb::FetchServiceTokenRequest {})
        .await
        .map(tonic::Response::into_inner)
}

async fn with_identity(issuer: &FakeIssuer, dir: &Path) -> Sidecar {
    let sidecar = Sidecar::start(
        &issuer.url(),
        dir,
        &["--service-identity", "billing", "--service-tenant", "acme"],
    )
    .await;
    wait_serving(&sidecar).await;
    sidecar
}

/// Polls FetchServiceToken until it answers a token `wanted` accepts, for `patience`.
async fn wait_for_token(
    sidecar: &Sidecar,
    patience: Duration,
    wanted: impl Fn(&pb::FetchServiceTokenResponse) -> bool,
) -> Option<pb::FetchServiceTokenResponse> {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(token) = fetch(sidecar).await
            && wanted(&token)
        {
            return Some(token);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn first_token(sidecar: &Sidecar) -> pb::FetchServiceTokenResponse {
    wait_for_token(sidecar, Duration::from_secs(5), |_| true)
        .await
        .expect("no service token was installed")
}

#[tokio::test]
async fn without_an_identity_fetch_is_failed_precondition() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let status = fetch(&sidecar).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(issuer.credentials.calls().issue, 0);
    sidecar.stop().await;
}

#[tokio::test]
async fn the_token_is_renewed_at_80_percent_and_confirmed() {
    let issuer = FakeIssuer::start(&[]).await;
    issuer
        .credentials
        .add_identity("acme", "billing", &["charge"], Duration::from_millis(2_000));
    let dir = tempfile::tempdir().unwrap();
    let sidecar = with_identity(&issuer, dir.path()).await;
    let first = first_token(&sidecar).await;
    let installed = Instant::now();
    assert!(first.token.starts_with("tbs_"));
    assert_eq!(
        (first.tenant_id.as_str(), first.service.as_str()),
        ("acme", "billing")
    );
    {
        let issues = issuer.credentials.issues.lock().unwrap();
        assert_eq!(issues[0].replaces, "");
        assert_eq!(issues[0].holder, "it");
    }
    assert!(
        eventually(Duration::from_secs(2), || async {
            issuer
                .credentials
                .confirms
                .lock()
                .unwrap()
                .contains(&first.token_id)
        })
        .await
    );
    // Still the same token well before renew_at (1.6 s into its 2 s life).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(fetch(&sidecar).await.unwrap().token_id, first.token_id);
    let second = wait_for_token(&sidecar, Duration::from_secs(3), |t| {
        t.token_id != first.token_id
    })
    .await
    .expect("the token was not renewed");
    let renewed_after = installed.elapsed();
    // Renewed at 80 % (1.6 s), before the first token expired at 2 s.
    assert!(
        renewed_after >= Duration::from_millis(1_300),
        "{renewed_after:?}"
    );
    assert!(
        renewed_after < Duration::from_millis(2_000),
        "{renewed_after:?}"
    );
    {
        let issues = issuer.credentials.issues.lock().unwrap();
        assert_eq!(issues[1].replaces, first.token_id);
    }
    // Its confirmation revoked the predecessor at the issuer.
    assert!(
        eventually(Duration::from_secs(2), || async {
            issuer
                .credentials
                .confirms
                .lock()
                .unwrap()
                .contains(&second.token_id)
        })
        .await
    );
    let predecessor = issuer.credentials.token_info(&first.token_id).unwrap();
    assert_eq!(predecessor.state, "revoked");
    sidecar.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_never_handed_out() {
    let issuer = FakeIssuer::start(&[]).await;
    issuer
        .credentials
        .add_identity("acme", "billing", &[], Duration::from_millis(1_500));
    let dir = tempfile::tempdir().unwrap();
    let sidecar = with_identity(&issuer, dir.path()).await;
    let first = first_token(&sidecar).await;
    issuer.credentials.set_issue_failing(true);
    let expires_at = first.expires_at.unwrap();
    let expires_ms = expires_at.seconds * 1000 + i64::from(expires_at.nanos / 1_000_000);
    let wait = expires_ms - crate::keys::now_ms() + 50;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let status = fetch(&sidecar).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    // Renewal kept trying (with backoff) and succeeds once the issuer issues again.
    issuer.credentials.set_issue_failing(false);
    let next = first_token(&sidecar).await;
    assert_ne!(next.token_id, first.token_id);
    let issues = issuer.credentials.issues.lock().unwrap().clone();
    assert!(issues.len() >= 3, "{issues:?}");
    // Once expired, the next token replaces nothing.
    assert_eq!(issues.last().unwrap().replaces, "");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_pushed_revocation_of_the_held_token_fetches_a_new_one_at_once() {
    let issuer = FakeIssuer::start(&[]).await;
    issuer
        .credentials
        .add_identity("acme", "billing", &[], Duration::from_secs(3_600));
    let dir = tempfile::tempdir().unwrap();
    let sidecar = with_identity(&issuer, dir.path()).await;
    let first = first_token(&sidecar).await;
    issuer.credentials.revoke_token(&first.token_id);
    let next = wait_for_token(&sidecar, Duration::from_secs(5), |t| {
        t.token_id != first.token_id
    })
    .await;
    assert!(next.is_some(), "the revoked token was not replaced");
    let issues = issuer.credentials.issues.lock().unwrap().clone();
    assert_eq!(issues.last().unwrap().replaces, "");
    sidecar.stop().await;
}

#[tokio::test]
async fn after_a_snapshot_the_held_token_is_checked_and_replaced_if_dead() {
    let known = crate::keys::TestKey::eddsa("ed-known");
    let issuer = FakeIssuer::start(&[&known]).await;
    issuer
        .credentials
        .add_identity("acme", "billing", &[], Duration::from_secs(3_600));
    let dir = tempfile::tempdir().unwrap();
    let sidecar = with_identity(&issuer, dir.path()).await;
    let first = first_token(&sidecar).await;
    // Revoked while the event is lost; a resync (unknown kid) brings a snapshot.
    issuer.credentials.revoke_token_quietly(&first.token_id);
    let stranger = crate::keys::TestKey::eddsa("ed-unknown");
    let token = stranger.sign(&crate::keys::claims("mallory"));
    crate::harness::validate(&mut sidecar.client().await, &token).await;
    let next = wait_for_token(&sidecar, Duration::from_secs(10), |t| {
        t.token_id != first.token_id
    })
    .await;
    assert!(next.is_some(), "the dead token was kept after the snapshot");
    assert!(issuer.credentials.calls().validate_service_token >= 1);
    assert_eq!(
        issuer
            .credentials
            .issues
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .replaces,
        ""
    );
    sidecar.stop().await;
}
