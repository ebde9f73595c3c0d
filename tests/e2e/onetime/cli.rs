//! `tessera-issuer action-links create|consume|inspect` against the real binary: a
//! two-step link created with parameters, inspected as live, its first consume returning
//! a confirmation token, the second consuming it, a replay refused (non-zero exit,
//! `already_used`), and the token written to a 0600 file with `--out` instead of printed.

use std::os::unix::fs::PermissionsExt;

use crate::support::issuer::Issuer;

#[test]
fn action_links_cli_creates_consumes_twice_step_and_inspects() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let created = issuer.cli_json(&[
        "action-links",
        "create",
        "--tenant",
        "acme",
        "--action",
        "confirm_payment",
        "--resource",
        "inv-1",
        "--user",
        "alice",
        "--param",
        "amount=125.00",
        "--requires-confirmation",
    ]);
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("tba_"), "{created}");
    let inspected = issuer.cli_json(&["action-links", "inspect", &token]);
    assert_eq!(inspected["valid"], true);
    assert_eq!(inspected["state"], "live");
    assert_eq!(inspected["claims"]["params"]["amount"], "125.00");

    fn consume_args<'a>(token: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "action-links",
            "consume",
            token,
            "--action",
            "confirm_payment",
            "--resource",
            "inv-1",
        ];
        args.extend_from_slice(extra);
        args
    }
    let first = issuer.cli_json(&consume_args(&token, &[]));
    assert_eq!(first["confirmation_required"], true, "{first}");
    let confirmation = first["confirmation_token"].as_str().unwrap().to_owned();
    let second = issuer.cli_json(&consume_args(&token, &["--confirmation", &confirmation]));
    assert_eq!(second["consumed"], true, "{second}");
    let mut replay_args = consume_args(&token, &["--confirmation", &confirmation]);
    replay_args.push("--json");
    let replay = issuer.cli(&replay_args);
    assert!(!replay.success(), "a replay must exit non-zero");
    assert!(replay.stdout.contains("already_used"), "{}", replay.stdout);
    assert_eq!(
        issuer.cli_json(&["action-links", "inspect", &token])["state"],
        "used"
    );

    let out = root.path().join("link.token");
    let written = issuer.cli_json(&[
        "action-links",
        "create",
        "--tenant",
        "acme",
        "--action",
        "cancel_booking",
        "--resource",
        "bk-9",
        "--user",
        "bob",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(written.get("token").is_none(), "{written}");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let from_file = format!("@{}", out.display());
    let consumed = issuer.cli_json(&[
        "action-links",
        "consume",
        &from_file,
        "--action",
        "cancel_booking",
        "--resource",
        "bk-9",
    ]);
    assert_eq!(consumed["consumed"], true);
}
