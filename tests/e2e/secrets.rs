//! The secrets engine's crash safety with the real binary (issue 12 point 2): a Redis
//! ACL password rotation is killed (`TESSERA_FAIL_POINT`, which aborts the process like
//! SIGKILL at that point) between each pair of steps — after `create`, after `set`,
//! after `test` — and the next run (an operator's `secrets rotate`, or the scheduler on
//! its own) finishes it: the secret ends `current` and working against the real Redis,
//! the previous value still works during the overlap, nothing is lost, and no value
//! reaches the issuer's log. Emergency rotation through the CLI is shown too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tessera_proto::v1 as pb;
use tessera_proto::v1::secret_service_client::SecretServiceClient;

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::http;
use crate::support::issuer::{Issuer, read_trimmed};
use crate::support::wait::{patience, poll_until};

const REDIS: &str = "127.0.0.1:6379";

/// One RESP2 command on a fresh or given connection; `Err` for an error reply.
fn redis_call(stream: &mut BufReader<TcpStream>, args: &[&[u8]]) -> Result<String, String> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    stream.get_mut().write_all(&out).expect("write to Redis");
    let mut line = String::new();
    stream.read_line(&mut line).expect("read from Redis");
    let line = line.trim_end().to_owned();
    match line.split_at(1) {
        ("+" | ":", rest) => Ok(rest.to_owned()),
        ("-", rest) => Err(rest.to_owned()),
        ("$", len) => {
            let len: usize = len.parse().unwrap_or(0);
            let mut body = vec![0; len + 2];
            stream.read_exact(&mut body).expect("read bulk");
            Ok(String::from_utf8_lossy(&body[..len]).into_owned())
        }
        other => panic!("unexpected Redis reply {other:?}"),
    }
}

fn redis() -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(REDIS).expect("Redis at 127.0.0.1:6379"))
}

/// True when `user` authenticates with `password` on a fresh connection.
fn redis_auth(user: &str, password: &[u8]) -> bool {
    let mut connection = redis();
    redis_call(&mut connection, &[b"AUTH", user.as_bytes(), password]).is_ok()
        && redis_call(&mut connection, &[b"PING"]).as_deref() == Ok("PONG")
}

fn start(root: &Path, fail_point: Option<&str>, reader_file: &Path, check_seconds: u32) -> Issuer {
    let mut builder = Issuer::builder(root, "issuer").args([
        "--secrets-redis-admin-url".to_owned(),
        format!("redis://{REDIS}"),
        "--rotation-check-seconds".to_owned(),
        check_seconds.to_string(),
        "--bootstrap-clients".to_owned(),
        format!(
            "name=secret-reader,scope=secrets:read:e2e/*,file={}",
            reader_file.display()
        ),
    ]);
    if let Some(point) = fail_point {
        builder = builder.env("TESSERA_FAIL_POINT", &format!("secret-rotation:{point}"));
    }
    builder.start()
}

/// ReadSecret with the reader's credential: (current version, value), previous value.
fn read_value(issuer: &Issuer, reader: &str, name: &str) -> ((u64, Vec<u8>), Option<Vec<u8>>) {
    let answer = runtime().block_on(async {
        SecretServiceClient::new(connect(issuer.grpc_addr).await)
            .read_secret(with_bearer(
                pb::ReadSecretRequest {
                    name: name.into(),
                    include_previous: true,
                },
                reader,
            ))
            .await
            .expect("ReadSecret")
            .into_inner()
    });
    let current = answer.current.expect("current");
    (
        (current.version, current.value),
        answer.previous.map(|previous| previous.value),
    )
}

