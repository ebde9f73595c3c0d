//! A bad configuration (flag, environment variable or config file) makes `serve` exit 64
//! (EX_USAGE) before it touches the data directory, with a message naming the field.

use std::time::{Duration, Instant};

use crate::sidecar::harness::sidecar_binary;
use crate::support::http;
use crate::support::issuer::{Issuer, run_issuer_command};
use crate::support::process::{Output, free_local_addr};
use crate::support::process::{clean_command, run_with_timeout};
use crate::support::wait::patience;

const EX_USAGE: i32 = 64;

#[test]
fn bad_config_exits_64_naming_the_field() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let data_dir_text = data_dir.to_str().unwrap();
    let grpc = free_local_addr().to_string();
    let http = free_local_addr().to_string();
    // Free addresses by default, so a configuration wrongly accepted would serve (and be
    // killed at the timeout) rather than collide with something.
    let serve = |extra: &[&str], env: &[(&str, &str)]| -> Output {
        let mut args = vec!["serve", "--data-dir", data_dir_text];
        for (flag, variable, default) in [
            ("--grpc-addr", "TESSERA_GRPC_ADDR", &grpc),
            ("--http-addr", "TESSERA_HTTP_ADDR", &http),
        ] {
            let set_by_env = env.iter().any(|(key, _)| *key == variable);
            if !extra.contains(&flag) && !set_by_env {
                args.extend([flag, default.as_str()]);
            }
        }
        args.extend_from_slice(extra);
        run_issuer_command(&args, env, patience(Duration::from_secs(20)))
    };

    let output = serve(&["--grpc-addr", "nope"], &[]);
    assert_config_error(&output, "grpc_addr");
    assert!(output.stderr.contains("nope"), "{}", output.stderr);

    // Environment variables are validated the same way.
    let output = serve(&[], &[("TESSERA_HTTP_ADDR", "also-not-an-address")]);
    assert_config_error(&output, "http_addr");

    // An overlap shorter than the longest token lifetime names both numbers.
    let output = serve(&["--overlap-hours", "0"], &[]);
    assert_config_error(&output, "overlap_hours");
    assert_mentions_numbers(&output, &[0, 900]);
    let output = serve(
        &[
            "--overlap-hours",
            "1",
            "--max-access-token-ttl-seconds",
            "7200",
        ],
        &[],
    );
    assert_config_error(&output, "overlap_hours");
    assert_mentions_numbers(&output, &[3600, 7200]);

    let output = serve(&["--access-algorithm", "HS256"], &[]);
    assert_config_error(&output, "access_algorithm");

    let output = serve(&["--database-url", "mysql://localhost/tessera"], &[]);
    assert_config_error(&output, "database_url");

    let config = root.path().join("tessera.toml");
    std::fs::write(
        &config,
        "grpc_addr = \"127.0.0.1:50051\"\nshiny_new_option = true\n",
    )
    .unwrap();
    let output = serve(&["--config", config.to_str().unwrap()], &[]);
    assert_config_error(&output, "config");
    assert!(
        output.stderr.contains("shiny_new_option"),
        "the message should name the unknown key: {}",
        output.stderr
    );

    assert!(
        !data_dir.join("tessera.db").exists() && !data_dir.join("kek").exists(),
        "a rejected configuration must not create state"
    );
}

