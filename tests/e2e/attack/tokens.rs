//! Attack cases: tokens, against the real issuer and sidecar. Forgeries (`alg: none`,
//! HS256 keyed with the RSA public key, keys embedded in or pointed at by the header,
//! `crit`), kid injection and a flood of unknown kids (resyncs stay bounded), oversize
//! tokens and encoding tricks; then tokens validly signed but out of bounds, as a buggy or
//! compromised issuer would mint them (a key unwrapped from the SQLite file with the
//! KEK): future `iat`, a ten-year lifetime, an action key's token presented as an access
//! token, a pending key, a retiring key after it stopped signing. Last, tenants: the
//! sidecar's `tenant_id` requirement answers WRONG_TENANT before revocation shows, and
//! introspection by a client confined to another tenant learns nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tessera_common::credential::{Credential, CredentialKind, hash_secret};
use tessera_common::ids::KeyId;
use tessera_common::keys::Algorithm;
use tessera_issuer::keys::material;
use tessera_issuer::keys::signer::Signer;
use tessera_proto::v1 as pb;

use crate::key_secrecy::unwrap_all_private_keys;
use crate::sidecar::harness::{
    RESYNCS, SocketClient, Stack, TENANT, assert_rejected, assert_valid, issue, now_unix_ms,
    with_alg_none, with_kid,
};
use crate::support::http;
use crate::support::issuer::Issuer;
use crate::support::wait::{patience, poll_until};

/// A private key taken from the issuer's database, with what `keys list` says of it.
struct StolenKey {
    kid: String,
    key_set: String,
    signer: Signer,
}

/// Every private key the issuer still stores, unwrapped with its KEK: what a buggy or
/// compromised issuer can sign with.
fn steal_keys(issuer: &Issuer) -> Vec<StolenKey> {
    let listed = issuer.cli_json(&["keys", "list", "--all"]);
    let keys = listed["keys"].as_array().expect("`keys list` prints keys");
    unwrap_all_private_keys(&issuer.data_dir)
        .into_iter()
        .filter_map(|(kid, pkcs8)| {
            let listed = keys
                .iter()
                .find(|key| key["kid"] == kid.as_str())
                .unwrap_or_else(|| panic!("{kid} is stored but not listed: {listed}"));
            let algorithm: Algorithm = listed["algorithm"].as_str().unwrap().parse().unwrap();
            // A webhook (HMAC) secret signs no JWS a verifier accepts.
            if algorithm.is_symmetric() {
                return None;
            }
            let signer = Signer::from_pkcs8(KeyId::new(kid.clone()).unwrap(), algorithm, &pkcs8)
                .unwrap_or_else(|error| panic!("{kid}: {error}"));
            Some(StolenKey {
                kid,
                key_set: listed["key_set"].as_str().unwrap().to_owned(),
                signer,
            })
        })
        .collect()
}

fn stolen<'a>(keys: &'a [StolenKey], kid: &str) -> &'a StolenKey {
    keys.iter()
        .find(|key| key.kid == kid)
        .unwrap_or_else(|| panic!("no private key for {kid}"))
}

