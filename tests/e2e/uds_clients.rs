//! Every mainstream gRPC client reaches the sidecar's Unix socket with its default options
//! (issue 13, point 1): Python grpcio, @grpc/grpc-js and grpcurl 1.8.6 (a release that
//! still sends the socket path as `:authority`), each validating a real token; and, with a
//! hand-written HTTP/2 client (`uds_clients/raw_h2.rs`), what the server does with
//! authorities and pseudo-headers that no library would send.
//!
//! Many clients send the socket path, raw (`/tmp/x/sidecar.sock`: grpc-java, grpcurl before
//! 1.8.8) or percent-encoded (gRPC C-core: Python, C++, Ruby, PHP), as the HTTP/2
//! `:authority`. h2 0.4.20 refused such a request with RST_STREAM PROTOCOL_ERROR because
//! the value is not a URI authority; the workspace patches h2 (`third_party/h2`,
//! TESSERA-PATCH.md; upstream hyperium/h2#487) to treat an unparseable `:authority` as
//! absent, which HTTP/2 already allows, and to keep every other check. The raw-frame tests
//! pin both halves of that on the real sidecar and on the issuer, which shares the patch.

mod raw_h2;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use self::raw_h2::{
    ENHANCE_YOUR_CALM, Field, Outcome, PROTOCOL_ERROR, RawH2, field, grpc_request, says_valid,
    validate_token_request,
};
use crate::sidecar::harness::{Issued, Sidecar, Stack, issue, tamper_signature};
use crate::support::binaries::{target_dir, workspace_root};
use crate::support::process::{Output, clean_command, run_with_timeout};
use crate::support::python::tools;
use crate::support::wait::patience;

const VALIDATE_TOKEN: &str = "/tessera.v1.ValidatorService/ValidateToken";

#[test]
fn python_grpcio_with_default_options_validates_over_the_socket() {
    let fixture = Fixture::start("py-default");
    let python = &tools().python;
    let stubs = generate_python_stubs(python, fixture.stack.root.path());
    // tests/python/validate_grpcio.py without --authority: `grpc.insecure_channel("unix:"
    // + path)` and no channel options at all.
    let mut command = clean_command(python);
    command
        .arg(workspace_root().join("tests/python/validate_grpcio.py"))
        .arg("--stubs")
        .arg(&stubs)
        .arg("--socket")
        .arg(&fixture.sidecar.socket)
        .arg("--requests")
        .arg(&fixture.requests);
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    fixture.check(&parse_results(&output, "validate_grpcio.py"), "grpcio");
}

#[test]
fn grpc_js_with_default_options_validates_over_the_socket() {
    let fixture = Fixture::start("js-default");
    let mut command = clean_command("node");
    command
        .env("NODE_PATH", node_modules())
        .arg(workspace_root().join("tests/node/validate_grpc_js.js"))
        .arg("--proto-root")
        .arg(workspace_root().join("proto"))
        .arg("--socket")
        .arg(&fixture.sidecar.socket)
        .arg("--requests")
        .arg(&fixture.requests);
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    fixture.check(&parse_results(&output, "validate_grpc_js.js"), "grpc-js");
}

#[test]
fn grpcurl_without_authority_validates_over_the_socket() {
    let fixture = Fixture::start("curl-default");
    let socket = fixture.sidecar.socket.display().to_string();
    // No -authority: grpcurl 1.8.6 sends the socket path itself as `:authority`, and finds
    // the method through server reflection on the same connection settings.
    let grpcurl = |token: &str| {
        let mut command = clean_command(&tools().grpcurl);
        command
            .args(["-max-time", "20", "-plaintext", "-unix", "-d"])
            .arg(json!({ "token": token }).to_string())
            .arg(&socket)
            .arg("tessera.v1.ValidatorService/ValidateToken");
        let output = run_with_timeout(command, patience(Duration::from_secs(30)));
        output.assert_success("grpcurl ValidateToken over the socket without -authority");
        serde_json::from_str::<Value>(&output.stdout)
            .unwrap_or_else(|error| panic!("grpcurl printed no JSON ({error}): {}", output.stdout))
    };
    let valid = grpcurl(&fixture.issued.token);
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["claims"]["subject"], "curl-default", "{valid}");
    assert_eq!(
        valid["claims"]["kid"],
        fixture.issued.kid.as_str(),
        "{valid}"
    );
    let tampered = grpcurl(&tamper_signature(&fixture.issued.token));
    assert_ne!(tampered["valid"], true, "{tampered}");
    assert_eq!(tampered["reason"], "BAD_SIGNATURE", "{tampered}");
}

