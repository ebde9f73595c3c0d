//! grpcurl, a generic gRPC client, discovers the API through server reflection: it lists
//! the services, shows the proto comments with `describe`, checks health, and issues a
//! token with a bearer credential (and is refused without one).

use std::time::Duration;

use crate::support::issuer::Issuer;
use crate::support::process::{Output, clean_command, run_with_timeout};
use crate::support::python::tools;
use crate::support::wait::patience;

#[test]
fn grpcurl_lists_and_describes_services_via_reflection() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let addr = issuer.grpc_addr.to_string();

    let listed = grpcurl(&["-plaintext", &addr, "list"]);
    listed.assert_success("grpcurl list");
    for service in [
        "tessera.v1.KeyService",
        "tessera.v1.TokenService",
        "tessera.v1.TrustBundleService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            listed.stdout.lines().any(|line| line.trim() == service),
            "`grpcurl list` lacks {service}:\n{}",
            listed.stdout
        );
    }

    let described = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "tessera.v1.IssueAccessTokenRequest",
    ]);
    described.assert_success("grpcurl describe");
    for expected in [
        "string subject = 1;",
        "string tenant_id = 2;",
        "the tenant the token is confined to",
        "Lifetime in seconds",
    ] {
        assert!(
            described.stdout.contains(expected),
            "`grpcurl describe` should show {expected:?} (field comments come from the \
             descriptor's source info):\n{}",
            described.stdout
        );
    }

    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    health.assert_success("grpcurl health check");
    assert!(health.stdout.contains("\"SERVING\""), "{}", health.stdout);

    let request = r#"{"subject":"alice","tenant_id":"acme","role":"staff"}"#;
    let authorization = format!("authorization: Bearer {}", issuer.admin_token());
    let issued = grpcurl(&[
        "-plaintext",
        "-H",
        &authorization,
        "-d",
        request,
        &addr,
        "tessera.v1.TokenService/IssueAccessToken",
    ]);
    issued.assert_success("grpcurl IssueAccessToken");
    let response: serde_json::Value =
        serde_json::from_str(&issued.stdout).expect("grpcurl prints the response as JSON");
    let token = response["token"].as_str().unwrap_or_default();
    assert_eq!(token.split('.').count(), 3, "not a compact JWS: {response}");
    assert!(!response["kid"].as_str().unwrap_or_default().is_empty());
    let introspected = issuer.cli_json(&["token", "introspect", token]);
    assert_eq!(introspected["active"], true, "{introspected}");

    let refused = grpcurl(&[
        "-plaintext",
        "-d",
        request,
        &addr,
        "tessera.v1.TokenService/IssueAccessToken",
    ]);
    assert!(!refused.success(), "issued without a credential");
    assert!(
        refused.stderr.contains("Unauthenticated"),
        "expected Unauthenticated:\n{}",
        refused.stderr
    );
}

fn grpcurl(args: &[&str]) -> Output {
    let mut command = clean_command(&tools().grpcurl);
    command.args(["-max-time", "20"]).args(args);
    run_with_timeout(command, patience(Duration::from_secs(30)))
}