/// A compact JWS of `header` and `claims` signed by `signer` (whatever the header says).
fn sign(signer: &Signer, header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = signer.sign(signing_input.as_bytes()).expect("sign");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The standard access-token header for `key`.
fn access_header(key: &StolenKey) -> Value {
    json!({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"})
}

/// The claims object of `token`.
fn payload_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// `template` re-dated: issued at `iat_ms`, living `lifetime_seconds`, with a fresh jti.
fn dated(template: &Value, iat_ms: i64, lifetime_seconds: i64) -> Value {
    let mut claims = template.clone();
    claims["iat"] = json!(iat_ms.div_euclid(1000));
    claims["iat_ms"] = json!(iat_ms);
    claims["nbf"] = json!(iat_ms.div_euclid(1000));
    claims["exp"] = json!(iat_ms.div_euclid(1000) + lifetime_seconds);
    claims["jti"] = json!(uuid::Uuid::now_v7().to_string());
    claims
}

/// HMAC-SHA256 of `message` under `key` (the credential module's HMAC, keyed by hand).
fn hmac_sha256(key: &[u8], message: &str) -> [u8; 32] {
    let carrier = Credential::from_parts(CredentialKind::Refresh, "x".into(), message.into());
    hash_secret(key, &carrier.secret)
}

/// Waits until `token` gets `reason` (the bundle reaches the sidecar in milliseconds;
/// this absorbs a first unknown-kid resync).
fn assert_rejected_eventually(client: &SocketClient, token: &str, reason: pb::Reason, what: &str) {
    let deadline = patience(Duration::from_secs(10));
    let last = poll_until(deadline, Duration::from_millis(50), || {
        let response = client.validate(token);
        (response.reason() == reason).then_some(response)
    });
    let response = last.unwrap_or_else(|| client.validate(token));
    assert_rejected(&response, reason, what);
}

#[test]
fn alg_none_and_hs256_keyed_with_the_rsa_public_key_are_algorithm_mismatch() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();
    let issued = issue(&stack.issuer, "alice", 600, &[]);
    assert_valid(&client.validate(&issued.token), &issued.kid, "issued token");

    let none = with_alg_none(&issued.token);
    assert_rejected(
        &client.validate(&none),
        pb::Reason::AlgorithmMismatch,
        "alg none",
    );
    let none_lower = none.replacen(
        none.split('.').next().unwrap(),
        &URL_SAFE_NO_PAD.encode(json!({"alg": "None", "kid": issued.kid}).to_string()),
        1,
    );
    assert_rejected(
        &client.validate(&none_lower),
        pb::Reason::AlgorithmMismatch,
        "alg None",
    );

    // The HMAC key an attacker can know: the published RSA key, as JWKS JSON, as the JWK
    // object, and as the raw modulus.
    let jwks = http::get(stack.issuer.http_addr, "/.well-known/jwks.json", &[])
        .expect("GET jwks")
        .json();
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|key| key["kid"] == issued.kid.as_str()))
        .unwrap_or_else(|| panic!("{} not in the JWKS: {jwks}", issued.kid))
        .clone();
    let modulus = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let payload = issued.token.split('.').nth(1).unwrap();
    let header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "HS256", "kid": issued.kid, "typ": "at+jwt"}).to_string());
    let signing_input = format!("{header}.{payload}");
    for (what, key) in [
        ("JWKS text", jwks.to_string().into_bytes()),
        ("JWK text", jwk.to_string().into_bytes()),
        ("modulus", modulus),
    ] {
        let mac = hmac_sha256(&key, &signing_input);
        let forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac));
        assert_rejected(
            &client.validate(&forged),
            pb::Reason::AlgorithmMismatch,
            &format!("HS256 keyed with the {what}"),
        );
    }
}

