//! Key rotation as the sidecar sees it: a rotation with prepublish (the successor reaches
//! the sidecar before it signs, tokens of the old kid stay valid through the overlap, new
//! tokens validate without an unknown-kid resync), and an emergency rotation, whose old
//! token the sidecar must reject within 1 s of the rotate command returning.
//!
//! The scheduled rotation itself cannot be driven here: `--rotate-every-days` is in whole
//! days (at least 1, and the prepublish must be shorter), and the binary has no clock
//! override. The scheduler moves keys through the same pending → active → retiring
//! schedule that `keys rotate --prepublish-seconds` creates, which is what the sidecar
//! acts on; this test drives that schedule by hand.

use std::time::{Duration, Instant};

use tessera_proto::v1 as pb;

use super::harness::{RESYNCS, REVISION, Stack, assert_rejected, assert_valid, describe, issue};
use crate::support::issuer::Issuer;
use crate::support::wait::{patience, poll_until};

/// Prepublish window of the manual rotation.
const PREPUBLISH_SECONDS: u64 = 5;
/// The requirement of issue 3: an emergency rotation reaches the sidecar within 1 s.
const EMERGENCY_LIMIT: Duration = Duration::from_secs(1);

#[test]
fn scheduled_rotation_keeps_old_tokens_valid_through_overlap() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();

    let old = issue(&stack.issuer, "alice", 600, &[]);
    assert_valid(
        &client.validate(&old.token),
        &old.kid,
        "token A before rotation",
    );
    let resyncs_before = sidecar.metric(RESYNCS);

    let rotated_at = Instant::now();
    let prepublish = PREPUBLISH_SECONDS.to_string();
    let rotated = stack.issuer.cli_json(&[
        "keys",
        "rotate",
        "--reason",
        "e2e rotation with prepublish",
        "--prepublish-seconds",
        &prepublish,
    ]);
    let new_kid = rotated["new_kid"]
        .as_str()
        .unwrap_or_else(|| panic!("no new_kid: {rotated}"))
        .to_owned();
    assert_eq!(rotated["previous_kid"], old.kid.as_str(), "{rotated}");
    assert_ne!(new_kid, old.kid);
    let revision = rotated["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision: {rotated}"));

    // Prepublish: the successor reaches the sidecar (a push) while the old key still signs.
    let pushed = poll_until(Duration::from_secs(2), Duration::from_millis(20), || {
        (sidecar.metric(REVISION) >= revision as f64).then_some(())
    });
    assert!(
        pushed.is_some(),
        "the sidecar did not reach revision {revision} within 2 s of the rotation; metrics:\n{}",
        sidecar.metrics()
    );
    assert_eq!(
        key_state(&stack.issuer, &new_kid).as_deref(),
        Some("pending"),
        "the successor must be pending during prepublish"
    );
    let during = issue(&stack.issuer, "carol", 600, &[]);
    assert!(
        rotated_at.elapsed() < Duration::from_secs(PREPUBLISH_SECONDS),
        "this machine is too slow to observe the {PREPUBLISH_SECONDS} s prepublish window"
    );
    assert_eq!(
        during.kid, old.kid,
        "a pending key signed before its activation"
    );
    assert_valid(
        &client.validate(&during.token),
        &old.kid,
        "token issued during prepublish",
    );

    // Activation: new tokens carry the new kid.
    let activation_deadline =
        Duration::from_secs(PREPUBLISH_SECONDS) + patience(Duration::from_secs(15));
    let new = poll_until(activation_deadline, Duration::from_millis(250), || {
        let issued = issue(&stack.issuer, "bob", 600, &[]);
        (issued.kid == new_kid).then_some(issued)
    })
    .unwrap_or_else(|| {
        panic!("no token signed by {new_kid} within {activation_deadline:?} of the rotation")
    });
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(PREPUBLISH_SECONDS - 1),
        "the successor signed {:?} after a rotation with {PREPUBLISH_SECONDS} s prepublish",
        rotated_at.elapsed()
    );
    let claims = assert_valid(
        &client.validate(&new.token),
        &new_kid,
        "token B of the new kid",
    )
    .clone();
    assert_eq!(claims.subject, "bob", "{claims:?}");
    assert_eq!(
        sidecar.metric(RESYNCS),
        resyncs_before,
        "the new kid was unknown to the sidecar at activation (it resynced): the prepublished \
         key did not reach it"
    );

    // Overlap: the old kid is retiring and its tokens stay valid.
    assert_eq!(
        key_state(&stack.issuer, &old.kid).as_deref(),
        Some("retiring")
    );
    assert_eq!(
        key_state(&stack.issuer, &new_kid).as_deref(),
        Some("active")
    );
    for (token, what) in [
        (&old.token, "token A after activation"),
        (&during.token, "prepublish-window token after activation"),
    ] {
        assert_valid(&client.validate(token), &old.kid, what);
    }
}

