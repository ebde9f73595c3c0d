//! `tessera-issuer apikeys` against the real binary: create (printed once, or to a 0600
//! file with `--out`), list (metadata only), validate, rotate (the old key works during
//! its grace), revoke (refused from then on, with its reason); usage counted in memory is
//! written when the issuer stops on SIGTERM and is there after the restart.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::support::issuer::Issuer;

/// Starts the issuer of `root` with a usage flush interval longer than the test, so
/// only the shutdown flush can write the counts.
fn start(root: &std::path::Path) -> Issuer {
    Issuer::builder(root, "issuer")
        .env("TESSERA_API_KEY_USAGE_FLUSH_SECONDS", "300")
        .start()
}

fn validate(issuer: &Issuer, key_file: &std::path::Path) -> Value {
    let argument = format!("@{}", key_file.display());
    let output = issuer.cli(&[
        "apikeys",
        "validate",
        &argument,
        "--permission",
        "invoices:read",
        "--json",
    ]);
    let value: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("validate printed no JSON ({error}): {output:?}"));
    assert_eq!(
        output.success(),
        value["valid"] == true,
        "exit status follows validity: {output:?}"
    );
    value
}

#[test]
fn cli_apikeys_create_list_rotate_revoke_and_usage_survives_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let mut issuer = start(root.path());

    let created = issuer.cli_json(&[
        "apikeys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "billing export",
        "--permission",
        "invoices:read",
        "--role",
        "billing",
        "--reason",
        "e2e",
    ]);
    let key = created["key"].as_str().expect("key").to_owned();
    let key_id = created["key_id"].as_str().expect("key_id").to_owned();
    assert!(key.starts_with(&format!("tbk_{key_id}_")), "{created}");
    assert_eq!(created["state"], "active", "{created}");
    assert_eq!(created["tenant_id"], "acme");
    let lifetime =
        created["expires_at"].as_i64().unwrap() - created["created_at"].as_i64().unwrap();
    assert_eq!(lifetime, 90 * 24 * 3600, "default 90 days: {created}");

    // --out: the key only in a 0600 file.
    let out = root.path().join("second.key");
    let second = issuer.cli_json(&[
        "apikeys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "second",
        "--permission",
        "invoices:read",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(second.get("key").is_none(), "{second}");
    let second_key = std::fs::read_to_string(&out).unwrap().trim().to_owned();
    assert!(second_key.starts_with("tbk_"));
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // list: metadata only, no key and no secret anywhere in the output.
    let listed = issuer.cli(&["apikeys", "list", "--tenant", "acme", "--json"]);
    listed.assert_success("apikeys list");
    for secret_holder in [&key, &second_key] {
        let secret = &secret_holder[4 + 17..];
        assert!(!listed.stdout.contains(secret), "list leaks a secret");
    }
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    let keys = listed["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{listed}");
    assert!(keys.iter().all(|key| key.get("key").is_none()));
    let text = issuer.cli(&["apikeys", "list"]);
    text.assert_success("apikeys list (text)");
    assert!(text.stdout.contains(&key_id), "{}", text.stdout);

    // validate, three times (counted in memory only).
    let key_file = root.path().join("first.key");
    std::fs::write(&key_file, &key).unwrap();
    for _ in 0..3 {
        let valid = validate(&issuer, &key_file);
        assert_eq!(valid["valid"], true, "{valid}");
        assert_eq!(valid["tenant_id"], "acme");
    }
    let got = issuer.cli_json(&["apikeys", "get", &key_id]);
    assert_eq!(
        got["usage_count"], 0,
        "no database write per request: {got}"
    );

    // rotate: the successor once; the old key still works during its grace.
    let rotated = issuer.cli_json(&["apikeys", "rotate", &key_id, "--reason", "e2e"]);
    let successor = rotated["key"].as_str().expect("successor key").to_owned();
    let successor_id = rotated["key_id"].as_str().unwrap().to_owned();
    assert_ne!(successor_id, key_id);
    assert_eq!(rotated["predecessor"]["state"], "rotated", "{rotated}");
    assert_eq!(rotated["predecessor_id"], key_id.as_str());
    assert_eq!(validate(&issuer, &key_file)["valid"], true, "grace");
    let successor_file = root.path().join("successor.key");
    std::fs::write(&successor_file, &successor).unwrap();
    assert_eq!(validate(&issuer, &successor_file)["valid"], true);

    // revoke: refused at once with its own reason.
    let revoked = issuer.cli_json(&["apikeys", "revoke", &successor_id, "--reason", "e2e"]);
    assert_eq!(revoked["state"], "revoked", "{revoked}");
    let refused = validate(&issuer, &successor_file);
    assert_eq!(
        (refused["valid"].clone(), refused["refusal"].clone()),
        (Value::Bool(false), Value::from("revoked"))
    );

    // The audit log names each creation, rotation and revocation, never a key.
    let audit = issuer.cli(&["audit", "list", "--json"]);
    audit.assert_success("audit list");
    for action in ["apikey.create", "apikey.rotate", "apikey.revoke"] {
        assert!(audit.stdout.contains(action), "{action} missing");
    }
    assert!(
        !audit.stdout.contains(&key[4 + 17..]),
        "audit holds a secret"
    );
    assert!(!issuer.log().contains(&key[4 + 17..]), "log holds a secret");

    // A graceful stop writes the pending usage batch; the restart reads it back.
    issuer.sigterm();
    let status = issuer
        .wait_exit(Duration::from_secs(20))
        .expect("issuer exits");
    assert!(status.success(), "{status}: {}", issuer.log());
    let restarted = start(root.path());
    let got = restarted.cli_json(&["apikeys", "get", &key_id]);
    assert_eq!(got["usage_count"], 4, "{got}");
    assert!(got["last_used_at"].as_i64().is_some(), "{got}");
}
