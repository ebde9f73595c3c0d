//! The sidecar through an issuer outage: it keeps validating when the issuer is killed;
//! a sidecar started while the issuer is down validates at once from the persisted bundle;
//! when the issuer comes back on the same address the running sidecar reconnects and
//! follows a rotation; and a sidecar started after a rotation made while none was running
//! catches up by resuming the stream (not by an unknown-kid resync).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use tessera_proto::v1 as pb;

use super::harness::{
    RESYNCS, REVISION, RestartedIssuer, SUBSCRIBED, SUBSCRIPTION_FAILED, Sidecar, Stack,
    accepts_connections, assert_rejected, assert_valid, issue, send_sigkill, tamper_signature,
};
use crate::support::wait::{patience, poll_until};

#[test]
fn sidecar_keeps_validating_when_the_issuer_dies_and_restarts_from_its_persisted_bundle() {
    let mut stack = Stack::start(&[]);
    let cache = stack.root.path().join("bundle-cache.json");
    let sidecar_named = |stack: &Stack, name: &str| stack.sidecar(name).bundle_cache(&cache);

    // 1. Issuer up, sidecar A subscribed, a token validates; the bundle is persisted (0600).
    let mut first = sidecar_named(&stack, "sidecar-a").start();
    let t1 = issue(&stack.issuer, "alice", 600, &[]);
    assert_valid(
        &first.client().validate(&t1.token),
        &t1.kid,
        "T1 at sidecar A",
    );
    let persisted = poll_until(
        patience(Duration::from_secs(5)),
        Duration::from_millis(50),
        || {
            std::fs::read_to_string(&cache)
                .ok()
                .filter(|text| text.contains(&t1.kid))
        },
    );
    assert!(
        persisted.is_some(),
        "sidecar A did not persist a bundle holding {} to {}",
        t1.kid,
        cache.display()
    );
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "bundle cache mode {mode:o}");

    // 2. SIGKILL the issuer: A keeps validating, on its open connection and on new ones.
    send_sigkill(stack.issuer.pid());
    assert!(
        stack
            .issuer
            .wait_exit(patience(Duration::from_secs(10)))
            .is_some(),
        "the issuer survived SIGKILL"
    );
    assert!(!accepts_connections(stack.issuer.grpc_addr));
    let client = first.client();
    assert_valid(
        &client.validate(&t1.token),
        &t1.kid,
        "T1 right after the kill",
    );
    // Once A has noticed the outage (a reconnection attempt failed), it still validates.
    let failures_before = first.metric(SUBSCRIPTION_FAILED);
    let noticed = poll_until(
        patience(Duration::from_secs(20)),
        Duration::from_millis(50),
        || (first.metric(SUBSCRIPTION_FAILED) > failures_before).then_some(()),
    );
    assert!(
        noticed.is_some(),
        "sidecar A never tried to reconnect to the dead issuer; log:\n{}",
        first.log()
    );
    assert_valid(
        &first.client().validate(&t1.token),
        &t1.kid,
        "T1 after a failed reconnection, new connection",
    );
    assert_rejected(
        &client.validate(&tamper_signature(&t1.token)),
        pb::Reason::BadSignature,
        "tampered T1 with the issuer down",
    );
    assert_eq!(
        first.readyz(),
        Some(200),
        "A not ready with the issuer down"
    );
    first.stop(patience(Duration::from_secs(10)));

    // 3. Sidecar B starts with the issuer still down and validates from the cache file.
    let mut second = sidecar_named(&stack, "sidecar-b").start();
    let client = second.client();
    assert_valid(
        &client.validate(&t1.token),
        &t1.kid,
        "T1 at sidecar B, started while the issuer is down",
    );
    eprintln!(
        "sidecar started from its persisted bundle with the issuer down: ready after {:?}",
        second.ready_after
    );
    assert!(
        second.ready_after < patience(Duration::from_secs(5)),
        "sidecar B took {:?} to be ready from its cache",
        second.ready_after
    );
    assert!(
        !accepts_connections(stack.issuer.grpc_addr),
        "the issuer must still be down"
    );
    assert_eq!(
        second.metric(SUBSCRIBED),
        0.0,
        "B cannot have subscribed: the issuer is down"
    );

    // 4. The issuer comes back on the same ports and data dir: B reconnects by itself and
    //    follows a rotation.
    let _restarted = RestartedIssuer::start(
        &stack.issuer,
        &stack.root.path().join("issuer-restarted.stderr.log"),
    );
    let reconnect = patience(Duration::from_secs(20));
    let reconnected = poll_until(reconnect, Duration::from_millis(100), || {
        (second.metric(SUBSCRIBED) >= 1.0).then_some(())
    });
    assert!(
        reconnected.is_some(),
        "sidecar B did not resubscribe within {reconnect:?} of the issuer's return; log:\n{}",
        second.log()
    );
    let rotated = stack
        .issuer
        .cli_json(&["keys", "rotate", "--reason", "e2e after restart"]);
    let k2 = rotated["new_kid"].as_str().expect("new_kid").to_owned();
    let r2 = rotated["revision"].as_u64().expect("revision");
    wait_for_revision(&second, r2, "B, after the rotation with B connected");
    let t2 = issue(&stack.issuer, "bob", 600, &[]);
    assert_eq!(t2.kid, k2);
    assert_valid(
        &client.validate(&t2.token),
        &k2,
        "T2 (new kid) at sidecar B",
    );
    assert_valid(&client.validate(&t1.token), &t1.kid, "T1 (retiring) at B");
    assert_eq!(
        second.metric(RESYNCS),
        0.0,
        "B needed an unknown-kid resync"
    );
    second.stop(patience(Duration::from_secs(10)));

    // 5. A rotation while no sidecar runs; sidecar C starts from the cache (older revision)
    //    and catches up through the stream before it sees any token of the new kid.
    let rotated = stack.issuer.cli_json(&[
        "keys",
        "rotate",
        "--reason",
        "e2e while the sidecar is away",
    ]);
    let k3 = rotated["new_kid"].as_str().expect("new_kid").to_owned();
    let r3 = rotated["revision"].as_u64().expect("revision");
    let t3 = issue(&stack.issuer, "carol", 600, &[]);
    assert_eq!(t3.kid, k3);
    let started = Instant::now();
    let third = sidecar_named(&stack, "sidecar-c").start();
    wait_for_revision(
        &third,
        r3,
        "C, started after a rotation made while it was away",
    );
    eprintln!(
        "sidecar restarted after a missed rotation: caught up to revision {r3} {:?} after start",
        started.elapsed()
    );
    let client = third.client();
    assert_valid(
        &client.validate(&t3.token),
        &k3,
        "T3 (rotated while away) at C",
    );
    assert_valid(&client.validate(&t2.token), &k2, "T2 at C");
    assert_valid(&client.validate(&t1.token), &t1.kid, "T1 at C");
    assert_eq!(
        third.metric(RESYNCS),
        0.0,
        "C learnt the new kid by an unknown-kid resync, not by resuming the stream"
    );
}

/// Waits (patience-scaled, 10 s) until `sidecar` holds bundle revision `revision`.
fn wait_for_revision(sidecar: &Sidecar, revision: u64, what: &str) {
    let deadline = patience(Duration::from_secs(10));
    let reached = poll_until(deadline, Duration::from_millis(50), || {
        (sidecar.metric(REVISION) >= revision as f64).then_some(())
    });
    assert!(
        reached.is_some(),
        "{what}: revision {} instead of {revision} after {deadline:?}; log:\n{}",
        sidecar.metric(REVISION),
        sidecar.log()
    );
}
