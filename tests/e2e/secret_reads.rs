//! Secret reads through real sidecars (issue 12 point 4, seed 003 "cached secret reads
//! with outage fallback"): a secret registered at the real issuer (random rotator) is
//! read through `tessera-sidecar`'s `GetSecret` with the sidecar's own credential
//! (`secrets:read:<name>`); a rotation at the issuer reaches the sidecar within 1 s
//! (pushed `secret_rotated` event), `previous` is served during the overlap; with the
//! issuer killed the cached value is still served with a growing staleness, then refused
//! (UNAVAILABLE) past `--secret-max-staleness-seconds`, and served again once the issuer
//! is back on its address. Attack cases are in `attack/secret_reads.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tessera_proto::v1 as pb;
use tessera_proto::v1::secret_service_client::SecretServiceClient;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::sidecar::harness::{RestartedIssuer, Sidecar, send_sigkill};
use crate::standing::harness::{Standing, credential_file, validator};
use crate::support::grpc::with_bearer;
use crate::support::wait::{patience, poll_until};

/// The longest a rotation may take to reach a sidecar (issue 12 point 4).
pub const ROTATION_LIMIT: Duration = Duration::from_secs(1);
/// The sidecar's series of issuer reads, by outcome.
pub const FETCHES: &str = "tessera_sidecar_secret_fetches_total";

/// Registers `name` (random rotator, 40 characters) as admin.
pub fn register(standing: &Standing, name: &str) -> pb::SecretInfo {
    let mut client = SecretServiceClient::new(standing.channel.clone());
    let request = with_bearer(
        pb::RegisterSecretRequest {
            name: name.to_owned(),
            kind: pb::RotatorKind::Random as i32,
            rotator: Some(pb::RotatorConfig {
                config: Some(pb::rotator_config::Config::Random(pb::RandomRotator {
                    length: 40,
                    alphabet: String::new(),
                })),
            }),
            owner: "e2e".into(),
            description: "secret read through sidecars".into(),
            reason: "e2e".into(),
            ..Default::default()
        },
        &standing.admin,
    );
    standing
        .runtime
        .block_on(client.register_secret(request))
        .unwrap_or_else(|status| panic!("RegisterSecret({name}) failed: {status:?}"))
        .into_inner()
}

/// Rotates `name` now as admin; returns the version now current.
pub fn rotate(standing: &Standing, name: &str, emergency: bool) -> u64 {
    let mut client = SecretServiceClient::new(standing.channel.clone());
    let request = with_bearer(
        pb::RotateSecretRequest {
            name: name.to_owned(),
            emergency,
            reason: "e2e".into(),
        },
        &standing.admin,
    );
    standing
        .runtime
        .block_on(client.rotate_secret(request))
        .unwrap_or_else(|status| panic!("RotateSecret({name}) failed: {status:?}"))
        .into_inner()
        .version
}

/// `ReadSecret(name)` at the issuer with the credential in `credential_file`.
pub fn read_at_issuer(
    standing: &Standing,
    credential_file: &std::path::Path,
    name: &str,
) -> pb::ReadSecretResponse {
    let credential = crate::support::issuer::read_trimmed(credential_file);
    let mut client = SecretServiceClient::new(standing.channel.clone());
    let request = with_bearer(
        pb::ReadSecretRequest {
            name: name.to_owned(),
            include_previous: true,
        },
        &credential,
    );
    standing
        .runtime
        .block_on(client.read_secret(request))
        .unwrap_or_else(|status| panic!("ReadSecret({name}) at the issuer failed: {status:?}"))
        .into_inner()
}

/// A credential for sidecars reading secrets: `bundle:read` plus `scopes`.
pub fn reader_credential(standing: &Standing, name: &str, scopes: &[&str]) -> PathBuf {
    let mut all = vec!["bundle:read"];
    all.extend_from_slice(scopes);
    credential_file(&standing.issuer, standing.root.path(), name, &all, &[])
}

/// `GetSecret` at a sidecar.
pub fn get_secret(
    standing: &Standing,
    client: &mut ValidatorServiceClient<Channel>,
    name: &str,
    include_previous: bool,
) -> Result<pb::GetSecretValueResponse, Status> {
    standing
        .runtime
        .block_on(client.get_secret(pb::GetSecretValueRequest {
            name: name.to_owned(),
            include_previous,
        }))
        .map(tonic::Response::into_inner)
}

/// A `ValidatorService` client over `sidecar`'s socket.
pub fn sidecar_client(standing: &Standing, sidecar: &Sidecar) -> ValidatorServiceClient<Channel> {
    standing.runtime.block_on(validator(&sidecar.socket))
}

