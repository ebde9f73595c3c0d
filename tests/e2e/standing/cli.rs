//! `tessera-issuer service-tokens …` and `webhooks token …` against the real binary, with
//! `--json`: an identity created and listed, a token issued (printed once, or only to a
//! 0600 file with `--out`), validated, replaced and confirmed (the predecessor revoked),
//! revoked; the identity disabled (no more tokens); a webhook token issued, validated
//! for its endpoint, revoked. Exit statuses follow validity; the audit log names every
//! step and holds no token.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::issuer::Issuer;

/// `service-tokens validate` / `webhooks token validate` with `--json`: the parsed answer,
/// after checking that the exit status follows validity.
fn validate(issuer: &Issuer, family: &[&str], token: &str, extra: &[&str]) -> Value {
    let mut args = family.to_vec();
    args.extend(["validate", token]);
    args.extend_from_slice(extra);
    args.push("--json");
    let output = issuer.cli(&args);
    let value: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("validate printed no JSON ({error}): {output:?}"));
    assert_eq!(
        output.success(),
        value["valid"] == true,
        "exit status follows validity: {output:?}"
    );
    value
}

fn string(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}

#[test]
fn cli_service_tokens_and_webhook_tokens_round_trip_with_json() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    const SERVICE: &[&str] = &["service-tokens"];
    const WEBHOOK: &[&str] = &["webhooks", "token"];

    let identity = issuer.cli_json(&[
        "service-tokens",
        "create-identity",
        "--tenant",
        "acme",
        "--name",
        "billing",
        "--permission",
        "orders:write",
        "--role",
        "service",
        "--token-ttl-seconds",
        "600",
        "--reason",
        "e2e",
    ]);
    assert_eq!(
        (
            &identity["name"],
            &identity["tenant_id"],
            &identity["token_ttl_seconds"]
        ),
        (
            &Value::from("billing"),
            &Value::from("acme"),
            &Value::from(600)
        ),
        "{identity}"
    );
    assert!(identity["disabled_at"].is_null(), "{identity}");
    let listed = issuer.cli_json(&["service-tokens", "list", "--tenant", "acme"]);
    let names: Vec<_> = listed["identities"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|identity| identity["name"].clone())
        .collect();
    assert_eq!(names, [Value::from("billing")], "{listed}");

    // Issue: printed once, with its schedule.
    let first = issuer.cli_json(&[
        "service-tokens",
        "issue",
        "--tenant",
        "acme",
        "--service",
        "billing",
        "--holder",
        "pod-1",
    ]);
    let first_token = string(&first, "token");
    let first_id = string(&first, "token_id");
    assert!(
        first_token.starts_with(&format!("tbs_{first_id}_")),
        "{first}"
    );
    assert_eq!(
        (&first["kind"], &first["state"], &first["holder"]),
        (
            &Value::from("service"),
            &Value::from("active"),
            &Value::from("pod-1")
        )
    );
    let issued_at = first["issued_at"].as_i64().unwrap();
    assert_eq!(first["expires_at"].as_i64().unwrap() - issued_at, 600);
    assert_eq!(first["renew_at"].as_i64().unwrap() - issued_at, 480, "80 %");
    let valid = validate(&issuer, SERVICE, &first_token, &["--subject", "billing"]);
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["info"]["permissions"][0], "orders:write", "{valid}");
    let wrong_subject = validate(&issuer, SERVICE, &first_token, &["--subject", "mailer"]);
    assert_eq!(wrong_subject["valid"], false, "{wrong_subject}");
    assert!(wrong_subject["info"].is_null(), "{wrong_subject}");

    // A successor to a 0600 file, confirmed: the predecessor is revoked.
    let out = root.path().join("successor.token");
    let second = issuer.cli_json(&[
        "service-tokens",
        "issue",
        "--tenant",
        "acme",
        "--service",
        "billing",
        "--replaces",
        &first_id,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        second.get("token").is_none(),
        "--out prints no token: {second}"
    );
    assert_eq!(second["replaces"], first_id.as_str(), "{second}");
    let second_id = string(&second, "token_id");
    let second_token = std::fs::read_to_string(&out).unwrap().trim().to_owned();
    assert!(second_token.starts_with(&format!("tbs_{second_id}_")));
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let from_file = format!("@{}", out.display());
    assert_eq!(validate(&issuer, SERVICE, &from_file, &[])["valid"], true);
    assert_eq!(
        validate(&issuer, SERVICE, &first_token, &[])["valid"],
        true,
        "the predecessor works until the successor is confirmed"
    );
    let confirmed = issuer.cli_json(&["service-tokens", "confirm", &second_id]);
    assert_eq!(
        confirmed["revoked_token_id"],
        first_id.as_str(),
        "{confirmed}"
    );
    let refused = validate(&issuer, SERVICE, &first_token, &[]);
    assert_eq!(
        (&refused["valid"], &refused["refusal"]),
        (&Value::Bool(false), &Value::from("revoked")),
        "{refused}"
    );

    // Revoke, then disable the identity: no more tokens.
    let revoked = issuer.cli_json(&["service-tokens", "revoke", &second_id, "--reason", "e2e"]);
    assert_eq!(revoked["state"], "revoked", "{revoked}");
    assert_eq!(
        validate(&issuer, SERVICE, &from_file, &[])["refusal"],
        "revoked"
    );
    let disabled = issuer.cli_json(&[
        "service-tokens",
        "disable",
        "--tenant",
        "acme",
        "--name",
        "billing",
        "--reason",
        "e2e",
    ]);
    assert!(disabled["disabled_at"].as_i64().is_some(), "{disabled}");
    let after = issuer.cli(&[
        "service-tokens",
        "issue",
        "--tenant",
        "acme",
        "--service",
        "billing",
        "--json",
    ]);
    assert!(
        !after.success(),
        "a disabled identity issued a token: {after:?}"
    );
    assert!(!after.stdout.contains("tbs_"), "{after:?}");

    // Webhook tokens.
    let webhook = issuer.cli_json(&[
        "webhooks",
        "token",
        "issue",
        "--tenant",
        "acme",
        "--endpoint",
        "orders-callback",
        "--permission",
        "callbacks:post",
        "--ttl-seconds",
        "120",
    ]);
    let webhook_token = string(&webhook, "token");
    let webhook_id = string(&webhook, "token_id");
    assert!(webhook_token.starts_with(&format!("tbw_{webhook_id}_")));
    assert_eq!(
        (&webhook["kind"], &webhook["subject"]),
        (&Value::from("webhook"), &Value::from("orders-callback"))
    );
    assert_eq!(
        webhook["expires_at"].as_i64().unwrap() - webhook["issued_at"].as_i64().unwrap(),
        120
    );
    let valid = validate(
        &issuer,
        WEBHOOK,
        &webhook_token,
        &[
            "--subject",
            "orders-callback",
            "--permission",
            "callbacks:post",
        ],
    );
    assert_eq!(valid["valid"], true, "{valid}");
    // The same validation serves both prefixes.
    assert_eq!(
        validate(&issuer, SERVICE, &webhook_token, &[])["valid"],
        true
    );
    let lacking = validate(
        &issuer,
        WEBHOOK,
        &webhook_token,
        &["--permission", "callbacks:delete"],
    );
    assert_eq!(lacking["valid"], false, "{lacking}");
    let revoked = issuer.cli_json(&[
        "webhooks",
        "token",
        "revoke",
        &webhook_id,
        "--reason",
        "e2e",
    ]);
    assert_eq!(revoked["state"], "revoked", "{revoked}");
    assert!(revoked.get("token").is_none(), "{revoked}");
    assert_eq!(
        validate(&issuer, WEBHOOK, &webhook_token, &[])["refusal"],
        "revoked"
    );

    // Every step audited; no token in the audit log or the issuer's log.
    let audit = issuer.cli(&["audit", "list", "--json"]);
    audit.assert_success("audit list");
    for action in [
        "service.identity.created",
        "service.identity.disabled",
        "service.token.issued",
        "service.token.rotated",
        "service.token.revoked",
        "webhook.token.issued",
        "webhook.token.revoked",
    ] {
        assert!(
            audit.stdout.contains(action),
            "{action} missing from the audit log"
        );
    }
    for token in [&first_token, &second_token, &webhook_token] {
        let secret = &token[21..];
        assert!(
            !audit.stdout.contains(secret),
            "the audit log holds a token"
        );
        assert!(
            !issuer.log().contains(secret),
            "the issuer's log holds a token"
        );
    }
}
