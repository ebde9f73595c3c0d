//! The admin CLI against a live issuer: list, rotate, revoke and emergency-rotate keys,
//! introspect a token across those changes, and read and verify the audit log; commands
//! that print a credential write it to a 0600 file with `--out` instead.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::support::issuer::Issuer;

#[test]
fn cli_keys_rotate_revoke_and_token_introspect() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());

    let first_kid = only_active_access_kid(&issuer);
    let issued = issuer.cli_json(&["token", "issue", "--subject", "alice", "--tenant", "acme"]);
    assert_eq!(issued["kid"], first_kid.as_str(), "{issued}");
    let token = issued["token"].as_str().unwrap().to_owned();

    // Manual rotation: the new key signs at once (the CLI's prepublish defaults to 0), the
    // old one keeps verifying.
    let rotated = issuer.cli_json(&["keys", "rotate", "--reason", "test"]);
    let second_kid = rotated["new_kid"].as_str().expect("new_kid").to_owned();
    assert_eq!(rotated["previous_kid"], first_kid.as_str(), "{rotated}");
    assert_ne!(second_kid, first_kid);
    assert_eq!(key_state(&issuer, &second_kid).as_deref(), Some("active"));
    assert_eq!(key_state(&issuer, &first_kid).as_deref(), Some("retiring"));
    assert_eq!(only_active_access_kid(&issuer), second_kid);
    let introspected = issuer.cli_json(&["token", "introspect", &token]);
    assert_eq!(
        introspected["active"], true,
        "a token of the retiring key must stay active: {introspected}"
    );
    assert_eq!(introspected["claims"]["sub"], "alice", "{introspected}");
    let reissued = issuer.cli_json(&["token", "issue", "--subject", "bob", "--tenant", "acme"]);
    assert_eq!(reissued["kid"], second_kid.as_str(), "{reissued}");

    // Revoking the old key kills its tokens.
    issuer.cli_json(&["keys", "revoke", &first_kid, "--reason", "x"]);
    assert_eq!(key_state(&issuer, &first_kid).as_deref(), Some("revoked"));
    let introspected = issuer.cli_json(&["token", "introspect", &token]);
    assert_eq!(introspected["active"], false, "{introspected}");
    assert_eq!(introspected["reason"], "key_revoked", "{introspected}");

    // Emergency rotation revokes the predecessor at once.
    let emergency = issuer.cli_json(&[
        "keys",
        "rotate",
        "--emergency",
        "--reason",
        "suspected leak",
    ]);
    let third_kid = emergency["new_kid"].as_str().expect("new_kid").to_owned();
    assert_eq!(
        emergency["previous_kid"],
        second_kid.as_str(),
        "{emergency}"
    );
    assert_eq!(key_state(&issuer, &second_kid).as_deref(), Some("revoked"));
    assert_eq!(only_active_access_kid(&issuer), third_kid);
    let introspected =
        issuer.cli_json(&["token", "introspect", reissued["token"].as_str().unwrap()]);
    assert_eq!(introspected["active"], false, "{introspected}");
    assert_eq!(introspected["reason"], "key_revoked", "{introspected}");

    // The audit log records who did what and why.
    let audit = issuer.cli_json(&["audit", "list", "--limit", "200"]);
    let events = audit["events"].as_array().expect("events").clone();
    let event = |action: &str, target: &str| -> Value {
        events
            .iter()
            .find(|event| event["action"] == action && event["target"] == target)
            .cloned()
            .unwrap_or_else(|| panic!("no audit event {action} on {target} in {audit}"))
    };
    let created = event("key.create", &second_kid);
    assert_eq!(created["reason"], "test", "{created}");
    let rotation = events
        .iter()
        .find(|event| event["action"] == "key.rotate")
        .unwrap_or_else(|| panic!("no key.rotate event in {audit}"));
    assert_eq!(rotation["reason"], "test", "{rotation}");
    let revocation = event("key.revoke", &first_kid);
    assert_eq!(revocation["reason"], "x", "{revocation}");
    let emergency_revocation = event("key.revoke", &second_kid);
    assert_eq!(
        emergency_revocation["reason"], "suspected leak",
        "{emergency_revocation}"
    );
    for recorded in [&created, rotation, &revocation, &emergency_revocation] {
        let actor = recorded["actor"].as_str().unwrap_or("");
        assert!(
            !actor.is_empty() && actor != "system",
            "an admin action must name the calling client as actor: {recorded}"
        );
        assert!(
            !recorded["request_id"].as_str().unwrap_or("").is_empty(),
            "{recorded}"
        );
    }

    // The text form: a header row, then times in RFC 3339 UTC (--json keeps seconds).
    let table = issuer.cli(&["audit", "list", "--limit", "200"]);
    table.assert_success("audit list");
    let mut lines = table.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["SEQ", "TIME", "ACTION", "OUTCOME", "TARGET", "REASON"],
        "{}",
        table.stdout
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), events.len(), "{}", table.stdout);
    for (row, event) in rows.iter().zip(&events) {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[0], event["seq"].to_string(), "{row}");
        assert_eq!(
            fields[1],
            rfc3339_utc(event["at"].as_i64().expect("at")),
            "{row}"
        );
        assert_eq!(fields[2], event["action"].as_str().unwrap(), "{row}");
    }

    let verified = issuer.cli_json(&["audit", "verify"]);
    assert_eq!(verified["intact"], true, "{verified}");
    let plain = issuer.cli(&["audit", "verify"]);
    plain.assert_success("audit verify");
    assert!(plain.stdout.contains("intact"), "{}", plain.stdout);
}