#[test]
fn emergency_rotation_rejects_old_tokens_within_one_second() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();

    let old = issue(&stack.issuer, "alice", 600, &[]);
    // Twice: the second answer comes from the verified-token cache, which the revocation
    // must also reach.
    for attempt in ["first", "cached"] {
        assert_valid(
            &client.validate(&old.token),
            &old.kid,
            &format!("token A before the emergency rotation ({attempt})"),
        );
    }

    // Poll from before the command starts, so the first rejection is timed even when it
    // lands before the CLI process has exited.
    let command_deadline = patience(Duration::from_secs(30));
    let poll = client.poll_in_background(
        &old.token,
        command_deadline + patience(Duration::from_secs(5)),
        Duration::from_millis(1),
        |response| !response.valid,
    );
    let command_started = Instant::now();
    let rotated =
        stack
            .issuer
            .cli_json(&["keys", "rotate", "--emergency", "--reason", "e2e emergency"]);
    let command_returned = Instant::now();
    assert_eq!(rotated["previous_kid"], old.kid.as_str(), "{rotated}");
    let new_kid = rotated["new_kid"]
        .as_str()
        .unwrap_or_else(|| panic!("no new_kid: {rotated}"))
        .to_owned();

    let (rejected_at, response, calls) = client.join(poll).unwrap_or_else(|last| {
        panic!(
            "the sidecar still accepts a token of the emergency-rotated key: {}; log:\n{}",
            describe(&last),
            sidecar.log()
        )
    });
    let relative = match rejected_at.checked_duration_since(command_returned) {
        Some(after) => format!("{after:?} after"),
        None => format!("{:?} before", command_returned - rejected_at),
    };
    eprintln!(
        "emergency rotation: the sidecar first rejected the old token {relative} the rotate \
         command returned ({:?} after the command started, which took {:?}; {calls} \
         validation calls; reason {})",
        rejected_at.saturating_duration_since(command_started),
        command_returned - command_started,
        response.reason().as_str_name()
    );
    assert_rejected(
        &response,
        pb::Reason::KeyRevoked,
        "token of the emergency-rotated key",
    );
    let delay = rejected_at.saturating_duration_since(command_returned);
    assert!(
        delay < EMERGENCY_LIMIT,
        "the sidecar took {delay:?} (> {EMERGENCY_LIMIT:?}) after the rotate command returned \
         to reject a token of the revoked key"
    );

    // The successor signs at once and the sidecar accepts its tokens.
    let new = issue(&stack.issuer, "bob", 600, &[]);
    assert_eq!(new.kid, new_kid, "the emergency successor is not signing");
    assert_valid(
        &client.validate(&new.token),
        &new_kid,
        "token of the successor",
    );
    assert_rejected(
        &client.validate(&old.token),
        pb::Reason::KeyRevoked,
        "token A, once more",
    );
}

/// The state of `kid` in `keys list --all`, if it is listed.
fn key_state(issuer: &Issuer, kid: &str) -> Option<String> {
    let listed = issuer.cli_json(&["keys", "list", "--all"]);
    listed["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|key| key["kid"] == kid)
        .and_then(|key| key["state"].as_str().map(str::to_owned))
}
