//! A real third-party verifier: Python PyJWT's `PyJWKClient` fetches the live JWKS URL and
//! verifies tokens issued by the real issuer (RS256, ES256, EdDSA); plus the JWKS caching
//! headers (ETag, Cache-Control max-age, 304 on If-None-Match).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::http;
use crate::support::issuer::Issuer;
use crate::support::process::run_with_timeout;
use crate::support::python::tools;
use crate::support::wait::patience;

/// Verifies `token` with PyJWT against `jwks_url`, then checks that a copy with one claim
/// changed is rejected; prints `{header, claims, forged_rejected}` as JSON.
const VERIFY_SCRIPT: &str = r#"
import base64, json, sys
import jwt

jwks_url, token, algorithm, audience, issuer = sys.argv[1:6]
client = jwt.PyJWKClient(jwks_url, cache_keys=False)
signing_key = client.get_signing_key_from_jwt(token)
options = dict(algorithms=[algorithm], audience=audience, issuer=issuer)
claims = jwt.decode(token, signing_key.key, **options)
header = jwt.get_unverified_header(token)

head, _, signature = token.split(".")
forged = dict(claims, tenant_id="someone-else")
forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
try:
    jwt.decode(f"{head}.{forged_payload}.{signature}", signing_key.key, **options)
    forged_rejected = False
except jwt.InvalidSignatureError:
    forged_rejected = True

print(json.dumps({"header": header, "claims": claims, "forged_rejected": forged_rejected}))
"#;

/// The JWKS prepublish window by default (DESIGN §3): max-age must stay below it.
const DEFAULT_PREPUBLISH_SECONDS: u64 = 3600;

#[test]
fn pyjwt_verifies_issued_token_against_live_jwks() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());

    let discovery = http::get(issuer.http_addr, "/.well-known/openid-configuration", &[])
        .expect("discovery document");
    assert_eq!(discovery.status, 200, "{}", discovery.text());
    let discovery = discovery.json();
    let jwks_url = issuer.http_url("/.well-known/jwks.json");
    assert_eq!(discovery["issuer"], "tessera", "{discovery}");
    assert_eq!(discovery["jwks_uri"], jwks_url.as_str(), "{discovery}");

    verify_with_pyjwt(&issuer, root.path(), "RS256");
    assert_jwks_caching_headers(&issuer);
}

#[test]
fn pyjwt_verifies_es256_and_eddsa_tokens_against_live_jwks() {
    let root = tempfile::tempdir().unwrap();
    for algorithm in ["ES256", "EdDSA"] {
        let issuer = Issuer::builder(root.path(), algorithm)
            .args(["--access-algorithm", algorithm])
            .start();
        verify_with_pyjwt(&issuer, root.path(), algorithm);
    }
}

/// Issues a token through the CLI and has PyJWT verify it against the live JWKS.
fn verify_with_pyjwt(issuer: &Issuer, scratch: &Path, algorithm: &str) {
    let issued = issuer.cli_json(&[
        "token",
        "issue",
        "--subject",
        "alice",
        "--tenant",
        "acme",
        "--role",
        "staff",
        "--permission",
        "orders:read",
    ]);
    let token = issued["token"].as_str().expect("token in CLI output");

    let script = scratch.join("verify_with_pyjwt.py");
    std::fs::write(&script, VERIFY_SCRIPT).unwrap();
    let mut command = Command::new(&tools().python);
    command
        .arg(&script)
        .arg(issuer.http_url("/.well-known/jwks.json"))
        .arg(token)
        .arg(algorithm)
        .arg("tessera-api")
        .arg("tessera");
    let output = run_with_timeout(command, patience(Duration::from_secs(60)));
    output.assert_success(&format!("PyJWT verification of an {algorithm} token"));
    let verified: Value = serde_json::from_str(&output.stdout).expect("script prints JSON");

    let header = &verified["header"];
    assert_eq!(header["alg"], algorithm, "{verified}");
    assert_eq!(header["typ"], "at+jwt", "{verified}");
    assert_eq!(header["kid"], issued["kid"], "{verified}");
    let claims = &verified["claims"];
    assert_eq!(claims["sub"], "alice", "{verified}");
    assert_eq!(claims["tenant_id"], "acme", "{verified}");
    assert_eq!(claims["role"], "staff", "{verified}");
    assert_eq!(claims["iss"], "tessera", "{verified}");
    assert_eq!(claims["aud"], "tessera-api", "{verified}");
    assert_eq!(claims["jti"], issued["jti"], "{verified}");
    assert_eq!(claims["exp"], issued["expires_at"], "{verified}");
    assert_eq!(
        claims["permissions"],
        serde_json::json!(["orders:read"]),
        "{verified}"
    );
    assert_eq!(
        verified["forged_rejected"], true,
        "PyJWT accepted a token whose payload was changed: {verified}"
    );
}

/// ETag, Cache-Control max-age below the prepublish window, 304 on a matching
/// If-None-Match, and a new ETag once a rotation changes the key set.
fn assert_jwks_caching_headers(issuer: &Issuer) {
    let first = http::get(issuer.http_addr, "/.well-known/jwks.json", &[]).expect("JWKS");
    assert_eq!(first.status, 200, "{}", first.text());
    let etag = first.header("etag").expect("JWKS has an ETag").to_owned();
    let cache_control = first
        .header("cache-control")
        .expect("JWKS has Cache-Control");
    let max_age = cache_control
        .split(',')
        .filter_map(|directive| directive.trim().strip_prefix("max-age="))
        .find_map(|seconds| seconds.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no max-age in Cache-Control: {cache_control}"));
    assert!(
        max_age > 0 && max_age < DEFAULT_PREPUBLISH_SECONDS,
        "max-age {max_age} must be positive and below the prepublish window"
    );
    let keys = first.json();
    assert!(
        keys["keys"].as_array().is_some_and(|keys| !keys.is_empty()),
        "{keys}"
    );

    let revalidated = http::get(
        issuer.http_addr,
        "/.well-known/jwks.json",
        &[("If-None-Match", &etag)],
    )
    .expect("conditional JWKS");
    assert_eq!(revalidated.status, 304, "{}", revalidated.text());
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));

    let other = http::get(
        issuer.http_addr,
        "/.well-known/jwks.json",
        &[("If-None-Match", "\"not-the-current-etag\"")],
    )
    .expect("conditional JWKS");
    assert_eq!(other.status, 200);

    issuer.cli_json(&["keys", "rotate", "--reason", "jwks etag test"]);
    let rotated = http::get(
        issuer.http_addr,
        "/.well-known/jwks.json",
        &[("If-None-Match", &etag)],
    )
    .expect("JWKS after rotation");
    assert_eq!(
        rotated.status, 200,
        "a rotation must change the JWKS and its ETag"
    );
    assert_ne!(rotated.header("etag"), Some(etag.as_str()));
}
