//! Attack cases: emergency. The attacker has copied the issuer's material (database, KEK),
//! so every private key the issuer held is stolen — the signer, but also the retiring key
//! that still verifies through its overlap and the pending successor. After an emergency
//! (`emergency --global`, `keys rotate --emergency`) a token the attacker mints with any
//! of them must be refused with KEY_REVOKED at a sidecar, the wrapped copies must be gone
//! from the database files, and the operator must be told every key that was revoked.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tessera_proto::v1 as pb;

use crate::key_secrecy::{database_bytes, find, wrapped_private_keys};
use crate::sidecar::harness::{
    Issued, SocketClient, Stack, assert_rejected, assert_valid, describe, issue,
};
use crate::support::issuer::Issuer;
use crate::support::wait::{patience, poll_until};

/// The access set in the state an attacker likes best: `k0` retiring (verifies for
/// another week), `k1` signing, `k2` published and pending. Returns a token of each of the
/// first two and the three kids.
struct ThreeKeys {
    retiring: Issued,
    active: Issued,
    pending_kid: String,
}

#[test]
fn token_of_the_former_retiring_key_after_emergency_global_is_key_revoked() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();
    let keys = retiring_active_and_pending(&stack.issuer, &client);
    let wrapped_before = wrapped_private_keys(&stack.issuer.data_dir);

    let emergency = stack.issuer.cli_json(&[
        "emergency",
        "--global",
        "--incident",
        "inc-stolen-db",
        "--reason",
        "database copied",
    ]);

    let revoked = kids(&emergency["revoked_kids"]);
    for kid in [&keys.retiring.kid, &keys.active.kid, &keys.pending_kid] {
        assert!(revoked.contains(kid), "{kid} not named: {emergency}");
    }
    // Every key that had a private part (both sets) is named, and nothing else.
    let held: BTreeSet<String> = wrapped_before.iter().map(|key| key.kid.clone()).collect();
    assert_eq!(
        revoked, held,
        "revoked_kids must be every key held: {emergency}"
    );
    assert_eq!(emergency["replayed"], false, "{emergency}");
    assert_eq!(
        emergency["new_kids"].as_array().map(Vec::len),
        Some(3),
        "one successor per key set (access, action, webhook): {emergency}"
    );

    for token in [&keys.retiring, &keys.active] {
        assert_key_revoked_eventually(&client, token, &sidecar.log());
    }
    assert_material_gone(&stack.issuer, &wrapped_before);

    // Text output: a second incident revokes the two successors and names each.
    let second = stack.issuer.cli(&[
        "emergency",
        "--global",
        "--incident",
        "inc-second",
        "--reason",
        "still compromised",
    ]);
    second.assert_success("emergency --global (text)");
    for kid in emergency["new_kids"].as_array().into_iter().flatten() {
        let kid = kid.as_str().unwrap_or_default();
        assert!(
            second.stdout.contains(&format!("revoked key {kid}")),
            "{kid} not named in:\n{}",
            second.stdout
        );
    }
}

#[test]
fn token_of_the_former_retiring_key_after_emergency_key_rotation_is_key_revoked() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();
    let keys = retiring_active_and_pending(&stack.issuer, &client);
    let wrapped_before = wrapped_private_keys(&stack.issuer.data_dir);

    // Text output: the operator reads the revoked keys, one line each.
    let rotated = stack.issuer.cli(&[
        "keys",
        "rotate",
        "--key-set",
        "access",
        "--emergency",
        "--reason",
        "signer leaked",
    ]);
    rotated.assert_success("keys rotate --emergency");
    for kid in [&keys.retiring.kid, &keys.active.kid, &keys.pending_kid] {
        assert!(
            rotated.stdout.contains(&format!("revoked key {kid}")),
            "{kid} not named in:\n{}",
            rotated.stdout
        );
    }

    for token in [&keys.retiring, &keys.active] {
        assert_key_revoked_eventually(&client, token, &sidecar.log());
    }
    let access_kids: Vec<_> = wrapped_before
        .into_iter()
        .filter(|key| key.key_set.as_str() == "access")
        .collect();
    assert_material_gone(&stack.issuer, &access_kids);
    // The other key set was not part of the emergency: its signer keeps its key.
    let remaining = wrapped_private_keys(&stack.issuer.data_dir);
    assert!(
        remaining.iter().any(|key| key.key_set.as_str() == "action"),
        "the action set lost its signer"
    );

    // JSON output names the same keys (the successor of a second emergency here).
    let again = stack.issuer.cli_json(&[
        "keys",
        "rotate",
        "--emergency",
        "--reason",
        "successor leaked too",
    ]);
    let previous = again["previous_kid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        kids(&again["revoked_kids"]),
        BTreeSet::from([previous]),
        "{again}"
    );
}

