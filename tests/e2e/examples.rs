//! The client examples (`examples/python`, grpcio with plain defaults and stubs generated
//! by its `generate.sh`; `examples/node`, `@grpc/grpc-js` loading proto/ at runtime), run
//! as a user runs them against a real sidecar's Unix socket: every token outcome the
//! examples document (accepted with claims; expired, forged, revoked, malformed: 401;
//! missing permission, other audience: 403; sidecar stopped: 503) arrives as documented,
//! and both map every `tessera.v1.Reason` of the proto to a status.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tessera_proto::v1 as pb;

use crate::sidecar::harness::{Stack, TENANT, assert_rejected, describe, issue, tamper_signature};
use crate::support::binaries::{target_dir, workspace_root};
use crate::support::process::{Output, clean_command, run_with_timeout};
use crate::support::python::tools;
use crate::support::wait::patience;

/// The two example languages.
#[derive(Clone, Copy, Debug)]
enum Language {
    Python,
    Node,
}

const LANGUAGES: [Language; 2] = [Language::Python, Language::Node];

/// The permission the tests' valid token carries.
const PERMISSION: &str = "invoices:read";

/// Python stubs generated once per test run by `examples/python/generate.sh` into
/// `<target>/examples-python-stubs` (never into the source tree).
fn python_stubs() -> &'static Path {
    static STUBS: OnceLock<PathBuf> = OnceLock::new();
    STUBS.get_or_init(|| {
        let out = target_dir().join("examples-python-stubs");
        let mut command = Command::new("bash");
        command
            .arg(workspace_root().join("examples/python/generate.sh"))
            .arg(&out)
            .env("PYTHON", &tools().python);
        run_with_timeout(command, patience(Duration::from_secs(120)))
            .assert_success("examples/python/generate.sh");
        out
    })
}

/// `node_modules` of the Node example, installed once per test run by
/// `examples/node/setup.sh` into `<target>/examples-node` (from package-lock.json).
fn node_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| {
        let mut command = Command::new("bash");
        command
            .arg(workspace_root().join("examples/node/setup.sh"))
            .arg(target_dir().join("examples-node"));
        let output = run_with_timeout(command, patience(Duration::from_secs(300)));
        output.assert_success("examples/node/setup.sh");
        PathBuf::from(output.stdout.trim()).join("node_modules")
    })
}

/// A command running `program` in a clean environment plus what the `language` example
/// needs: the generated stubs on `PYTHONPATH`, or the installed modules on `NODE_PATH`.
fn example_command(language: Language, program: &Path) -> Command {
    let mut command = clean_command(program);
    match language {
        Language::Python => command.env("PYTHONPATH", python_stubs()),
        Language::Node => command.env("NODE_PATH", node_modules()),
    };
    command
}

/// The interpreter and the folder of the `language` example.
fn interpreter_and_folder(language: Language) -> (PathBuf, PathBuf) {
    let examples = workspace_root().join("examples");
    match language {
        Language::Python => (tools().python.clone(), examples.join("python")),
        Language::Node => (PathBuf::from("node"), examples.join("node")),
    }
}

/// What `validate` printed and its exit code.
struct Verdict {
    json: Value,
    code: Option<i32>,
    output: Output,
}

/// Runs `validate TOKEN --socket SOCKET EXTRA…` of `language`.
fn validate(language: Language, socket: &Path, token: &str, extra: &[&str]) -> Verdict {
    let script = match language {
        Language::Python => "validate.py",
        Language::Node => "validate.js",
    };
    let (interpreter, folder) = interpreter_and_folder(language);
    let mut command = example_command(language, &interpreter);
    command
        .arg(folder.join(script))
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .arg(token);
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    let last_line = output.stdout.lines().last().unwrap_or_default();
    let json = serde_json::from_str(last_line).unwrap_or_else(|error| {
        panic!(
            "{language:?} validate printed no JSON ({error}); stdout:\n{}\nstderr:\n{}",
            output.stdout, output.stderr
        )
    });
    Verdict {
        json,
        code: output.code(),
        output,
    }
}

/// Asserts a rejection with `status`, `reason` and the documented exit code.
fn assert_answer(verdict: &Verdict, status: u64, reason: &str, what: &str) {
    let expected_code = match status {
        401 | 403 => 1,
        503 => 3,
        _ => 4,
    };
    assert!(
        verdict.json["status"] == status
            && verdict.json["reason"] == reason
            && verdict.code == Some(expected_code)
            && verdict.json.get("claims").is_none(),
        "{what}: expected {status} {reason} (exit {expected_code}), got {} (exit {:?}); \
         stderr:\n{}",
        verdict.json,
        verdict.code,
        verdict.output.stderr
    );
}

