//! Webhook signing through the real binary, checked by an independent implementation:
//! `tessera-issuer webhooks sign --payload @FILE --json` signs, `webhooks keys` hands out
//! the tenant's `whsec_` secret, and Python's `standardwebhooks` package (the reference
//! library of the Standard Webhooks spec) verifies the headers with that secret and
//! refuses a tampered payload. `webhooks verify` accepts the same message and refuses a
//! tampered payload, a correctly signed but 10-minute-old timestamp and a forged
//! signature, exiting non-zero with the typed verdict.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::issuer::Issuer;
use crate::support::process::run_with_timeout;
use crate::support::python::tools;
use crate::support::wait::patience;

/// Verifies a signed message with `standardwebhooks` and prints, as JSON, whether a
/// tampered copy was refused and a genuine signature over a 10-minute-old timestamp
/// (computed here from the documented format) with the library's verdict on it.
const VERIFY_SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys, time
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret, payload_path, headers_path = sys.argv[1:4]
payload = open(payload_path, "rb").read()
signed = json.load(open(headers_path))
headers = {name: signed[name] for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}

Webhook(secret).verify(payload, headers)

def refused(data, headers):
    try:
        Webhook(secret).verify(data, headers)
        return False
    except WebhookVerificationError:
        return True

key = base64.b64decode(secret[len("whsec_"):])
old = str(int(time.time()) - 600)
content = f"{headers['webhook-id']}.{old}.".encode() + payload
old_signature = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
old_headers = dict(headers, **{"webhook-timestamp": old, "webhook-signature": old_signature})

print(json.dumps({
    "verified": True,
    "entries": headers["webhook-signature"].split(" "),
    "tampered_refused": refused(payload + b" ", headers),
    "old_timestamp": old,
    "old_signature": old_signature,
    "old_refused": refused(payload, old_headers),
}))
"#;

#[test]
fn standardwebhooks_verifies_a_cli_signed_webhook_and_cli_verify_refuses_tampering() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let scratch = root.path();
    // Exact bytes, non-ASCII and a trailing newline included: nothing may be trimmed.
    let payload = "{\"type\":\"invoice.paid\",\"customer\":\"Zoë\",\"amount\":4200}\n";
    let payload_path = scratch.join("payload.json");
    std::fs::write(&payload_path, payload).unwrap();
    let payload_arg = format!("@{}", payload_path.display());

    let signed = issuer.cli_json(&[
        "webhooks",
        "sign",
        "--tenant",
        "acme",
        "--payload",
        &payload_arg,
    ]);
    let webhook_id = signed["webhook-id"].as_str().expect("webhook-id");
    assert!(webhook_id.starts_with("msg_"), "{signed}");
    let headers_path = scratch.join("headers.json");
    std::fs::write(&headers_path, signed.to_string()).unwrap();

    let keys = issuer.cli_json(&["webhooks", "keys", "--tenant", "acme"]);
    let secrets = keys["secrets"].as_array().expect("secrets");
    assert_eq!(secrets.len(), 1, "{keys}");
    assert_eq!(secrets[0]["state"], "active", "{keys}");
    assert_eq!(secrets[0]["kid"], signed["kids"][0], "{keys} {signed}");
    let secret = secrets[0]["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{keys}");

    let checked = standardwebhooks(scratch, secret, &payload_path, &headers_path);
    assert_eq!(checked["verified"], true, "{checked}");
    assert_eq!(checked["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(checked["tampered_refused"], true, "{checked}");
    assert_eq!(checked["old_refused"], true, "{checked}");

    // The CLI accepts the genuine message.
    let headers_arg = headers_path.display().to_string();
    let verified = issuer.cli_json(&[
        "webhooks",
        "verify",
        "--tenant",
        "acme",
        "--payload",
        &payload_arg,
        "--headers",
        &headers_arg,
    ]);
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(verified["kid"], signed["kids"][0], "{verified}");

    // A tampered payload: one byte changed.
    let tampered_path = scratch.join("tampered.json");
    std::fs::write(&tampered_path, payload.replace("4200", "9200")).unwrap();
    let tampered_arg = format!("@{}", tampered_path.display());
    let refused = verify_refused(&issuer, &tampered_arg, &headers_arg, &[]);
    assert_eq!(refused["verdict"], "signature_mismatch", "{refused}");

    // A signature that is genuine but over a timestamp 10 minutes old.
    let old_timestamp = checked["old_timestamp"].as_str().expect("old timestamp");
    let old_signature = checked["old_signature"].as_str().expect("old signature");
    let refused = verify_refused(
        &issuer,
        &payload_arg,
        &headers_arg,
        &["--timestamp", old_timestamp, "--signature", old_signature],
    );
    assert_eq!(refused["verdict"], "timestamp_too_old", "{refused}");

    // A forged signature (32 bytes of the attacker's choosing).
    let forged = format!("v1,{}", "A".repeat(43) + "=");
    let refused = verify_refused(
        &issuer,
        &payload_arg,
        &headers_arg,
        &["--signature", &forged],
    );
    assert_eq!(refused["verdict"], "signature_mismatch", "{refused}");

    // The secret is printed only where asked for: never in the issuer's log.
    assert!(
        !issuer.log().contains(&secret["whsec_".len()..]),
        "a webhook secret reached the issuer's log"
    );
}

/// Runs the Python verification script; returns its JSON report.
fn standardwebhooks(scratch: &Path, secret: &str, payload: &Path, headers: &Path) -> Value {
    let script = scratch.join("verify_with_standardwebhooks.py");
    std::fs::write(&script, VERIFY_SCRIPT).unwrap();
    let mut command = Command::new(&tools().python);
    command.arg(&script).arg(secret).arg(payload).arg(headers);
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    output.assert_success("standardwebhooks verification of a Tessera webhook");
    serde_json::from_str(&output.stdout).expect("script prints JSON")
}

/// Runs `webhooks verify … --json` expecting a refusal; returns the printed verdict.
fn verify_refused(issuer: &Issuer, payload: &str, headers: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "webhooks",
        "verify",
        "--tenant",
        "acme",
        "--payload",
        payload,
        "--headers",
        headers,
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = issuer.cli(&args);
    assert!(
        !output.success(),
        "verify accepted {extra:?}: {}",
        output.stdout
    );
    assert!(
        output.stderr.contains("does not verify"),
        "{}",
        output.stderr
    );
    serde_json::from_str(&output.stdout).expect("verdict printed as JSON")
}