#[test]
fn embedded_jwk_jku_x5u_x5c_headers_never_supply_the_key() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();
    let issued = issue(&stack.issuer, "alice", 600, &[]);
    assert_valid(&client.validate(&issued.token), &issued.kid, "issued token");

    let generated = material::generate(Algorithm::Rs256, "attacker").unwrap();
    let attacker = Signer::from_pkcs8(
        KeyId::new("attacker").unwrap(),
        Algorithm::Rs256,
        &generated.private_key,
    )
    .unwrap();
    let attacker_jwk = serde_json::to_value(&generated.public_jwk).unwrap();
    let claims = payload_of(&issued.token);
    let pointers = [
        ("jwk", attacker_jwk.clone()),
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/attacker.pem")),
        (
            "x5c",
            json!([URL_SAFE_NO_PAD.encode(b"attacker certificate")]),
        ),
    ];
    for (member, value) in pointers {
        // The real kid: the bundle's key is used, and the attacker's signature fails.
        let mut header = json!({"alg": "RS256", "kid": issued.kid, "typ": "at+jwt"});
        header[member] = value.clone();
        let forged = sign(&attacker, &header, &claims);
        assert_rejected(
            &client.validate(&forged),
            pb::Reason::BadSignature,
            &format!("{member} with the issuer's kid"),
        );
        // The attacker's own kid: never learned from the token.
        header["kid"] = json!("attacker");
        let forged = sign(&attacker, &header, &claims);
        assert_rejected(
            &client.validate(&forged),
            pb::Reason::UnknownKid,
            &format!("{member} with the attacker's kid"),
        );
        // No kid at all: no fallback to the embedded key.
        header.as_object_mut().unwrap().remove("kid");
        let forged = sign(&attacker, &header, &claims);
        assert_rejected(
            &client.validate(&forged),
            pb::Reason::Malformed,
            &format!("{member} without kid"),
        );
    }
}

#[test]
fn kid_injection_and_a_flood_of_unknown_kids_keep_resyncs_bounded() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();
    let issued = issue(&stack.issuer, "alice", 600, &[]);
    assert_valid(&client.validate(&issued.token), &issued.kid, "issued token");
    let resyncs_before = sidecar.metric(RESYNCS);

    let long_kid = "k".repeat(4_000);
    let injected = [
        ("path traversal", "../../../../etc/passwd"),
        ("absolute path", "/dev/zero"),
        ("SQL", "' OR '1'='1' --"),
        (
            "SQL union",
            "x' UNION SELECT wrapped_private FROM signing_keys --",
        ),
        ("NUL byte", "kid\u{0}admin"),
        ("URL", "https://attacker.example/key"),
        ("very long", long_kid.as_str()),
    ];
    for (what, kid) in injected {
        assert_rejected(
            &client.validate(&with_kid(&issued.token, kid)),
            pb::Reason::UnknownKid,
            &format!("kid injection: {what}"),
        );
    }
    // The same unknown kid over and over: at most one resync for it.
    let repeated = with_kid(&issued.token, "repeated-unknown-kid");
    for _ in 0..50 {
        assert_rejected(
            &client.validate(&repeated),
            pb::Reason::UnknownKid,
            "repeated kid",
        );
    }
    // A flood of distinct unknown kids.
    let started = Instant::now();
    let n_kids = 300;
    for i in 0..n_kids {
        let forged = with_kid(
            &issued.token,
            &format!("flood-{i}-{}", uuid::Uuid::now_v7()),
        );
        assert_rejected(
            &client.validate(&forged),
            pb::Reason::UnknownKid,
            "flooded kid",
        );
    }
    let elapsed = started.elapsed();
    // One resync per global interval (2 s) at most, plus the injected and repeated kids'.
    let bound = (elapsed.as_secs_f64() / 2.0).ceil() + 1.0 + injected.len() as f64 + 1.0;
    let resyncs = sidecar.metric(RESYNCS) - resyncs_before;
    assert!(
        resyncs >= 1.0,
        "no resync counted: the bound below would prove nothing"
    );
    assert!(
        resyncs <= bound,
        "{resyncs} resyncs for {n_kids} unknown kids in {elapsed:?} (bound {bound})"
    );
    // The sidecar is still serving, and still validates the real token.
    assert_eq!(sidecar.readyz(), Some(200));
    assert_valid(
        &client.validate(&issued.token),
        &issued.kid,
        "after the flood",
    );
}