/// Per-key-set policy (flag, environment and `[key_sets.<set>]` table): a bad value exits
/// 64 naming the exact field, a huge one included (no wrap into a tiny interval).
#[test]
fn bad_key_set_policy_exits_64_naming_the_exact_field() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let data_dir_text = data_dir.to_str().unwrap();
    let grpc = free_local_addr().to_string();
    let http = free_local_addr().to_string();
    let serve = |extra: &[&str], env: &[(&str, &str)]| -> Output {
        let mut args = vec![
            "serve",
            "--data-dir",
            data_dir_text,
            "--grpc-addr",
            &grpc,
            "--http-addr",
            &http,
        ];
        args.extend_from_slice(extra);
        run_issuer_command(&args, env, patience(Duration::from_secs(20)))
    };

    let output = serve(&["--key-set-policy", "webhook.overlap_days=0"], &[]);
    assert_config_error(&output, "key_sets.webhook.overlap_days");
    let output = serve(
        &[],
        &[("TESSERA_KEY_SET_POLICY", "webhook.algorithm=RS256")],
    );
    assert_config_error(&output, "key_sets.webhook.algorithm");
    let output = serve(
        &[
            "--key-set-policy",
            "access.rotate_every_days=18446744073709551615",
        ],
        &[],
    );
    assert_config_error(&output, "key_sets.access.rotate_every_days");
    assert!(output.stderr.contains("too large"), "{}", output.stderr);
    let output = serve(&["--overlap-hours", "18446744073709551615"], &[]);
    assert_config_error(&output, "overlap_hours");

    let config = root.path().join("tessera.toml");
    std::fs::write(
        &config,
        "[key_sets.webhook]\nrotate_every_days = 30\nprepublish_seconds = 2592000\n",
    )
    .unwrap();
    let output = serve(&["--config", config.to_str().unwrap()], &[]);
    assert_config_error(&output, "key_sets.webhook.prepublish_seconds");
    std::fs::write(&config, "[key_sets.mailer]\noverlap_days = 1\n").unwrap();
    let output = serve(&["--config", config.to_str().unwrap()], &[]);
    assert_config_error(&output, "config");
    assert!(output.stderr.contains("mailer"), "{}", output.stderr);

    assert!(
        !data_dir.join("tessera.db").exists() && !data_dir.join("kek").exists(),
        "a rejected configuration must not create state"
    );
}

/// Runs `tessera-sidecar ARGS` in a clean environment, expecting it to exit on its own.
fn run_sidecar(args: &[&str]) -> Output {
    let mut command = clean_command(sidecar_binary());
    command.args(args);
    run_with_timeout(command, patience(Duration::from_secs(20)))
}

/// Asserts a command-line error: exit 64, the program's `NAME: error:` prefix, and a
/// message naming `flag`.
fn assert_usage_error(output: &Output, program: &str, flag: &str) {
    assert_config_error(output, flag);
    assert!(
        output.stderr.starts_with(&format!("{program}: error: ")),
        "stderr should start with `{program}: error: `:\n{}",
        output.stderr
    );
}

/// An unknown flag or an unparsable value exits 64 naming the flag, in both programs,
/// with one prefix style; `--help` and `--version` still exit 0.
#[test]
fn unknown_flags_and_unparsable_values_exit_64_naming_the_flag_in_both_programs() {
    let issuer = |args: &[&str]| run_issuer_command(args, &[], patience(Duration::from_secs(20)));

    let output = issuer(&["serve", "--no-such-flag"]);
    assert_usage_error(&output, "tessera-issuer", "--no-such-flag");
    let output = issuer(&["keys", "list", "--bogus-flag", "1"]);
    assert_usage_error(&output, "tessera-issuer", "--bogus-flag");
    let output = issuer(&["serve", "--overlap-hours", "many"]);
    assert_usage_error(&output, "tessera-issuer", "--overlap-hours");
    let output = issuer(&["audit", "list", "--limit", "lots"]);
    assert_usage_error(&output, "tessera-issuer", "--limit");
    let output = issuer(&["no-such-command"]);
    assert_usage_error(&output, "tessera-issuer", "no-such-command");
    for flag in ["--help", "--version"] {
        let output = issuer(&[flag]);
        assert_eq!(output.code(), Some(0), "{flag}: {}", output.stderr);
        assert!(output.stderr.is_empty(), "{flag}: {}", output.stderr);
    }

    let output = run_sidecar(&["--no-such-flag"]);
    assert_usage_error(&output, "tessera-sidecar", "--no-such-flag");
    let output = run_sidecar(&["--leeway-seconds", "soon", "--issuer-token-file", "x"]);
    assert_usage_error(&output, "tessera-sidecar", "--leeway-seconds");
    let root = tempfile::tempdir().unwrap();
    let credential = root.path().join("sidecar.token");
    std::fs::write(&credential, "tbc_credential\n").unwrap();
    let credential = credential.to_str().unwrap();
    let output = run_sidecar(&["--issuer-token-file", credential, "--socket-mode", "999"]);
    assert_usage_error(&output, "tessera-sidecar", "socket_mode");
    for flag in ["--help", "--version"] {
        let output = run_sidecar(&[flag]);
        assert_eq!(output.code(), Some(0), "{flag}: {}", output.stderr);
    }
}

