//! A bad configuration (flag, environment variable or config file) makes `serve` exit 64
//! (EX_USAGE) before it touches the data directory, with a message naming the field.

use std::time::Duration;

use crate::support::issuer::run_issuer_command;
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