#[test]
fn examples_answer_each_verdict_of_a_real_sidecar_as_documented() {
    // A default lifetime of 1 s lowers the issuer's minimum lifetime to 1 s, and leeway 0
    // makes a 2-second token expired two seconds later.
    let stack = Stack::start(&[
        "--access-token-ttl-seconds",
        "1",
        "--max-access-token-ttl-seconds",
        "900",
    ]);
    let mut sidecar = stack
        .sidecar("examples")
        .args(["--leeway-seconds", "0"])
        .start();
    let client = sidecar.client();
    let issuer = &stack.issuer;

    let valid = issue(issuer, "alice", 300, &["--permission", PERMISSION]);
    let short = issue(issuer, "bob", 2, &[]);
    let revoked = issue(issuer, "carol", 300, &[]);
    issuer
        .cli(&[
            "revoke",
            "--jti",
            &revoked.jti,
            "--tenant",
            TENANT,
            "--reason",
            "examples test",
        ])
        .assert_success("revoke --jti");
    for (token, reason) in [
        (&revoked.token, pb::Reason::Revoked),
        (&short.token, pb::Reason::Expired),
    ] {
        let outcome = client.poll(
            token,
            patience(Duration::from_secs(15)),
            Duration::from_millis(50),
            |response| !response.valid,
        );
        let (_, response, _) = outcome.unwrap_or_else(|last| {
            panic!("still valid after 15 s: {}", describe(&last));
        });
        assert_rejected(&response, reason, "precondition");
    }
    let forged = tamper_signature(&valid.token);

    for language in LANGUAGES {
        let socket = &sidecar.socket;
        let accepted = validate(
            language,
            socket,
            &valid.token,
            &["--permission", PERMISSION],
        );
        let claims = &accepted.json["claims"];
        assert!(
            accepted.json["status"] == 200
                && accepted.code == Some(0)
                && claims["subject"] == "alice"
                && claims["tenant_id"] == TENANT
                && claims["jti"] == valid.jti.as_str()
                && claims["kid"] == valid.kid.as_str()
                && claims["expires_at"] == valid.expires_at
                && claims["permissions"] == serde_json::json!([PERMISSION])
                && claims["claims_json"]
                    .as_str()
                    .is_some_and(|json| json.contains("alice")),
            "{language:?}: the valid token: {} (exit {:?}); stderr:\n{}",
            accepted.json,
            accepted.code,
            accepted.output.stderr
        );

        let cases: [(&str, &str, &[&str], u64, &str); 6] = [
            ("expired", &short.token, &[], 401, "EXPIRED"),
            ("forged", &forged, &[], 401, "BAD_SIGNATURE"),
            ("revoked", &revoked.token, &[], 401, "REVOKED"),
            ("malformed", "not-a-token", &[], 401, "MALFORMED"),
            (
                "insufficient permission",
                &valid.token,
                &["--permission", "invoices:write"],
                403,
                "INSUFFICIENT_PERMISSIONS",
            ),
            (
                "other audience",
                &valid.token,
                &["--audience", "billing-api"],
                403,
                "WRONG_AUDIENCE",
            ),
        ];
        for (what, token, extra, status, reason) in cases {
            let verdict = validate(language, socket, token, extra);
            assert_answer(&verdict, status, reason, &format!("{language:?}: {what}"));
        }
    }

    // No sidecar: no verdict, 503, never "valid".
    let socket = sidecar.socket.clone();
    sidecar.stop(patience(Duration::from_secs(10)));
    for language in LANGUAGES {
        let verdict = validate(language, &socket, &valid.token, &[]);
        assert_answer(
            &verdict,
            503,
            "UNAVAILABLE",
            &format!("{language:?}: sidecar stopped"),
        );
    }
}

/// Every reason the proto declares has a status in both examples (a reason added to
/// `validator.proto` fails here until the examples say how to answer it), and statuses
/// agree between the two languages.
#[test]
fn examples_map_every_reason_of_the_proto() {
    let python = r#"
import json, tessera_auth
from tessera.v1 import validator_pb2
print(json.dumps({
    "declared": [n for n in validator_pb2.Reason.keys() if n != "REASON_UNSPECIFIED"],
    "mapped": {validator_pb2.Reason.Name(r): s for r, s in tessera_auth.STATUS_BY_REASON.items()},
}))
"#;
    let node = r#"
const auth = require('./tessera-auth');
const protoLoader = require('@grpc/proto-loader');
const definition = protoLoader.loadSync('tessera/v1/validator.proto', {
  includeDirs: [process.env.TESSERA_PROTO_DIR],
});
console.log(JSON.stringify({
  declared: definition['tessera.v1.Reason'].type.value
    .map((value) => value.name)
    .filter((name) => name !== 'REASON_UNSPECIFIED'),
  mapped: auth.STATUS_BY_REASON,
}));
"#;
    let mut tables = Vec::new();
    for language in LANGUAGES {
        let (interpreter, folder) = interpreter_and_folder(language);
        let mut command = example_command(language, &interpreter);
        match language {
            Language::Python => command.args(["-c", python]),
            Language::Node => command.args(["-e", node]),
        };
        command.current_dir(folder);
        command.env("TESSERA_PROTO_DIR", workspace_root().join("proto"));
        let output = run_with_timeout(command, patience(Duration::from_secs(60)));
        output.assert_success(&format!("{language:?} reason table"));
        let table: Value = serde_json::from_str(output.stdout.trim()).expect("JSON");
        let declared: Vec<&str> = table["declared"]
            .as_array()
            .expect("declared reasons")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(declared.len() >= 19, "{language:?}: {declared:?}");
        let mapped = table["mapped"].as_object().expect("mapped reasons");
        let mut mapped_names: Vec<&str> = mapped.keys().map(String::as_str).collect();
        let mut declared_sorted = declared.clone();
        mapped_names.sort_unstable();
        declared_sorted.sort_unstable();
        assert_eq!(
            mapped_names, declared_sorted,
            "{language:?}: the reasons mapped differ from those validator.proto declares"
        );
        tables.push(mapped.clone());
    }
    assert_eq!(
        tables[0], tables[1],
        "Python and Node answer some reason differently"
    );
    for (reason, status) in [
        ("EXPIRED", 401),
        ("BAD_SIGNATURE", 401),
        ("REVOKED", 401),
        ("KEY_REVOKED", 401),
        ("INSUFFICIENT_PERMISSIONS", 403),
        ("WRONG_AUDIENCE", 403),
        ("WRONG_ROLE", 403),
        ("WRONG_TENANT", 403),
        ("BUNDLE_STALE", 503),
    ] {
        assert_eq!(tables[0][reason], status, "{reason}");
    }
}