#[test]
fn a_rotation_killed_between_any_two_steps_resumes_and_the_secret_works() {
    let root = tempfile::tempdir().expect("tempdir");
    let reader_file = root.path().join("reader.token");
    let user = format!(
        "tessera_e2e_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let name = "e2e/redis";
    let mut admin = redis();
    redis_call(
        &mut admin,
        &[
            b"ACL",
            b"SETUSER",
            user.as_bytes(),
            b"on",
            b"resetpass",
            b"~*",
            b"+@all",
        ],
    )
    .expect("create the ACL user");

    let mut issuer = start(root.path(), None, &reader_file, 60);
    let registered = issuer.cli_json(&[
        "secrets",
        "register",
        name,
        "--kind",
        "redis",
        "--url",
        &format!("redis://{REDIS}"),
        "--username",
        &user,
        "--tier",
        "2",
    ]);
    assert_eq!(registered["versions"][0]["stage"], "current");
    let reader = read_trimmed(&reader_file);
    // The inventory: age, due date and overdue flag per secret; the per-secret gauges
    // (exported by the scheduler's first pass) feed deploy/prometheus/secrets_alerts.yml.
    let listed = issuer.cli_json(&["secrets", "list"]);
    let entry = &listed["secrets"][0];
    assert_eq!(entry["name"], name);
    assert_eq!(entry["age_days"], 0);
    assert_eq!(entry["overdue"], false);
    assert_eq!(entry["cadence_days"], 180);
    assert!(
        entry["next_rotation_at"].as_i64().unwrap() > entry["last_rotated_at"].as_i64().unwrap()
    );
    let gauge = format!("tessera_secret_last_rotated_timestamp_seconds{{secret=\"{name}\"}}");
    let metrics = poll_until(
        patience(Duration::from_secs(10)),
        Duration::from_millis(200),
        || {
            let text = http::get(issuer.http_addr, "/metrics", &[]).ok()?.text();
            text.contains(&gauge).then_some(text)
        },
    )
    .expect("the per-secret gauge is exported");
    assert!(metrics.contains(&format!("tessera_secret_overdue{{secret=\"{name}\"}} 0")));
    let mut seen_values: Vec<Vec<u8>> = vec![read_value(&issuer, &reader, name).0.1];
    issuer.terminate(Duration::from_secs(20));
    // Each start truncates the log file: every run's log is kept here.
    let mut logs = issuer.log();

    for (point, remaining) in [
        ("after-create", vec!["set", "test", "finish"]),
        ("after-set", vec!["test", "finish"]),
        ("after-test", vec!["finish"]),
    ] {
        // The rotation dies at `point`: the CLI call fails, the process is gone.
        let mut dying = start(root.path(), Some(point), &reader_file, 60);
        let output = dying.cli(&["secrets", "rotate", name]);
        assert!(
            !output.success(),
            "{point}: the rotation survived its fail point"
        );
        assert!(
            dying.wait_exit(patience(Duration::from_secs(20))).is_some(),
            "{point}: the issuer did not die"
        );
        let dying_log = dying.log();
        assert!(
            dying_log.contains("fail point reached"),
            "{point}: {dying_log}"
        );
        logs.push_str(&dying_log);
        // The next run finds it unfinished and finishes it: the scheduler's first pass
        // at start-up (or an operator's `secrets rotate`, whichever comes first).
        let issuer = start(root.path(), None, &reader_file, 600);
        let before = seen_values.last().unwrap().clone();
        let shown = poll_until(
            patience(Duration::from_secs(20)),
            Duration::from_millis(100),
            || {
                let shown = issuer.cli_json(&["secrets", "show", name]);
                (shown["rotation_in_progress"] == "").then_some(shown)
            },
        )
        .unwrap_or_else(|| panic!("{point}: the killed rotation was not finished"));
        let version = shown["versions"][0]["version"].as_u64().unwrap();
        assert_eq!(shown["versions"][0]["stage"], "current", "{point}");
        // Every step of that version is recorded exactly once, the ones after the kill
        // by the run that resumed it.
        let history = issuer.cli_json(&["secrets", "history", name, "--limit", "50"]);
        let steps: Vec<(String, String)> = history["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["version"].as_u64() == Some(version))
            .map(|entry| {
                (
                    entry["step"].as_str().unwrap().to_owned(),
                    entry["actor"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let names: Vec<&str> = steps.iter().rev().map(|(step, _)| step.as_str()).collect();
        assert_eq!(names, ["create", "set", "test", "finish"], "{point}");
        let resumed_by: Vec<&str> = steps
            .iter()
            .rev()
            .skip(4 - remaining.len())
            .map(|(_, actor)| actor.as_str())
            .collect();
        assert!(
            resumed_by.iter().all(|actor| *actor == "system"),
            "{point}: {steps:?}"
        );
        let ((current_version, current), previous) = read_value(&issuer, &reader, name);
        assert_eq!(current_version, version);
        assert!(
            redis_auth(&user, &current),
            "{point}: new current does not work"
        );
        assert_eq!(previous.as_ref(), Some(&before), "{point}");
        assert!(
            redis_auth(&user, &before),
            "{point}: previous cut during the overlap"
        );
        seen_values.push(current);
        logs.push_str(&issuer.log());
        drop(issuer);
    }

    let issuer = start(root.path(), None, &reader_file, 600);
    let ((_, current), _) = read_value(&issuer, &reader, name);
    // emergency-rotate: rotated now, previous revoked at once, reported per secret.
    let report: Value = issuer.cli_json(&["emergency-rotate", name, "--reason", "drill"]);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["secrets"][0]["outcome"], "rotated");
    assert_eq!(report["secrets"][0]["previous_revoked"], true);
    assert!(
        !redis_auth(&user, &current),
        "the revoked password still works"
    );
    let ((_, newest), previous) = read_value(&issuer, &reader, name);
    assert!(previous.is_none());
    assert!(redis_auth(&user, &newest));
    seen_values.push(newest);

    // `--all`: every secret Tessera rotates; external ones are reported as skipped.
    let value_file = root.path().join("vendor.key");
    std::fs::write(&value_file, "vendor-key-v1\n").unwrap();
    issuer.cli_json(&[
        "secrets",
        "register",
        "e2e/vendor",
        "--kind",
        "external",
        "--value",
        &format!("@{}", value_file.display()),
    ]);
    let report: Value = issuer.cli_json(&["emergency-rotate", "--all", "--reason", "drill"]);
    let outcomes: Vec<(String, String)> = report["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["name"].as_str().unwrap().to_owned(),
                entry["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(outcomes.contains(&("e2e/vendor".to_owned(), "skipped".to_owned())));
    assert!(outcomes.contains(&(name.to_owned(), "rotated".to_owned())));
    let ((_, newest), _) = read_value(&issuer, &reader, name);
    assert!(redis_auth(&user, &newest));
    seen_values.push(newest);

    // No value ever reached a log.
    logs.push_str(&issuer.log());
    for value in &seen_values {
        assert!(
            !logs.contains(std::str::from_utf8(value).unwrap()),
            "a value is in the log"
        );
    }
    drop(issuer);
    let _ = redis_call(&mut admin, &[b"ACL", b"DELUSER", user.as_bytes()]);
}
