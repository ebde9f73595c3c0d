//! Issue 4's journey end to end with the real binaries: login (`session create`) →
//! validate at the sidecar → refresh → the old access token stays valid until it expires →
//! the rotated refresh token is reused after the grace window → the family is revoked →
//! the sidecar rejects every access token of the family within 1 s. Then logout of another
//! session through the CLI, pushed the same way.

use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_proto::v1 as pb;

use super::harness::{Stack, assert_rejected};

/// Issue 4: the sidecar rejects a revoked family's tokens within 1 s.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(1);
/// The issuer's reuse-grace window in this test.
const GRACE_SECONDS: u64 = 1;

fn field(value: &Value, name: &str) -> String {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("missing {name} in {value}"))
        .to_owned()
}

/// Polls the sidecar until `token` is rejected as REVOKED; returns the time it took.
fn time_until_revoked(
    client: &super::harness::SocketClient,
    token: &str,
    started: Instant,
) -> Duration {
    loop {
        let response = client.validate(token);
        if !response.valid && response.reason() == pb::Reason::Revoked {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "token still accepted 5 s after revocation: {response:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn login_refresh_reuse_revokes_the_family_at_the_sidecar_within_one_second() {
    let grace = GRACE_SECONDS.to_string();
    let stack = Stack::start(&["--refresh-reuse-grace-seconds", &grace]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();
    let issuer = &stack.issuer;

    let login = issuer.cli_json(&[
        "session",
        "create",
        "--subject",
        "alice",
        "--tenant",
        "acme",
        "--role",
        "staff",
    ]);
    let first_access = field(&login, "access_token");
    let first_refresh = field(&login, "refresh_token");
    assert!(
        client.validate(&first_access).valid,
        "login token validates at the sidecar"
    );

    // Taken before the rotation: the grace window cannot close before `rotated_before + grace`.
    let rotated_before = Instant::now();
    let refreshed = issuer.cli_json(&["session", "refresh", &first_refresh]);
    let second_access = field(&refreshed, "access_token");
    let second_refresh = field(&refreshed, "refresh_token");
    assert_ne!(second_refresh, first_refresh);
    assert_eq!(field(&refreshed, "session_id"), field(&login, "session_id"));
    assert!(
        client.validate(&second_access).valid,
        "refreshed token validates"
    );
    assert!(
        client.validate(&first_access).valid,
        "the old access token stays valid until it expires"
    );

    // Present the rotated token until the grace window closes: within it the same
    // successor comes back; the first presentation past it is reuse, refused.
    let (reuse, returned) = loop {
        let started = Instant::now();
        let presented = issuer.cli(&["session", "refresh", &first_refresh, "--json"]);
        let returned = started.elapsed();
        if !presented.success() {
            break (presented, returned);
        }
        let again: Value = serde_json::from_str(&presented.stdout).expect("refresh prints JSON");
        assert_eq!(
            field(&again, "refresh_token"),
            second_refresh,
            "within the grace window the rotated token returns its successor"
        );
        assert!(
            rotated_before.elapsed() < Duration::from_secs(GRACE_SECONDS + 10),
            "the rotated token is still accepted long after the grace window"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        rotated_before.elapsed() >= Duration::from_secs(GRACE_SECONDS),
        "reuse refused before the grace window closed"
    );
    let stderr = &reuse.stderr;
    assert!(stderr.contains("reuse"), "the refusal says why: {stderr}");
    let after_return = Instant::now();
    for token in [&first_access, &second_access] {
        let delay = time_until_revoked(&client, token, after_return);
        assert!(
            delay < PROPAGATION_LIMIT,
            "family token accepted {delay:?} after the refusal"
        );
        eprintln!(
            "family revocation reached the sidecar {delay:?} after the CLI returned ({returned:?} CLI call)"
        );
    }
    assert_rejected(
        &client.validate(&first_access),
        pb::Reason::Revoked,
        "first access token",
    );
    let status = issuer.cli(&["session", "refresh", &second_refresh]);
    assert!(
        !status.success(),
        "the family's current refresh token is dead too"
    );

    // A second session, logged out through the CLI: same push.
    let other = issuer.cli_json(&["session", "create", "--subject", "bob", "--tenant", "acme"]);
    let other_access = field(&other, "access_token");
    assert!(client.validate(&other_access).valid);
    let output = issuer.cli(&[
        "session",
        "logout",
        &field(&other, "session_id"),
        "--tenant",
        "acme",
    ]);
    assert!(output.success(), "logout: {}", output.stderr);
    let delay = time_until_revoked(&client, &other_access, Instant::now());
    assert!(
        delay < PROPAGATION_LIMIT,
        "logout reached the sidecar after {delay:?}"
    );
}