/// The sidecar without a credential, or with a credential file that is not there, stops
/// at once (exit 64, naming the flag) instead of retrying an issuer that would refuse it.
#[test]
fn sidecar_without_a_credential_file_exits_64_at_once() {
    let root = tempfile::tempdir().unwrap();
    let socket = root.path().join("s.sock");
    let missing = root.path().join("missing.token");
    let socket = socket.to_str().unwrap();
    sidecar_binary(); // built before the clock starts
    for args in [
        vec!["--socket", socket],
        vec![
            "--socket",
            socket,
            "--issuer-token-file",
            missing.to_str().unwrap(),
        ],
    ] {
        let started = Instant::now();
        let output = run_sidecar(&args);
        let took = started.elapsed();
        assert_usage_error(&output, "tessera-sidecar", "issuer_token_file");
        assert!(
            output.stderr.contains("--issuer-token-file"),
            "{args:?}: {}",
            output.stderr
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
}

/// The files the README's walkthrough creates (credentials, sessions, the sidecar's
/// socket and bundle cache, the data directory) are ignored by git.
#[test]
fn readme_walkthrough_files_are_git_ignored() {
    let root = crate::support::binaries::workspace_root();
    let files = [
        "tessera-data/admin.token",
        "sidecar.token",
        "bob.token",
        "billing-api.token",
        "alice.session",
        "sidecar-bundle.json",
        "tessera-sidecar.sock",
    ];
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["check-ignore", "--no-index", "--verbose", "--non-matching"])
        .args(files)
        .output()
        .expect("git runs");
    let listed = String::from_utf8_lossy(&output.stdout);
    let not_ignored: Vec<&str> = listed
        .lines()
        .filter(|line| line.starts_with("::"))
        .collect();
    assert_eq!(listed.lines().count(), files.len(), "{listed}");
    assert!(not_ignored.is_empty(), "not ignored: {not_ignored:?}");
}

fn assert_config_error(output: &Output, field: &str) {
    assert_eq!(
        output.code(),
        Some(EX_USAGE),
        "expected exit 64 for a bad `{field}`; status {:?}\nstderr:\n{}",
        output.status,
        output.stderr
    );
    assert!(
        output.stderr.contains(field),
        "stderr should name `{field}`:\n{}",
        output.stderr
    );
}

/// Asserts every number in `expected` appears as a whole number in stderr.
fn assert_mentions_numbers(output: &Output, expected: &[u64]) {
    let numbers: Vec<u64> = output
        .stderr
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|word| word.parse().ok())
        .collect();
    for number in expected {
        assert!(
            numbers.contains(number),
            "stderr should mention {number}:\n{}",
            output.stderr
        );
    }
}

/// A per-key-set policy from the file and the flag is what the issuer runs with: the
/// access set signs with the flag's algorithm, the webhook set holds an HS256 key that
/// `keys list` shows and the JWKS never does.
#[test]
fn key_set_policy_from_file_and_flag_is_served_and_webhook_keys_stay_private() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("tessera.toml");
    std::fs::write(
        &config,
        "[key_sets.webhook]\nrotate_every_days = 20\noverlap_days = 2\n\
         [key_sets.access]\nalgorithm = \"EdDSA\"\n",
    )
    .unwrap();
    let issuer = Issuer::builder(root.path(), "issuer")
        .args(["--config", config.to_str().unwrap()])
        .args(["--key-set-policy", "access.algorithm=ES256"])
        .start();

    let listed = issuer.cli_json(&["keys", "list"]);
    let keys = listed["keys"].as_array().expect("keys");
    let algorithm_of = |key_set: &str| -> Vec<String> {
        keys.iter()
            .filter(|key| key["key_set"] == key_set)
            .filter_map(|key| key["algorithm"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(algorithm_of("access"), ["ES256"], "the flag wins: {listed}");
    assert_eq!(algorithm_of("webhook"), ["HS256"], "{listed}");

    let jwks = http::get(issuer.http_addr, "/.well-known/jwks.json", &[]).expect("JWKS");
    let body = String::from_utf8_lossy(&jwks.body).into_owned();
    let webhook_kids: Vec<&str> = keys
        .iter()
        .filter(|key| key["key_set"] == "webhook")
        .filter_map(|key| key["kid"].as_str())
        .collect();
    assert!(!webhook_kids.is_empty());
    for kid in webhook_kids {
        assert!(!body.contains(kid), "{kid} published: {body}");
    }
    assert!(
        !body.contains("HS256") && !body.contains("\"oct\""),
        "{body}"
    );
}