/// Authorities that are not URI authorities are served as if absent, from the socket path
/// that clients really send to 13 kB of garbage; ones past the header-list limit, or not
/// UTF-8, are refused cleanly as before the patch; the sidecar stays up and serving.
#[test]
fn unparseable_authorities_are_served_as_absent_and_oversized_ones_refused_cleanly() {
    let fixture = Fixture::start("raw-authority");
    let socket = &fixture.sidecar.socket;
    let path = socket.display().to_string();
    // What grpcio 1.85 sends for `unix:/tmp/x/sidecar.sock`: `tmp%2Fx%2Fsidecar.sock`.
    let percent_encoded = path.trim_start_matches('/').replace('/', "%2F");
    // Valid UTF-8 (anything else fails earlier, in HPACK decoding), under the 16 KiB
    // header-list limit, and nothing like a URI authority.
    let garbage: String = "\u{1}\t <>\"{}|\\^`[]@@::%%/?#é☃"
        .chars()
        .cycle()
        .take(12_000) // 13 200 bytes
        .collect();
    let served_as_absent: Vec<(&str, Vec<u8>)> = vec![
        ("the socket path", path.clone().into_bytes()),
        ("the percent-encoded path", percent_encoded.into_bytes()),
        ("an empty authority", Vec::new()),
        ("13 kB of garbage", garbage.into_bytes()),
        ("a valid authority (control)", b"localhost".to_vec()),
    ];
    let token_message = validate_token_request(&fixture.issued.token);
    let mut connection = RawH2::unix(socket);
    for (what, authority) in &served_as_absent {
        let outcome = connection.request(
            &grpc_request(VALIDATE_TOKEN, Some(authority)),
            Some(&token_message),
        );
        assert_validated(&outcome, what, &fixture.sidecar);
    }
    // Omitting `:authority` is what the patch maps an unparseable one to.
    let outcome = connection.request(&grpc_request(VALIDATE_TOKEN, None), Some(&token_message));
    assert_validated(&outcome, "no authority at all", &fixture.sidecar);

    // Past the 16 KiB header-list limit the value is never parsed: h2 answers 431 Request
    // Header Fields Too Large; past four times the limit (split over CONTINUATION frames)
    // it closes the connection with ENHANCE_YOUR_CALM, as for any oversized header.
    let over_limit = vec![b'/'; 20_000];
    let outcome = RawH2::unix(socket).request(
        &grpc_request(VALIDATE_TOKEN, Some(&over_limit)),
        Some(&token_message),
    );
    assert_eq!(
        outcome,
        Outcome::Answered {
            status_200: false,
            messages: Vec::new()
        },
        "a 20 000-byte authority: expected a bodiless non-200 answer (431)"
    );
    let far_over = vec![b'/'; 200_000];
    let outcome = RawH2::unix(socket).request(
        &grpc_request(VALIDATE_TOKEN, Some(&far_over)),
        Some(&token_message),
    );
    assert_eq!(
        outcome,
        Outcome::GoAway(ENHANCE_YOUR_CALM),
        "a 200 000-byte authority"
    );
    // An authority that is not even UTF-8 fails in HPACK decoding, before any URI parsing
    // (a connection error, unchanged by the patch).
    let outcome = RawH2::unix(socket).request(
        &grpc_request(VALIDATE_TOKEN, Some(b"\xff\xfe/sidecar.sock")),
        Some(&token_message),
    );
    assert_eq!(
        outcome,
        Outcome::GoAway(PROTOCOL_ERROR),
        "a non-UTF-8 authority"
    );

    let outcome =
        RawH2::unix(socket).request(&grpc_request(VALIDATE_TOKEN, None), Some(&token_message));
    assert_validated(&outcome, "a fresh connection afterwards", &fixture.sidecar);
    assert_no_panic(&fixture.sidecar.log());
}