#[test]
fn sidecar_get_secret_follows_a_rotation_within_1s_and_serves_its_cache_through_an_outage() {
    const NAME: &str = "app/db-password";
    // Heartbeats every second: the stream confirms the cached value until the kill.
    let mut standing = Standing::start(&["--heartbeat-seconds", "1"]);
    let registered = register(&standing, NAME);
    assert_eq!(registered.name, NAME);
    let credential = reader_credential(
        &standing,
        "secret-reader",
        &[&format!("secrets:read:{NAME}")],
    );
    let mut sidecar = standing
        .sidecar_with("secrets", &credential)
        .args(["--secret", NAME, "--secret-max-staleness-seconds", "10"])
        .start();
    let mut client = sidecar_client(&standing, &sidecar);

    // 1. The current value, as the issuer holds it.
    let first = get_secret(&standing, &mut client, NAME, true).expect("GetSecret");
    let at_issuer = read_at_issuer(&standing, &credential, NAME);
    let current = at_issuer.current.expect("a current version");
    assert_eq!(
        (first.version, &first.value),
        (current.version, &current.value)
    );
    assert_eq!(first.value.len(), 40);
    assert_eq!(first.staleness_seconds, 0);

    // 2. A rotation at the issuer reaches the sidecar within 1 s.
    let rotated_at = Instant::now();
    let version = rotate(&standing, NAME, false);
    assert!(version > first.version, "rotation made version {version}");
    let seen = poll_until(Duration::from_secs(3), Duration::from_millis(10), || {
        let answer = get_secret(&standing, &mut client, NAME, false).ok()?;
        (answer.version == version).then(|| (rotated_at.elapsed(), answer))
    });
    let (took, rotated) = seen.unwrap_or_else(|| {
        panic!(
            "the rotation never reached the sidecar; log:\n{}",
            sidecar.log()
        )
    });
    eprintln!("rotation reached the sidecar in {took:?}");
    assert!(
        took <= ROTATION_LIMIT,
        "the rotation took {took:?} to reach the sidecar"
    );
    assert_ne!(rotated.value, first.value);
    // During the overlap, `previous` is the value served before.
    let both = get_secret(&standing, &mut client, NAME, true).expect("GetSecret with previous");
    assert_eq!(both.value, rotated.value);
    assert_eq!(
        (both.previous_version, &both.previous_value),
        (first.version, &first.value)
    );
    let reads_before_outage = sidecar.metric(&format!("{FETCHES}{{outcome=\"ok\"}}"));

    // 3. The issuer dies: the cached value is still served, its staleness growing.
    send_sigkill(standing.issuer.pid());
    assert!(
        standing
            .issuer
            .wait_exit(patience(Duration::from_secs(10)))
            .is_some(),
        "the issuer survived SIGKILL"
    );
    let killed_at = Instant::now();
    let during = get_secret(&standing, &mut client, NAME, false).expect("served while down");
    assert_eq!(during.value, rotated.value);
    let grown = poll_until(Duration::from_secs(12), Duration::from_millis(200), || {
        let answer = get_secret(&standing, &mut client, NAME, false)
            .unwrap_or_else(|status| panic!("refused before max staleness: {status:?}"));
        assert_eq!(answer.value, rotated.value);
        (answer.staleness_seconds >= 7).then_some(answer.staleness_seconds)
    });
    assert!(
        grown.is_some(),
        "staleness never grew; log:\n{}",
        sidecar.log()
    );

    // 4. Past the configured staleness (10 s): fail closed.
    let refused = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        get_secret(&standing, &mut client, NAME, false).err()
    })
    .unwrap_or_else(|| panic!("still served {:?} after the kill", killed_at.elapsed()));
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        killed_at.elapsed() >= Duration::from_secs(8),
        "refused after only {:?}",
        killed_at.elapsed()
    );

    // 5. The issuer is back on its address: served again, fresh.
    let restarted = RestartedIssuer::start(
        &standing.issuer,
        &standing.root.path().join("restarted.log"),
    );
    let back = poll_until(
        patience(Duration::from_secs(15)),
        Duration::from_millis(100),
        || get_secret(&standing, &mut client, NAME, false).ok(),
    )
    .unwrap_or_else(|| {
        panic!(
            "never served after the restart; sidecar log:\n{}\nissuer log:\n{}",
            sidecar.log(),
            restarted.log()
        )
    });
    assert_eq!((back.version, back.value), (version, rotated.value));
    assert_eq!(back.staleness_seconds, 0);
    assert!(sidecar.metric(&format!("{FETCHES}{{outcome=\"ok\"}}")) > reads_before_outage);
    sidecar.stop(Duration::from_secs(10));
    drop(restarted);
}
