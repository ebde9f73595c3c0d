//! `tessera-issuer scan`, the real binary: planted credentials of every kind are found in
//! a directory tree (file:line:column, kind, id, fingerprint; never the secret), binary
//! and skipped directories are left alone, `--git` finds a credential committed then
//! deleted, `--staged` finds one about to be committed, and the exit codes a pre-commit
//! hook relies on (0 clean, 1 found, 2 incomplete, 64 bad flags); `--revoke` against a
//! live issuer revokes a caller credential, a refresh token and an API key (which then
//! stop working) and says `already_dead` of a disabled client's credential.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tessera_common::credential::{Credential, CredentialKind};

use crate::support::issuer::{Issuer, run_issuer_command};
use crate::support::process::Output;

fn scan(args: &[&str]) -> Output {
    let mut with_scan = vec!["scan"];
    with_scan.extend_from_slice(args);
    run_issuer_command(&with_scan, &[], Duration::from_secs(60))
}

fn scan_json(args: &[&str]) -> (Option<i32>, Value) {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let output = scan(&with_json);
    let document = serde_json::from_str(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "scan --json printed no JSON ({error}): {}\n{}",
            output.stdout, output.stderr
        )
    });
    (output.code(), document)
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn git(repository: &Path, args: &[&str]) {
    let output = Command::new("git")
        .arg("-C")
        .arg(repository)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn scan_finds_every_planted_credential_by_file_and_line_and_never_prints_the_secret() {
    let root = tempfile::tempdir().unwrap();
    let tree = root.path().join("tree");
    let credentials: Vec<Credential> = CredentialKind::ALL
        .into_iter()
        .map(Credential::generate)
        .collect();
    let [api_key, caller, refresh, service, webhook] = &credentials[..] else {
        unreachable!()
    };
    write(
        &tree.join("config/.env"),
        &format!("# settings\r\nTESSERA_TOKEN={}\r\n", caller.expose()),
    );
    write(
        &tree.join("src/client.py"),
        &format!(
            "import os\n\nKEYS = [\"{}\", '{}']\n# not one: x{}\n{}",
            api_key.expose(),
            service.expose(),
            refresh.expose(),
            webhook.expose()
        ),
    );
    write(
        &tree.join("notes.md"),
        &format!("refresh: `{}`\n", refresh.expose()),
    );
    // Skipped: build output, vendored dependencies, version-control internals, binaries.
    for skipped in [
        "target/debug/log.txt",
        "node_modules/x/index.js",
        ".git/config",
    ] {
        write(&tree.join(skipped), &caller.expose());
    }
    std::fs::write(
        tree.join("image.bin"),
        [b"\0\x01".as_slice(), caller.expose().as_bytes()].concat(),
    )
    .unwrap();
    let decoy = format!("tbk_{}", &api_key.expose()[4..]).replace("tbk_", "tbk_0");
    write(&tree.join("decoy.txt"), &decoy);

    let tree_arg = tree.to_str().unwrap();
    let output = scan(&[tree_arg]);
    assert_eq!(
        output.code(),
        Some(1),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    let shown = |path: &str| tree.join(path).display().to_string();
    for (expected, credential) in [
        (
            format!("{}:2:15: tbc_ issuer_caller", shown("config/.env")),
            caller,
        ),
        (
            format!("{}:3:10: tbk_ api_key", shown("src/client.py")),
            api_key,
        ),
        (
            format!(
                "{}:3:{}: tbs_ service",
                shown("src/client.py"),
                10 + api_key.expose().len() + 4
            ),
            service,
        ),
        (
            format!("{}:5:1: tbw_ webhook", shown("src/client.py")),
            webhook,
        ),
        (format!("{}:1:11: tbf_ refresh", shown("notes.md")), refresh),
    ] {
        let line = output
            .stdout
            .lines()
            .find(|line| line.starts_with(&expected))
            .unwrap_or_else(|| panic!("no `{expected}` in:\n{}", output.stdout));
        assert!(line.contains(&format!("id={}", credential.id)), "{line}");
        assert!(line.contains("fingerprint=sha256:"), "{line}");
    }
    assert_eq!(output.stdout.lines().count(), 5, "{}", output.stdout);
    for credential in &credentials {
        for stream in [&output.stdout, &output.stderr] {
            assert!(!stream.contains(credential.secret.expose()), "{stream}");
        }
    }
    assert!(
        output.stderr.contains("image.bin: binary"),
        "{}",
        output.stderr
    );

    // JSON: one document, the same findings.
    let (code, document) = scan_json(&[tree_arg]);
    assert_eq!(code, Some(1));
    let findings = document["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 5, "{document}");
    assert_eq!(findings[0]["path"], shown("config/.env"));
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(findings[0]["kind"], "issuer_caller");
    assert_eq!(findings[0]["id"], caller.id.as_str());
    assert!(!document.to_string().contains(caller.secret.expose()));

    // A file named explicitly is scanned even inside a skipped directory.
    let output = scan(&[&shown("target/debug/log.txt")]);
    assert_eq!(output.code(), Some(1), "{}", output.stdout);

    // Clean tree: 0. Unreadable path: 2. Bad flag: 64.
    let clean = root.path().join("clean");
    write(
        &clean.join("a.rs"),
        "fn main() { let tbk_ = \"tbk_abc_def\"; }\n",
    );
    write(&clean.join("b.txt"), &decoy);
    let output = scan(&[clean.to_str().unwrap()]);
    assert_eq!(
        output.code(),
        Some(0),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    assert_eq!(output.stdout, "");
    let missing = root.path().join("missing");
    let output = scan(&[clean.to_str().unwrap(), missing.to_str().unwrap()]);
    assert_eq!(output.code(), Some(2), "{}", output.stderr);
    assert_eq!(scan(&["--no-such-flag"]).code(), Some(64));
    let output = scan(&["--max-file-size", "10", tree_arg]);
    assert_eq!(
        output.code(),
        Some(0),
        "everything skipped: {}",
        output.stderr
    );
}

#[test]
fn scan_git_finds_a_credential_committed_then_deleted_and_staged_ones() {
    let root = tempfile::tempdir().unwrap();
    let repository = root.path().join("repo");
    std::fs::create_dir_all(&repository).unwrap();
    git(&repository, &["init", "--quiet", "--initial-branch=main"]);
    let leaked = Credential::generate(CredentialKind::Refresh);
    write(&repository.join("README"), "hello\n");
    git(&repository, &["add", "README"]);
    git(&repository, &["commit", "--quiet", "-m", "first"]);
    write(
        &repository.join("app/settings.toml"),
        &format!("[auth]\nname = \"x\"\ntoken = \"{}\"\n", leaked.expose()),
    );
    git(&repository, &["add", "app/settings.toml"]);
    git(&repository, &["commit", "--quiet", "-m", "oops"]);
    let leaking_commit = String::from_utf8(
        Command::new("git")
            .arg("-C")
            .arg(&repository)
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    std::fs::remove_file(repository.join("app/settings.toml")).unwrap();
    git(&repository, &["add", "-A"]);
    git(
        &repository,
        &["commit", "--quiet", "-m", "remove the token"],
    );

    let repository_arg = repository.to_str().unwrap();
    // The working tree is clean now; the history is not.
    assert_eq!(scan(&[repository_arg]).code(), Some(0));
    let output = scan(&["--git", repository_arg]);
    assert_eq!(
        output.code(),
        Some(1),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    let expected = format!(
        "{leaking_commit}:app/settings.toml:3:10: tbf_ refresh id={}",
        leaked.id
    );
    assert!(
        output
            .stdout
            .lines()
            .any(|line| line.starts_with(&expected)),
        "no `{expected}` in:\n{}",
        output.stdout
    );
    assert_eq!(
        output.stdout.lines().count(),
        1,
        "the deletion is not a finding"
    );
    assert!(!output.stdout.contains(leaked.secret.expose()));
    let (code, document) = scan_json(&["--git", repository_arg]);
    assert_eq!(code, Some(1));
    assert_eq!(document["findings"][0]["commit"], leaking_commit.as_str());

    // --staged: what a pre-commit hook runs.
    assert_eq!(scan(&["--staged", repository_arg]).code(), Some(0));
    let staged = Credential::generate(CredentialKind::IssuerCaller);
    write(
        &repository.join("deploy.sh"),
        &format!("#!/bin/sh\nexport TESSERA_TOKEN={}\n", staged.expose()),
    );
    git(&repository, &["add", "deploy.sh"]);
    let output = scan(&["--staged", repository_arg]);
    assert_eq!(
        output.code(),
        Some(1),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    assert!(
        output.stdout.starts_with(&format!(
            "deploy.sh:2:22: tbc_ issuer_caller id={}",
            staged.id
        )),
        "{}",
        output.stdout
    );

    // Not a repository: the scan cannot complete.
    let not_a_repository = root.path().join("plain");
    std::fs::create_dir_all(&not_a_repository).unwrap();
    let output = scan(&["--git", not_a_repository.to_str().unwrap()]);
    assert_eq!(output.code(), Some(2), "{}", output.stderr);
}

#[test]
fn scan_revoke_revokes_the_live_credentials_found_and_says_which_were_already_dead() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let live = issuer.cli_json(&[
        "clients", "create", "--name", "leaky-ci", "--scope", "issue", "--tenant", "acme",
    ]);
    let live_credential = live["credential"].as_str().unwrap().to_owned();
    let disabled = issuer.cli_json(&[
        "clients", "create", "--name", "old-ci", "--scope", "issue", "--tenant", "acme",
    ]);
    let disabled_credential = disabled["credential"].as_str().unwrap().to_owned();
    issuer
        .cli(&[
            "clients",
            "disable",
            disabled["client_id"].as_str().unwrap(),
            "--reason",
            "retired",
        ])
        .assert_success("clients disable");
    let session = issuer.cli_json(&[
        "session",
        "create",
        "--subject",
        "alice",
        "--tenant",
        "acme",
    ]);
    let refresh_token = session["refresh_token"].as_str().unwrap().to_owned();
    let api_key = issuer.cli_json(&[
        "apikeys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "partner",
        "--role",
        "api_partner",
    ]);
    let api_key = api_key["key"].as_str().unwrap().to_owned();

    let tree = root.path().join("leaks");
    write(
        &tree.join("ci.yml"),
        &format!("env:\n  TESSERA_TOKEN: {live_credential}\n  OLD: {disabled_credential}\n"),
    );
    write(
        &tree.join("debug.log"),
        &format!("refresh={refresh_token}\nagain={live_credential}\nkey={api_key}\n"),
    );
    let tree_arg = tree.to_str().unwrap();
    let output = issuer.cli(&["scan", "--revoke", tree_arg]);
    assert_eq!(
        output.code(),
        Some(1),
        "{}\n{}",
        output.stdout,
        output.stderr
    );
    let line_of = |prefix: &str| {
        output
            .stdout
            .lines()
            .find(|line| line.contains(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{}", output.stdout))
            .to_owned()
    };
    assert!(line_of("ci.yml:2:18: tbc_").ends_with("revocation=revoked"));
    assert!(line_of("ci.yml:3:8: tbc_").ends_with("revocation=already_dead"));
    assert!(line_of("debug.log:1:9: tbf_").ends_with("revocation=revoked"));
    assert!(line_of("debug.log:3:5: tbk_ api_key").ends_with("revocation=revoked"));
    assert!(
        line_of("debug.log:2:7: tbc_").ends_with("revocation=revoked"),
        "the same credential twice is one revocation, reported at both places"
    );
    for credential in [
        &live_credential,
        &disabled_credential,
        &refresh_token,
        &api_key,
    ] {
        let secret = Credential::parse(credential).unwrap().secret;
        assert!(!output.stdout.contains(secret.expose()));
        assert!(!output.stderr.contains(secret.expose()));
    }

    // The revoked caller credential no longer authenticates; the refresh token no longer
    // refreshes.
    let credential_file = root.path().join("leaked.token");
    std::fs::write(&credential_file, &live_credential).unwrap();
    let refused = issuer.cli_as(
        &credential_file,
        &["token", "issue", "--subject", "bob", "--tenant", "acme"],
    );
    assert!(!refused.success(), "{}", refused.stdout);
    let refused = issuer.cli(&["session", "refresh", &refresh_token]);
    assert!(!refused.success(), "{}", refused.stdout);
    let validated = issuer.cli(&["apikeys", "validate", &api_key, "--json"]);
    assert!(!validated.success(), "{}", validated.stdout);
    assert!(validated.stdout.contains("revoked"), "{}", validated.stdout);

    // Scanning again: everything already dead; --json carries the outcomes.
    let mut again = issuer.cli(&["scan", "--revoke", "--json", tree_arg]);
    assert_eq!(again.code(), Some(1), "{}", again.stderr);
    let document: Value = serde_json::from_str(&std::mem::take(&mut again.stdout)).unwrap();
    let outcomes: Vec<&str> = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["revocation"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["already_dead"; 5], "{document}");

    // Without reaching the issuer the scan is incomplete: exit 2.
    let output = run_issuer_command(
        &[
            "scan",
            "--revoke",
            "--addr",
            "http://127.0.0.1:1",
            "--token-file",
            credential_file.to_str().unwrap(),
            tree_arg,
        ],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(output.code(), Some(2), "{}", output.stderr);
}
