//! GetSecret (issue 12 point 4) against the fake issuer's `SecretService`: one issuer
//! read however many first reads arrive at once, answers from memory after that, a
//! pushed rotation picked up within a second, the local allow list, a refused credential,
//! and the outage fallback up to the configured staleness, then failing closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_common::{ManualClock, UnixMillis};
use tessera_proto::v1 as pb;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::fake_issuer::FakeIssuer;
use crate::harness::{Sidecar, eventually, wait_serving};
use crate::keys::now_ms;

const ALLOW: &[&str] = &["--secret", "db/main", "--secret", "payments/*"];

async fn get(
    client: &mut ValidatorServiceClient<Channel>,
    name: &str,
    include_previous: bool,
) -> Result<pb::GetSecretValueResponse, Status> {
    client
        .get_secret(pb::GetSecretValueRequest {
            name: name.into(),
            include_previous,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn code(client: &mut ValidatorServiceClient<Channel>, name: &str) -> Code {
    get(client, name, false)
        .await
        .err()
        .map_or(Code::Ok, |status| status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_reads_make_one_issuer_read_and_later_reads_none() {
    let issuer = FakeIssuer::start(&[]).await;
    issuer.secrets.register("db/main", b"pw-one");
    issuer.secrets.set_delay(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), ALLOW).await;
    wait_serving(&sidecar).await;
    let reads = (0..40).map(|_| {
        let client = sidecar.client();
        async move { get(&mut client.await, "db/main", false).await.unwrap() }
    });
    let answers = futures_util::future::join_all(reads).await;
    assert!(
        answers
            .iter()
            .all(|answer| answer.value == b"pw-one" && answer.version == 1)
    );
    assert_eq!(issuer.secrets.reads(), 1);
    let mut client = sidecar.client().await;
    for _ in 0..20 {
        let answer = get(&mut client, "db/main", true).await.unwrap();
        assert_eq!(
            (
                answer.name.as_str(),
                answer.version,
                answer.staleness_seconds
            ),
            ("db/main", 1, 0)
        );
        // No previous version yet.
        assert_eq!(
            (answer.previous_version, answer.previous_value.len()),
            (0, 0)
        );
    }
    assert_eq!(issuer.secrets.reads(), 1);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_rotation_is_served_within_a_second_with_previous_during_the_overlap() {
    let issuer = FakeIssuer::start(&[]).await;
    issuer.secrets.register("payments/stripe", b"sk-one");
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), ALLOW).await;
    wait_serving(&sidecar).await;
    let mut client = sidecar.client().await;
    assert_eq!(
        get(&mut client, "payments/stripe", false)
            .await
            .unwrap()
            .version,
        1
    );

    let rotated = Instant::now();
    assert_eq!(
        issuer.secrets.rotate("payments/stripe", b"sk-two", false),
        2
    );
    let mut latest = 0;
    while latest != 2 && rotated.elapsed() < Duration::from_secs(3) {
        latest = get(&mut client, "payments/stripe", false)
            .await
            .unwrap()
            .version;
    }
    let took = rotated.elapsed();
    assert_eq!(latest, 2, "the rotation never reached the sidecar");
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    let both = get(&mut client, "payments/stripe", true).await.unwrap();
    assert_eq!(both.value, b"sk-two");
    assert_eq!(
        (both.previous_version, both.previous_value.as_slice()),
        (1, &b"sk-one"[..])
    );
    let plain = get(&mut client, "payments/stripe", false).await.unwrap();
    assert_eq!((plain.previous_version, plain.previous_value.len()), (0, 0));

    // An emergency rotation revokes previous at once: it is never served again.
    issuer.secrets.rotate("payments/stripe", b"sk-three", true);
    assert!(
        eventually(Duration::from_secs(1), || {
            let mut client = client.clone();
            async move {
                let answer = get(&mut client, "payments/stripe", true).await.unwrap();
                answer.version == 3 && answer.previous_version == 0
            }
        })
        .await
    );
    // One read per version, no more.
    assert_eq!(issuer.secrets.reads(), 3);
    sidecar.stop().await;
    // Memory only: the persisted bundle never holds a value.
    let persisted = std::fs::read(sidecar_bundle(&dir)).unwrap_or_default();
    for value in [&b"sk-one"[..], b"sk-two", b"sk-three"] {
        assert!(!persisted.windows(value.len()).any(|window| window == value));
    }
}

fn sidecar_bundle(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("bundle.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_allow_list_or_malformed_never_reach_the_issuer() {
    let issuer = FakeIssuer::start(&[]).await;
    issuer.secrets.register("db/other", b"not-yours");
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), ALLOW).await;
    wait_serving(&sidecar).await;
    let mut client = sidecar.client().await;
    for name in ["db/other", "db/main2", "payments", "db"] {
        assert_eq!(
            code(&mut client, name).await,
            Code::PermissionDenied,
            "{name}"
        );
    }
    let long = format!("payments/{}", "a".repeat(200));
    let nul = "payments/a\0b".to_owned();
    for name in ["", "../db/main", "Payments/x", "payments/é", &long, &nul] {
        assert_eq!(
            code(&mut client, name).await,
            Code::InvalidArgument,
            "{name:?}"
        );
    }
    // A name of 200 KB is refused without being echoed.
    let huge = "p".repeat(200_000);
    let status = get(&mut client, &huge, false).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() < 200);
    assert_eq!(issuer.secrets.reads(), 0);
    // An allowed unknown name does ask, and is NOT_FOUND.
    assert_eq!(code(&mut client, "payments/nope").await, Code::NotFound);
    assert_eq!(code(&mut client, "payments/nope").await, Code::NotFound);
    assert_eq!(
        issuer.secrets.reads(),
        1,
        "unknown names are remembered briefly"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_without_the_scope_gets_permission_denied_and_nothing_cached() {
    let issuer = FakeIssuer::start(&[]).await;
    issuer.secrets.register("payments/a", b"value-a");
    issuer.secrets.deny("payments/a", true);
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), ALLOW).await;
    wait_serving(&sidecar).await;
    let mut client = sidecar.client().await;
    assert_eq!(
        code(&mut client, "payments/a").await,
        Code::PermissionDenied
    );
    assert_eq!(
        code(&mut client, "payments/a").await,
        Code::PermissionDenied
    );
    // Nothing cached: each read asked again.
    assert_eq!(issuer.secrets.reads(), 2);
    issuer.secrets.deny("payments/a", false);
    assert_eq!(
        get(&mut client, "payments/a", false).await.unwrap().value,
        b"value-a"
    );
    // The scope is taken away, then the secret rotates: the refetch is refused and the
    // cached value is dropped, not served.
    issuer.secrets.deny("payments/a", true);
    issuer.secrets.rotate("payments/a", b"value-b", false);
    assert!(
        eventually(Duration::from_secs(2), || {
            let mut client = client.clone();
            async move { code(&mut client, "payments/a").await == Code::PermissionDenied }
        })
        .await
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_leaves_the_cached_value_served_until_max_staleness() {
    let clock = Arc::new(ManualClock::new(UnixMillis(now_ms())));
    let issuer = FakeIssuer::start(&[]).await;
    issuer.secrets.register("db/main", b"pw-one");
    let dir = tempfile::tempdir().unwrap();
    let mut args = ALLOW.to_vec();
    args.extend(["--secret-max-staleness-seconds", "60"]);
    let sidecar = Sidecar::start_with_clock(&issuer.url(), dir.path(), &args, clock.clone()).await;
    wait_serving(&sidecar).await;
    let mut client = sidecar.client().await;
    assert_eq!(
        get(&mut client, "db/main", false)
            .await
            .unwrap()
            .staleness_seconds,
        0
    );

    // The issuer goes quiet: no heartbeat confirms the value, reads fail.
    issuer.set_heartbeats(false);
    issuer.secrets.set_unreachable(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.advance(Duration::from_secs(30));
    let served = get(&mut client, "db/main", false).await.unwrap();
    assert_eq!(served.value, b"pw-one");
    assert!(
        (30..=31).contains(&served.staleness_seconds),
        "{}",
        served.staleness_seconds
    );
    clock.advance(Duration::from_secs(20));
    let served = get(&mut client, "db/main", true).await.unwrap();
    assert!(
        (50..=51).contains(&served.staleness_seconds),
        "{}",
        served.staleness_seconds
    );
    let asked = issuer.secrets.reads();
    // Past the bound: fail closed.
    clock.advance(Duration::from_secs(11));
    let refused = get(&mut client, "db/main", false).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(!refused.message().contains("pw-one"));
    // An outage costs at most one issuer read per name per second, not one per call.
    for _ in 0..20 {
        assert_eq!(code(&mut client, "db/main").await, Code::Unavailable);
    }
    assert!(
        issuer.secrets.reads() <= asked + 2,
        "{} reads",
        issuer.secrets.reads()
    );
    // The issuer is back: served again, fresh.
    issuer.secrets.set_unreachable(false);
    clock.advance(Duration::from_secs(2));
    let back = get(&mut client, "db/main", false).await.unwrap();
    assert_eq!(
        (back.value.as_slice(), back.staleness_seconds),
        (&b"pw-one"[..], 0)
    );
    sidecar.stop().await;
}

#[test]
fn secret_flags_are_checked_before_anything_starts() {
    let parse = |extra: &[&str]| {
        let mut args = vec!["tessera-sidecar", "--issuer-token", "tbc_x"];
        args.extend_from_slice(extra);
        tessera_sidecar::SidecarConfig::parse_from(args)
    };
    let config = parse(&["--secret", "db/main", "--secret", "payments/*"]).unwrap();
    let secrets = &config.credentials.secrets;
    assert!(secrets.allow.allows("db/main") && secrets.allow.allows("payments/x"));
    assert!(!secrets.allow.allows("db/other"));
    assert_eq!(secrets.max_staleness, Duration::from_secs(300));
    assert!(parse(&[]).unwrap().credentials.secrets.allow.is_empty());
    for bad in [
        &["--secret", "DB"][..],
        &["--secret", "a*b"],
        &["--secret-max-staleness-seconds", "0"],
        &["--secret-max-staleness-seconds", "86401"],
    ] {
        let error = parse(bad).unwrap_err();
        assert_eq!(error.exit_code(), 64, "{bad:?}");
        assert!(error.to_string().contains("secret"), "{error}");
    }
}