/// Formats Unix seconds as RFC 3339 UTC with milliseconds, with `date` (an independent
/// implementation).
fn rfc3339_utc(seconds: i64) -> String {
    let output = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{seconds}"),
            "+%Y-%m-%dT%H:%M:%S.000Z",
        ])
        .output()
        .expect("date runs");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The kid of the single active `access` key (asserting there is exactly one).
fn only_active_access_kid(issuer: &Issuer) -> String {
    let listed = issuer.cli_json(&["keys", "list", "--key-set", "access"]);
    let active: Vec<&str> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|key| key["key_set"] == "access" && key["state"] == "active")
        .filter_map(|key| key["kid"].as_str())
        .collect();
    assert_eq!(
        active.len(),
        1,
        "exactly one active access key expected: {listed}"
    );
    active[0].to_owned()
}

/// The state of `kid` as `keys list --all` shows it.
fn key_state(issuer: &Issuer, kid: &str) -> Option<String> {
    let listed = issuer.cli_json(&["keys", "list", "--all"]);
    listed["keys"]
        .as_array()?
        .iter()
        .find(|key| key["kid"] == kid)
        .and_then(|key| key["state"].as_str())
        .map(str::to_owned)
}

#[test]
fn clients_create_out_writes_a_private_credential_file_that_works() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let out = root.path().join("issuer-client.credential");
    let out_arg = out.to_str().unwrap();

    let created = issuer.cli(&[
        "clients", "create", "--name", "billing", "--scope", "issue", "--out", out_arg,
    ]);
    created.assert_success("clients create --out");
    assert_eq!(file_mode(&out), 0o600);
    let credential = std::fs::read_to_string(&out).unwrap().trim().to_owned();
    assert!(
        credential.starts_with("tbc_"),
        "not a credential: {credential}"
    );
    assert!(
        !created.stdout.contains(&credential) && created.stdout.contains(out_arg),
        "stdout must name the file, not the credential:\n{}",
        created.stdout
    );
    // The file is a working --token-file.
    let issued = issuer.cli_as(
        &out,
        &[
            "token",
            "issue",
            "--subject",
            "alice",
            "--tenant",
            "acme",
            "--json",
        ],
    );
    issued.assert_success("token issue with the --out credential");

    // --json names the file and keeps the non-secret fields, without the secret.
    let out_json = root.path().join("second.credential");
    let listed = issuer.cli_json(&[
        "clients",
        "create",
        "--name",
        "second",
        "--scope",
        "issue",
        "--out",
        out_json.to_str().unwrap(),
    ]);
    assert!(listed.get("credential").is_none(), "{listed}");
    assert_eq!(listed["out"], out_json.to_str().unwrap(), "{listed}");
    assert!(
        listed["client_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{listed}"
    );
}

#[test]
fn session_and_token_out_write_private_files_the_cli_reads_back() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let session = root.path().join("alice.session");
    let session_arg = session.to_str().unwrap();

    let created = issuer.cli(&[
        "session",
        "create",
        "--subject",
        "alice",
        "--tenant",
        "acme",
        "--out",
        session_arg,
    ]);
    created.assert_success("session create --out");
    assert_eq!(file_mode(&session), 0o600);
    let first: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let first_access = first["access_token"].as_str().unwrap().to_owned();
    for secret in [&first_refresh, &first_access] {
        assert!(
            !created.stdout.contains(secret.as_str()),
            "{}",
            created.stdout
        );
    }
    assert!(created.stdout.contains(session_arg), "{}", created.stdout);

    // `@FILE` reads the refresh token from the session file; --out replaces it in place.
    let refreshed = issuer.cli_json(&[
        "session",
        "refresh",
        &format!("@{session_arg}"),
        "--out",
        session_arg,
    ]);
    assert!(refreshed.get("refresh_token").is_none(), "{refreshed}");
    assert_eq!(file_mode(&session), 0o600);
    let second: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    assert_ne!(second["refresh_token"], first_refresh.as_str());
    let introspected = issuer.cli_json(&["token", "introspect", &format!("@{session_arg}")]);
    assert_eq!(introspected["active"], true, "{introspected}");

    let token_file = root.path().join("bob.token");
    let issued = issuer.cli_json(&[
        "token",
        "issue",
        "--subject",
        "bob",
        "--tenant",
        "acme",
        "--out",
        token_file.to_str().unwrap(),
    ]);
    assert!(issued.get("token").is_none(), "{issued}");
    assert_eq!(file_mode(&token_file), 0o600);
    let introspected =
        issuer.cli_json(&["token", "introspect", &format!("@{}", token_file.display())]);
    assert_eq!(introspected["claims"]["sub"], "bob", "{introspected}");
}

fn file_mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}