#[test]
fn oversize_tokens_and_encoding_tricks_are_refused() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();
    let issued = issue(&stack.issuer, "alice", 600, &[]);
    let token = issued.token.as_str();
    assert_valid(&client.validate(token), &issued.kid, "issued token");

    let just_over = format!("{token}{}", "A".repeat(8 * 1024 + 1 - token.len()));
    assert_eq!(just_over.len(), 8 * 1024 + 1);
    assert_rejected(
        &client.validate(&just_over),
        pb::Reason::TooLarge,
        "8 KiB + 1",
    );
    let huge = "A".repeat(200 * 1024);
    assert_rejected(&client.validate(&huge), pb::Reason::TooLarge, "200 KiB");
    let mut fat_claims = payload_of(token);
    fat_claims["padding"] = json!("x".repeat(9 * 1024));
    let fat = format!(
        "{}.{}.{}",
        token.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(fat_claims.to_string()),
        token.rsplit('.').next().unwrap()
    );
    assert_rejected(
        &client.validate(&fat),
        pb::Reason::TooLarge,
        "oversize claims",
    );

    let mut parts = token.split('.');
    let (header, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert!(
        signature.contains(['-', '_']),
        "an RS256 signature without - or _ is too unlikely to plan for: {signature}"
    );
    let standard = |segment: &str| segment.replace('-', "+").replace('_', "/");
    let malformed = [
        ("padded header", format!("{header}==.{payload}.{signature}")),
        (
            "padded signature",
            format!("{header}.{payload}.{signature}=="),
        ),
        (
            "standard base64 signature",
            format!("{header}.{payload}.{}", standard(signature)),
        ),
        ("leading space", format!(" {token}")),
        ("trailing newline", format!("{token}\n")),
        (
            "space inside the header",
            format!("{} {}.{payload}.{signature}", &header[..4], &header[4..]),
        ),
        ("fourth segment", format!("{token}.{signature}")),
        ("empty signature segment", format!("{header}.{payload}.")),
        ("two segments", format!("{header}.{payload}")),
    ];
    for (what, trick) in malformed {
        let expected = if what == "empty signature segment" {
            // An empty signature decodes; it then fails verification.
            pb::Reason::BadSignature
        } else {
            pb::Reason::Malformed
        };
        assert_rejected(&client.validate(&trick), expected, what);
    }
    // The payload is decoded only after its bytes are verified: padding changes them.
    let padded_payload = format!("{header}.{payload}=.{signature}");
    assert_rejected(
        &client.validate(&padded_payload),
        pb::Reason::BadSignature,
        "padded payload",
    );
    assert_valid(&client.validate(token), &issued.kid, "after the tricks");
}