/// The patch tolerates one thing only: every other malformed request is still reset with
/// PROTOCOL_ERROR, exactly as with a valid authority, even when it carries the socket path
/// as its authority; and the connection goes on serving well-formed requests.
#[test]
fn other_malformed_pseudo_headers_are_still_refused() {
    let fixture = Fixture::start("raw-malformed");
    let socket = &fixture.sidecar.socket;
    let path = socket.display().to_string().into_bytes();
    let token_message = validate_token_request(&fixture.issued.token);
    let mut connection = RawH2::unix(socket);
    for authority in [&path[..], b"localhost"] {
        let shown = String::from_utf8_lossy(authority);
        for (what, fields) in stream_errors(authority) {
            let outcome = connection.request(&fields, Some(&token_message));
            assert_eq!(
                outcome,
                Outcome::Reset(PROTOCOL_ERROR),
                "{what} (authority {shown:?}): expected RST_STREAM PROTOCOL_ERROR"
            );
        }
    }
    let outcome = connection.request(
        &grpc_request(VALIDATE_TOKEN, Some(&path)),
        Some(&token_message),
    );
    assert_validated(&outcome, "the same connection afterwards", &fixture.sidecar);

    // Header fields that HPACK decoding itself refuses end the whole connection.
    for authority in [&path[..], b"localhost"] {
        let shown = String::from_utf8_lossy(authority);
        for (what, fields) in connection_errors(authority) {
            let outcome = RawH2::unix(socket).request(&fields, Some(&token_message));
            assert_eq!(
                outcome,
                Outcome::GoAway(PROTOCOL_ERROR),
                "{what} (authority {shown:?})"
            );
        }
    }
    let outcome = RawH2::unix(socket).request(
        &grpc_request(VALIDATE_TOKEN, Some(&path)),
        Some(&token_message),
    );
    assert_validated(&outcome, "a fresh connection afterwards", &fixture.sidecar);
    assert_no_panic(&fixture.sidecar.log());
}

/// The issuer's gRPC server links the same patched h2: a TCP client that sends a Unix
/// socket path (a proxy that kept it, a misconfigured client) is served as if it had sent
/// no authority, and malformed requests are still refused.
#[test]
fn the_issuer_shares_the_authority_tolerance_and_nothing_else() {
    let fixture = Fixture::start("raw-issuer");
    let health = "/grpc.health.v1.Health/Check";
    let mut connection = RawH2::tcp(fixture.stack.issuer.grpc_addr);
    for authority in [&b"/run/tessera/issuer.sock"[..], b"localhost"] {
        let outcome = connection.request(&grpc_request(health, Some(authority)), Some(&[]));
        // HealthCheckResponse{status: SERVING}.
        let expected = Outcome::Answered {
            status_200: true,
            messages: vec![vec![0x08, 0x01]],
        };
        assert_eq!(
            outcome,
            expected,
            "issuer health with authority {:?}",
            String::from_utf8_lossy(authority)
        );
    }
    let mut no_method = grpc_request(health, Some(b"/run/tessera/issuer.sock"));
    no_method.retain(|(name, _)| name != b":method");
    assert_eq!(
        connection.request(&no_method, Some(&[])),
        Outcome::Reset(PROTOCOL_ERROR),
        "the issuer: no :method"
    );
    assert_no_panic(&fixture.stack.issuer.log());
}

/// Requests h2 resets with PROTOCOL_ERROR (a stream error), each a `ValidateToken` call
/// with `authority` and one defect. (A request without `:path` is not among them: h2
/// accepts it, with or without the patch, and the server answers it as an unknown route.)
fn stream_errors(authority: &[u8]) -> Vec<(&'static str, Vec<Field>)> {
    let base = || grpc_request(VALIDATE_TOKEN, Some(authority));
    let without = |name: &str| -> Vec<Field> {
        base()
            .into_iter()
            .filter(|(field_name, _)| field_name != name.as_bytes())
            .collect()
    };
    let first = |extra: Field| -> Vec<Field> { [vec![extra], base()].concat() };
    let last = |extra: Field| -> Vec<Field> { [base(), vec![extra]].concat() };
    vec![
        ("no :method", without(":method")),
        ("no :scheme", without(":scheme")),
        ("an empty :path", replacing(base(), ":path", b"")),
        ("a malformed :path", replacing(base(), ":path", b"/a b\x7f")),
        (
            "a malformed :scheme",
            replacing(base(), ":scheme", b"ht tp"),
        ),
        (":status in a request", first(field(":status", b"200"))),
        (
            ":protocol on a POST",
            first(field(":protocol", b"websocket")),
        ),
        (
            "a second :authority",
            first(field(":authority", b"localhost")),
        ),
        (
            "a pseudo-header after a regular one",
            last(field(":authority", b"localhost")),
        ),
        ("a connection header", last(field("connection", b"close"))),
        ("te other than trailers", last(field("te", b"gzip"))),
    ]
}

/// Requests whose header block HPACK decoding refuses: a connection error (GOAWAY
/// PROTOCOL_ERROR).
fn connection_errors(authority: &[u8]) -> Vec<(&'static str, Vec<Field>)> {
    let base = || grpc_request(VALIDATE_TOKEN, Some(authority));
    vec![
        (
            "an unknown pseudo-header",
            [vec![field(":foo", b"bar")], base()].concat(),
        ),
        (
            "an upper-case header name",
            [base(), vec![field("Content-Type", b"application/grpc")]].concat(),
        ),
        ("a non-UTF-8 :path", replacing(base(), ":path", b"/\xff")),
    ]
}