#[test]
fn retrying_an_incident_whose_work_failed_is_not_answered_replayed() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let issued = issuer.cli_json(&["token", "issue", "--subject", "alice", "--tenant", "acme"]);
    let token = issued["token"].as_str().unwrap().to_owned();
    let emergency = [
        "emergency",
        "--global",
        "--incident",
        "inc-retry",
        "--reason",
        "host compromised",
    ];

    // Make the work (the key-set commit) fail after the incident id has been claimed.
    let database = rusqlite::Connection::open(issuer.data_dir.join("tessera.db")).unwrap();
    database.busy_timeout(Duration::from_secs(5)).unwrap();
    database
        .execute_batch(
            "CREATE TRIGGER injected_failure BEFORE UPDATE ON key_sets \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let failed = issuer.cli(&emergency);
    assert!(
        !failed.success(),
        "the emergency succeeded despite the injected failure"
    );
    database
        .execute_batch("DROP TRIGGER injected_failure;")
        .unwrap();

    let retried = issuer.cli_json(&emergency);
    assert_eq!(retried["replayed"], false, "{retried}");
    assert!(
        retried["revoked_kids"]
            .as_array()
            .is_some_and(|kids| kids.iter().any(|kid| *kid == issued["kid"])),
        "{retried}"
    );
    let introspected = issuer.cli_json(&["token", "introspect", &token]);
    assert_eq!(introspected["active"], false, "{introspected}");
    assert_eq!(introspected["reason"], "key_revoked", "{introspected}");
    // And now the incident is handled: a third call is a replay.
    let replay = issuer.cli_json(&emergency);
    assert_eq!(replay["replayed"], true, "{replay}");
}

#[test]
fn an_emergency_that_fails_between_key_sets_changes_nothing_and_its_retry_does_it_all() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let issued = issuer.cli_json(&["token", "issue", "--subject", "alice", "--tenant", "acme"]);
    let token = issued["token"].as_str().unwrap().to_owned();
    let keys_before = key_states(&issuer);
    let wrapped_before = wrapped_private_keys(&issuer.data_dir);
    let emergency = [
        "emergency",
        "--global",
        "--incident",
        "inc-half",
        "--reason",
        "host compromised",
    ];

    // Fail the second key set's rotation, after the first one's has been written.
    let database = rusqlite::Connection::open(issuer.data_dir.join("tessera.db")).unwrap();
    database.busy_timeout(Duration::from_secs(5)).unwrap();
    database
        .execute_batch(
            "CREATE TRIGGER injected_failure BEFORE UPDATE ON key_sets \
             WHEN NEW.name = 'action' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let failed = issuer.cli(&emergency);
    assert!(
        !failed.success(),
        "the emergency succeeded despite the injected failure"
    );
    // Nothing of it is in force: the access set was not rotated either.
    assert_eq!(key_states(&issuer), keys_before, "a half-done emergency");
    assert_eq!(
        wrapped_private_keys(&issuer.data_dir)
            .iter()
            .map(|key| key.kid.clone())
            .collect::<BTreeSet<_>>(),
        wrapped_before
            .iter()
            .map(|key| key.kid.clone())
            .collect::<BTreeSet<_>>()
    );
    let introspected = issuer.cli_json(&["token", "introspect", &token]);
    assert_eq!(introspected["active"], true, "{introspected}");
    database
        .execute_batch("DROP TRIGGER injected_failure;")
        .unwrap();

    // The retry, with the same incident id, does all of it.
    let retried = issuer.cli_json(&emergency);
    assert_eq!(retried["replayed"], false, "{retried}");
    let revoked = kids(&retried["revoked_kids"]);
    let held: BTreeSet<String> = wrapped_before.iter().map(|key| key.kid.clone()).collect();
    assert_eq!(revoked, held, "every key held is revoked: {retried}");
    let introspected = issuer.cli_json(&["token", "introspect", &token]);
    assert_eq!(introspected["active"], false, "{introspected}");
    assert_eq!(introspected["reason"], "key_revoked", "{introspected}");
    let replay = issuer.cli_json(&emergency);
    assert_eq!(replay["replayed"], true, "{replay}");
}