#[test]
fn validly_signed_out_of_bounds_tokens_of_a_compromised_issuer_are_refused() {
    let stack = Stack::start(&[]);
    // A one-second leeway at the sidecar keeps the retiring-key case short.
    let sidecar = stack
        .sidecar("sidecar")
        .args(["--leeway-seconds", "1"])
        .start();
    let client = sidecar.client();
    let issued = issue(&stack.issuer, "alice", 600, &[]);
    assert_valid(&client.validate(&issued.token), &issued.kid, "issued token");
    let keys = steal_keys(&stack.issuer);
    let access = stolen(&keys, &issued.kid);
    let template = payload_of(&issued.token);
    let now = now_unix_ms();

    // The stolen key signs what the issuer signs: accepted (the forgery machinery works).
    let in_bounds = sign(
        &access.signer,
        &access_header(access),
        &dated(&template, now, 600),
    );
    assert_valid(
        &client.validate(&in_bounds),
        &access.kid,
        "in-bounds forgery",
    );

    let future = sign(
        &access.signer,
        &access_header(access),
        &dated(&template, now + 3_600_000, 600),
    );
    assert_rejected(
        &client.validate(&future),
        pb::Reason::NotYetValid,
        "iat an hour ahead",
    );
    let mut split = dated(&template, now, 600);
    split["iat_ms"] = json!(now - 3_600_000);
    let split = sign(&access.signer, &access_header(access), &split);
    assert_rejected(
        &client.validate(&split),
        pb::Reason::Malformed,
        "iat_ms an hour before iat",
    );
    let decade = sign(
        &access.signer,
        &access_header(access),
        &dated(&template, now, 10 * 365 * 86_400),
    );
    assert_rejected(
        &client.validate(&decade),
        pb::Reason::LifetimeTooLong,
        "exp - iat = 10 years",
    );
    let mut crit_header = access_header(access);
    crit_header["crit"] = json!(["exp"]);
    let crit = sign(&access.signer, &crit_header, &dated(&template, now, 600));
    assert_rejected(
        &client.validate(&crit),
        pb::Reason::Malformed,
        "crit header",
    );

    let action = keys
        .iter()
        .find(|key| key.key_set == "action")
        .expect("the action set's signer is stored");
    let action_as_access = sign(
        &action.signer,
        &access_header(action),
        &dated(&template, now, 600),
    );
    assert_rejected_eventually(
        &client,
        &action_as_access,
        pb::Reason::WrongTokenType,
        "action key's token as an access token",
    );

    // A rotation: the stolen key is now retiring. What it signed before still verifies;
    // what it signs after it stopped signing (plus the leeway) does not.
    let before_rotation = dated(&template, now_unix_ms(), 600);
    stack
        .issuer
        .cli_json(&["keys", "rotate", "--reason", "attack suite"]);
    let rotated_by = now_unix_ms();
    let signed_before = sign(&access.signer, &access_header(access), &before_rotation);
    while now_unix_ms() < rotated_by + 2_500 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let signed_after = sign(
        &access.signer,
        &access_header(access),
        &dated(&template, now_unix_ms(), 600),
    );
    assert_rejected_eventually(
        &client,
        &signed_after,
        pb::Reason::KeyNotActive,
        "retiring key, token issued after it stopped signing",
    );
    assert_valid(
        &client.validate(&signed_before),
        &access.kid,
        "retiring key, issued before",
    );

    // A successor published an hour ahead: a token signed with it now is refused.
    let prepublished = stack.issuer.cli_json(&[
        "keys",
        "rotate",
        "--reason",
        "attack suite",
        "--prepublish-seconds",
        "3600",
    ]);
    let pending_kid = prepublished["new_kid"]
        .as_str()
        .expect("new_kid")
        .to_owned();
    let keys = steal_keys(&stack.issuer);
    let pending = stolen(&keys, &pending_kid);
    let early = sign(
        &pending.signer,
        &access_header(pending),
        &dated(&template, now_unix_ms(), 600),
    );
    assert_rejected_eventually(&client, &early, pb::Reason::KeyNotActive, "pending key");
}

#[test]
fn a_required_tenant_answers_wrong_tenant_before_revocation_at_the_sidecar() {
    let stack = Stack::start(&[]);
    let sidecar = stack.sidecar("sidecar").start();
    let client = sidecar.client();
    let live = issue(&stack.issuer, "alice", 600, &[]);
    let revoked = issue(&stack.issuer, "bob", 600, &[]);
    stack.issuer.cli_json(&[
        "revoke",
        "--jti",
        &revoked.jti,
        "--tenant",
        TENANT,
        "--reason",
        "attack suite",
    ]);
    assert_rejected_eventually(
        &client,
        &revoked.token,
        pb::Reason::Revoked,
        "revoked token",
    );
    let for_tenant = |token: &str, tenant: &str| pb::ValidateTokenRequest {
        token: token.to_owned(),
        tenant_id: tenant.to_owned(),
        ..Default::default()
    };
    assert_valid(
        &client.validate_request(for_tenant(&live.token, TENANT)),
        &live.kid,
        "own tenant",
    );
    assert_rejected(
        &client.validate_request(for_tenant(&revoked.token, TENANT)),
        pb::Reason::Revoked,
        "own tenant, revoked",
    );
    for (what, token) in [("live", &live.token), ("revoked", &revoked.token)] {
        assert_rejected(
            &client.validate_request(for_tenant(token, "globex")),
            pb::Reason::WrongTenant,
            &format!("another tenant's {what} token"),
        );
    }
    let responses = client.validate_stream(vec![
        pb::ValidateStreamRequest {
            request_id: 1,
            token: revoked.token.clone(),
            tenant_id: "globex".into(),
            ..Default::default()
        },
        pb::ValidateStreamRequest {
            request_id: 2,
            token: live.token.clone(),
            tenant_id: TENANT.into(),
            ..Default::default()
        },
    ]);
    let reasons: std::collections::BTreeMap<u64, pb::Reason> = responses
        .iter()
        .map(|response| (response.request_id, response.reason()))
        .collect();
    assert_eq!(
        reasons,
        [(1, pb::Reason::WrongTenant), (2, pb::Reason::Unspecified)]
            .into_iter()
            .collect(),
        "ValidateStream with tenant_id"
    );
}

