//! A bad configuration (flag, environment variable or config file) makes `serve` exit 64
//! (EX_USAGE) before it touches the data directory, with a message naming the field.

use std::time::Duration;

use crate::support::http;
use crate::support::issuer::{Issuer, run_issuer_command};
use crate::support::process::{Output, free_local_addr};
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