/// Builds [`ThreeKeys`] and checks the sidecar accepts both tokens before the emergency.
fn retiring_active_and_pending(issuer: &Issuer, client: &SocketClient) -> ThreeKeys {
    let retiring = issue(issuer, "alice", 600, &[]);
    issuer.cli_json(&["keys", "rotate", "--reason", "routine"]);
    let active = issue(issuer, "bob", 600, &[]);
    let pending = issuer.cli_json(&[
        "keys",
        "rotate",
        "--reason",
        "prepare next",
        "--prepublish-seconds",
        "3600",
    ]);
    let pending_kid = pending["new_kid"].as_str().unwrap_or_default().to_owned();
    assert_ne!(retiring.kid, active.kid);
    let states = key_states(issuer);
    assert_eq!(
        states.get(&retiring.kid).map(String::as_str),
        Some("retiring")
    );
    assert_eq!(states.get(&active.kid).map(String::as_str), Some("active"));
    assert_eq!(
        states.get(&pending_kid).map(String::as_str),
        Some("pending")
    );
    let accepted = poll_until(
        patience(Duration::from_secs(10)),
        Duration::from_millis(20),
        || {
            let response = client.validate(&retiring.token);
            response.valid.then_some(())
        },
    );
    assert!(
        accepted.is_some(),
        "the sidecar never accepted the retiring key's token"
    );
    assert_valid(
        &client.validate(&retiring.token),
        &retiring.kid,
        "retiring key's token",
    );
    assert_valid(
        &client.validate(&active.token),
        &active.kid,
        "signer's token",
    );
    ThreeKeys {
        retiring,
        active,
        pending_kid,
    }
}

/// Polls the sidecar until `token` is refused, then asserts the reason is KEY_REVOKED.
fn assert_key_revoked_eventually(client: &SocketClient, token: &Issued, sidecar_log: &str) {
    let refused = poll_until(
        patience(Duration::from_secs(10)),
        Duration::from_millis(10),
        || {
            let response = client.validate(&token.token);
            (!response.valid).then_some(response)
        },
    );
    let response = refused.unwrap_or_else(|| {
        panic!(
            "the sidecar still accepts a token of {} after the emergency: {}; log:\n{sidecar_log}",
            token.kid,
            describe(&client.validate(&token.token))
        )
    });
    assert_rejected(
        &response,
        pb::Reason::KeyRevoked,
        &format!("token of the revoked key {}", token.kid),
    );
}

/// Asserts the wrapped private key of every key in `revoked` is no longer stored: the
/// column is empty and its bytes are in neither the database nor its WAL (a deleted row
/// lingering in a free page or an old WAL frame is as good as stored to an attacker).
fn assert_material_gone(issuer: &Issuer, revoked: &[crate::key_secrecy::StoredWrappedKey]) {
    let still_stored: Vec<String> = wrapped_private_keys(&issuer.data_dir)
        .into_iter()
        .map(|key| key.kid)
        .filter(|kid| revoked.iter().any(|key| &key.kid == kid))
        .collect();
    assert!(
        still_stored.is_empty(),
        "wrapped keys kept: {still_stored:?}"
    );
    let database = database_bytes(&issuer.data_dir);
    for key in revoked {
        assert!(
            find(&database, &key.wrapped).is_none(),
            "the wrapped private key of {} is still in the database files",
            key.kid
        );
    }
}

fn kids(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list of kids: {value}"))
        .iter()
        .filter_map(|kid| kid.as_str().map(str::to_owned))
        .collect()
}

/// `kid → state` from `keys list --all`.
fn key_states(issuer: &Issuer) -> std::collections::BTreeMap<String, String> {
    let listed = issuer.cli_json(&["keys", "list", "--all"]);
    listed["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|key| {
            Some((
                key["kid"].as_str()?.to_owned(),
                key["state"].as_str()?.to_owned(),
            ))
        })
        .collect()
}