/// `fields` with the value of `name` replaced by `value`.
fn replacing(fields: Vec<Field>, name: &str, value: &[u8]) -> Vec<Field> {
    fields
        .into_iter()
        .map(|(field_name, field_value)| {
            if field_name == name.as_bytes() {
                (field_name, value.to_vec())
            } else {
                (field_name, field_value)
            }
        })
        .collect()
}

// === Fixture ===

/// An issuer, a sidecar on a Unix socket, a token for subject `<name>` and
/// `requests.json`: that token, the token with a tampered signature, and the token for a
/// foreign audience.
struct Fixture {
    sidecar: Sidecar,
    stack: Stack,
    issued: Issued,
    requests: PathBuf,
}

impl Fixture {
    fn start(subject: &str) -> Fixture {
        let stack = Stack::start(&[]);
        let sidecar = stack.sidecar("sidecar").start();
        let issued = issue(&stack.issuer, subject, 600, &[]);
        let requests = stack.root.path().join("requests.json");
        let body = json!([
            {"token": issued.token},
            {"token": tamper_signature(&issued.token)},
            {"token": issued.token, "audience": "other"},
        ]);
        std::fs::write(&requests, body.to_string()).expect("write requests.json");
        Fixture {
            sidecar,
            stack,
            issued,
            requests,
        }
    }

    /// Checks a client script's results for `requests.json`: valid with the token's
    /// claims, BAD_SIGNATURE, WRONG_AUDIENCE.
    fn check(&self, results: &Value, client: &str) {
        let valid = &results[0];
        assert!(
            valid["error"].is_null(),
            "{client} with default options: ValidateToken failed over the socket: {}; sidecar \
             log:\n{}",
            valid["error"],
            self.sidecar.log()
        );
        assert_eq!(valid["valid"], true, "{client}: {valid}");
        assert_eq!(valid["reason"], "REASON_UNSPECIFIED", "{client}: {valid}");
        assert_eq!(valid["kid"], self.issued.kid.as_str(), "{client}: {valid}");
        let claims: Value = serde_json::from_str(valid["claims_json"].as_str().unwrap_or_default())
            .unwrap_or_else(|error| panic!("{client}: claims_json is not JSON ({error}): {valid}"));
        assert_eq!(
            claims["jti"],
            self.issued.jti.as_str(),
            "{client}: {claims}"
        );
        assert_eq!(claims["sub"], valid["subject"], "{client}: {claims}");
        assert_eq!(
            results[1]["reason"], "BAD_SIGNATURE",
            "{client}: {}",
            results[1]
        );
        assert_eq!(
            results[2]["reason"], "WRONG_AUDIENCE",
            "{client}: {}",
            results[2]
        );
    }
}

/// Asserts that `outcome` is a 200 carrying one `ValidateTokenResponse{valid: true}`.
fn assert_validated(outcome: &Outcome, what: &str, sidecar: &Sidecar) {
    match outcome {
        Outcome::Answered {
            status_200: true,
            messages,
        } if messages.len() == 1 && says_valid(&messages[0]) => {}
        other => panic!(
            "{what}: expected a valid verdict, got {other:?}; sidecar log:\n{}",
            sidecar.log()
        ),
    }
}

fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
}

fn parse_results(output: &Output, script: &str) -> Value {
    output.assert_success(script);
    serde_json::from_str(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{script} did not print JSON ({error}): {}\n{}",
            output.stdout, output.stderr
        )
    })
}

/// Generates Python stubs for every `proto/tessera/v1/*.proto` into `<dir>/stubs` with
/// grpcio-tools (the test's own copy: nothing generated is committed).
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
    let mut command = clean_command(python);
    command
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_root)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&protos);
    run_with_timeout(command, patience(Duration::from_secs(60)))
        .assert_success("python -m grpc_tools.protoc");
    out
}

/// `<target>/e2e-node/node_modules` with @grpc/grpc-js and @grpc/proto-loader, installed
/// by tests/node/setup.sh once per test run; panics with its output when that fails.
pub(crate) fn node_modules() -> &'static Path {
    static NODE_MODULES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let installed = NODE_MODULES.get_or_init(|| {
        let script = workspace_root().join("tests/node/setup.sh");
        let mut command = Command::new("bash");
        command.arg(&script).arg(target_dir().join("e2e-node"));
        let output = run_with_timeout(command, patience(Duration::from_secs(600)));
        if !output.success() {
            return Err(format!(
                "{} failed ({:?}):\n{}\n{}",
                script.display(),
                output.status,
                output.stdout,
                output.stderr
            ));
        }
        Ok(PathBuf::from(output.stdout.trim()).join("node_modules"))
    });
    match installed {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}