/// Creates an introspect-only client confined to `tenant`; returns its credential file.
fn introspector(issuer: &Issuer, root: &Path, tenant: &str) -> std::path::PathBuf {
    let file = root.join(format!("introspect-{tenant}.credential"));
    issuer
        .cli(&[
            "clients",
            "create",
            "--name",
            &format!("introspect-{tenant}"),
            "--scope",
            "introspect",
            "--tenant",
            tenant,
            "--out",
            file.to_str().unwrap(),
        ])
        .assert_success("clients create --scope introspect");
    file
}

fn introspect_as(issuer: &Issuer, credential: &Path, token: &str) -> Value {
    let output = issuer.cli_as(credential, &["token", "introspect", token, "--json"]);
    output.assert_success("token introspect");
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("introspect printed no JSON ({error}): {}", output.stdout))
}

fn assert_inactive(answer: &Value, reason: &str, what: &str) {
    assert_eq!(answer["active"], false, "{what}: {answer}");
    assert_eq!(answer["reason"], reason, "{what}: {answer}");
    assert!(
        answer["claims"].is_null(),
        "{what}: claims leaked: {answer}"
    );
}

#[test]
fn introspection_by_another_tenant_never_learns_a_tokens_state() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let acme = introspector(&issuer, root.path(), TENANT);
    let globex = introspector(&issuer, root.path(), "globex");

    let live = issue(&issuer, "alice", 600, &[]);
    let revoked = issue(&issuer, "bob", 600, &[]);
    issuer.cli_json(&[
        "revoke",
        "--jti",
        &revoked.jti,
        "--tenant",
        TENANT,
        "--reason",
        "attack suite",
    ]);
    assert_eq!(introspect_as(&issuer, &acme, &live.token)["active"], true);
    assert_inactive(
        &introspect_as(&issuer, &acme, &revoked.token),
        "revoked",
        "owner, revoked",
    );
    assert_inactive(
        &introspect_as(&issuer, &globex, &live.token),
        "not_active",
        "other tenant, live",
    );
    assert_inactive(
        &introspect_as(&issuer, &globex, &revoked.token),
        "not_active",
        "other tenant, revoked",
    );

    // Refresh tokens: the tenant is checked first there too.
    let session = issuer.cli_json(&[
        "session",
        "create",
        "--subject",
        "carol",
        "--tenant",
        TENANT,
    ]);
    let refresh = session["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    let session_id = session["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned();
    assert_eq!(introspect_as(&issuer, &acme, &refresh)["active"], true);
    assert_inactive(
        &introspect_as(&issuer, &globex, &refresh),
        "not_active",
        "other tenant, live refresh",
    );
    issuer.cli_json(&[
        "revoke",
        "--session",
        &session_id,
        "--tenant",
        TENANT,
        "--reason",
        "attack suite",
    ]);
    assert_inactive(
        &introspect_as(&issuer, &acme, &refresh),
        "revoked",
        "owner, revoked refresh",
    );
    assert_inactive(
        &introspect_as(&issuer, &globex, &refresh),
        "not_active",
        "other tenant, revoked refresh",
    );
}
