//! The sidecar's life around its bundle: readiness before the first bundle, the
//! persisted bundle across restarts, staleness under both policies, resumption from the
//! last revision, the HTTP probes and metrics, reflection, and the socket file.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tessera_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::fake_issuer::FakeIssuer;
use crate::harness::{Sidecar, eventually, reason, serving, validate, wait_serving};
use crate::keys::{TestKey, claims};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_until_the_first_bundle() {
    let ed = TestKey::eddsa("ed-held");
    let issuer = FakeIssuer::start_held(&[&ed]).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), &["--http-addr", "127.0.0.1:0"]).await;
    let token = ed.sign(&claims("mia"));
    let mut client = sidecar.client().await;
    // Subscribed, but no message yet.
    assert!(
        eventually(Duration::from_secs(5), || async {
            issuer.n_subscriptions() == 1
        })
        .await
    );
    assert_eq!(sidecar.health().await, ServingStatus::NotServing);
    assert_eq!(
        reason(&validate(&mut client, &token).await),
        pb::Reason::BundleStale
    );
    let http = sidecar.http_addr.unwrap();
    assert_eq!(http_get(http, "/readyz").await.0, 503);
    assert_eq!(http_get(http, "/healthz").await.0, 200);

    issuer.release();
    wait_serving(&sidecar).await;
    assert!(validate(&mut client, &token).await.valid);
    assert_eq!(http_get(http, "/readyz").await.0, 200);
    let (status, metrics) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "tessera_auth_validation_attempt_total{outcome=\"valid\"}",
        "tessera_auth_validation_attempt_total{outcome=\"bundle_stale\"}",
        "tessera_trust_bundle_revision",
        "tessera_sidecar_bundle_staleness_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_bundle_validates_after_a_restart_with_the_issuer_down() {
    let rsa = TestKey::rs256("rsa-persisted");
    let issuer = FakeIssuer::start(&[&rsa]).await;
    let (sidecar, dir) = serving(&issuer).await;
    let token = rsa.sign(&claims("noah"));
    assert!(validate(&mut sidecar.client().await, &token).await.valid);
    let cache_file = sidecar.bundle_cache.clone();
    assert!(eventually(Duration::from_secs(5), || async { cache_file.exists() }).await);
    let mode = std::fs::metadata(&cache_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    sidecar.stop().await;

    issuer.stop();
    let restarted = Sidecar::start(&issuer.url(), dir.path(), &[]).await;
    // Serving at once from the file, although the issuer refuses connections.
    assert_eq!(restarted.health().await, ServingStatus::Serving);
    let mut client = restarted.client().await;
    assert!(validate(&mut client, &token).await.valid);
    assert!(
        validate(&mut client, &rsa.sign(&claims("olga")))
            .await
            .valid
    );
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resumes_from_the_last_revision_and_catches_up() {
    let ed = TestKey::eddsa("ed-resume");
    let later = TestKey::es256("ec-resume");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let (sidecar, dir) = serving(&issuer).await;
    issuer.upsert_key(later.published());
    let revision = issuer.revision();
    let mut client = sidecar.client().await;
    let token = later.sign(&claims("paul"));
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, token) = (client.clone(), token.clone());
            async move { validate(&mut client, &token).await.valid }
        })
        .await
    );
    sidecar.stop().await;
    // (The first sidecar may have resynced once, if it saw the token before the delta.)
    let n_before = issuer.n_subscriptions();
    // A change made while the sidecar is away arrives as a delta after the restart.
    issuer.revoke_key("ec-resume");
    let restarted = Sidecar::start(&issuer.url(), dir.path(), &[]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            issuer.n_subscriptions() > n_before
        })
        .await
    );
    assert_eq!(
        issuer.since_revisions()[0],
        0,
        "the first subscription asks for a snapshot"
    );
    assert_eq!(
        issuer.since_revisions()[n_before],
        revision,
        "the restart did not resume"
    );
    client = restarted.client().await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, token) = (client.clone(), token.clone());
            async move { reason(&validate(&mut client, &token).await) == pb::Reason::KeyRevoked }
        })
        .await
    );
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_bundle_fails_closed_then_recovers() {
    let ed = TestKey::eddsa("ed-stale");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar =
        Sidecar::start(&issuer.url(), dir.path(), &["--max-staleness-seconds", "1"]).await;
    wait_serving(&sidecar).await;
    let mut client = sidecar.client().await;
    let token = ed.sign(&claims("quinn"));
    assert!(validate(&mut client, &token).await.valid);
    issuer.set_heartbeats(false);
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, token) = (client.clone(), token.clone());
            async move { reason(&validate(&mut client, &token).await) == pb::Reason::BundleStale }
        })
        .await
    );
    // Health follows on the monitor's next check (it polls), not with the same call.
    assert!(
        eventually(Duration::from_secs(5), || async {
            sidecar.health().await == ServingStatus::NotServing
        })
        .await,
        "health never reported NOT_SERVING while stale"
    );
    issuer.set_heartbeats(true);
    wait_serving(&sidecar).await;
    assert!(validate(&mut client, &token).await.valid);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_bundle_keeps_validating_under_the_serve_policy() {
    let ed = TestKey::eddsa("ed-serve");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--max-staleness-seconds", "1", "--stale-policy", "serve"];
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), &args).await;
    // A fail-closed twin on the same stream shows when the bundle has gone stale: both
    // hear the same heartbeats, so once the twin refuses with BUNDLE_STALE, the sidecar
    // under test is past its staleness bound too.
    let twin_dir = tempfile::tempdir().unwrap();
    let twin = Sidecar::start(
        &issuer.url(),
        twin_dir.path(),
        &["--max-staleness-seconds", "1"],
    )
    .await;
    wait_serving(&sidecar).await;
    wait_serving(&twin).await;
    let token = ed.sign(&claims("rita"));
    issuer.set_heartbeats(false);
    let twin_client = twin.client().await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut client, token) = (twin_client.clone(), token.clone());
            async move { reason(&validate(&mut client, &token).await) == pb::Reason::BundleStale }
        })
        .await,
        "the fail-closed twin never saw the bundle go stale"
    );
    let mut client = sidecar.client().await;
    assert!(validate(&mut client, &token).await.valid);
    assert_eq!(sidecar.health().await, ServingStatus::Serving);
    twin.stop().await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_has_its_mode_serves_reflection_and_is_removed_at_shutdown() {
    let ed = TestKey::eddsa("ed-socket");
    let issuer = FakeIssuer::start(&[&ed]).await;
    let dir = tempfile::tempdir().unwrap();
    // A stale socket file from a crashed run is replaced.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("sidecar.sock")).unwrap());
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), &["--socket-mode", "0600"]).await;
    let mode = std::fs::metadata(&sidecar.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(sidecar.channel().await);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for name in ["tessera.v1.ValidatorService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|listed| listed == name),
            "{name} not in {names:?}"
        );
    }
    // The shared descriptor set also describes the issuer's services; the sidecar must
    // not advertise what it does not answer.
    for name in [
        "tessera.v1.TrustBundleService",
        "tessera.v1.KeyService",
        "tessera.v1.TokenService",
    ] {
        assert!(
            !names.iter().any(|listed| listed == name),
            "{name} listed: {names:?}"
        );
    }
    let socket = sidecar.socket.clone();
    sidecar.stop().await;
    assert!(!socket.exists(), "the socket file outlived the sidecar");
}

/// Sends a bare HTTP/1.1 GET and returns the status and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
