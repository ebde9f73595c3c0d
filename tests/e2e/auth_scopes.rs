//! Caller authentication and scopes through the real CLI and a raw gRPC client: a client
//! limited to `issue` on tenant `acme` may issue for acme only, may not touch keys, and
//! missing or unknown credentials are `Unauthenticated`; refusals land in the audit log.

use tessera_proto::v1 as pb;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::token_service_client::TokenServiceClient;
use tonic::{Code, Request};

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;

#[test]
fn unauthenticated_and_wrong_scope_calls_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());

    let created = issuer.cli_json(&[
        "clients", "create", "--name", "x", "--scope", "issue", "--tenant", "acme",
    ]);
    let client_id = created["client_id"].as_str().expect("client_id").to_owned();
    let credential = created["credential"]
        .as_str()
        .expect("credential")
        .to_owned();
    let credential_file = root.path().join("x.credential");
    std::fs::write(&credential_file, &credential).unwrap();
    let as_client = |args: &[&str]| issuer.cli_as(&credential_file, args);

    as_client(&["token", "issue", "--subject", "alice", "--tenant", "acme"])
        .assert_success("issue for the client's own tenant");

    let other_tenant = as_client(&["token", "issue", "--subject", "alice", "--tenant", "other"]);
    assert!(
        !other_tenant.success() && other_tenant.stderr.contains("PermissionDenied"),
        "issuing for another tenant must be PermissionDenied: {other_tenant:?}"
    );
    let keys = as_client(&["keys", "list"]);
    assert!(
        !keys.success() && keys.stderr.contains("PermissionDenied"),
        "an `issue` client listing keys must be PermissionDenied: {keys:?}"
    );

    let runtime = runtime();
    runtime.block_on(async {
        let channel = connect(issuer.grpc_addr).await;
        let issue = || pb::IssueAccessTokenRequest {
            subject: "alice".into(),
            tenant_id: "acme".into(),
            role: "viewer".into(),
            ..Default::default()
        };
        let mut tokens = TokenServiceClient::new(channel.clone());
        let status = tokens
            .issue_access_token(Request::new(issue()))
            .await
            .expect_err("issued without a credential");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status = tokens
            .issue_access_token(with_bearer(issue(), "not-a-real-credential"))
            .await
            .expect_err("issued with an unknown credential");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let mut keys = KeyServiceClient::new(channel);
        let status = keys
            .list_keys(Request::new(pb::ListKeysRequest::default()))
            .await
            .expect_err("listed keys without a credential");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        tokens
            .issue_access_token(with_bearer(issue(), &credential))
            .await
            .expect("the limited client may issue for acme over raw gRPC too");
    });

    let audit = issuer.cli_json(&["audit", "list", "--limit", "200"]);
    let denials: Vec<&serde_json::Value> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["action"] == "auth.denied")
        .collect();
    assert!(
        denials
            .iter()
            .any(|event| event["actor"] == client_id.as_str()
                && event["target"].as_str().unwrap_or("").contains("ListKeys")),
        "the refused ListKeys by {client_id} should be audited as auth.denied: {audit}"
    );
    assert!(
        denials
            .iter()
            .any(|event| event["actor"] == client_id.as_str()
                && event["reason"].as_str().unwrap_or("").contains("other")),
        "the refused tenant `other` should be audited as auth.denied: {audit}"
    );
    let audit_text = audit.to_string();
    assert!(
        !audit_text.contains(&credential),
        "the audit log must never hold a credential"
    );
}
