//! `ValidateOpaqueToken` at the sidecar (`tbs_` service and `tbw_` webhook tokens)
//! against the fake issuer's `ServiceTokenService.ValidateServiceToken`.

use std::time::Duration;

use tessera_common::credential::{Credential, CredentialKind};
use tessera_proto::v1 as pb;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::fake_issuer::{FakeIssuer, revocation};
use crate::harness::{eventually, serving};
use crate::keys::now_ms;

async fn validate(
    client: &mut ValidatorServiceClient<Channel>,
    token: &str,
    permissions: &[&str],
    subject: &str,
) -> Result<pb::ValidateOpaqueTokenResponse, tonic::Status> {
    let request = pb::ValidateOpaqueTokenRequest {
        token: token.into(),
        required_permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        required_role: String::new(),
        required_subject: subject.into(),
    };
    client
        .validate_opaque_token(request)
        .await
        .map(tonic::Response::into_inner)
}

fn refusal(response: &pb::ValidateOpaqueTokenResponse) -> pb::OpaqueTokenRefusal {
    pb::OpaqueTokenRefusal::try_from(response.refusal).unwrap()
}

#[tokio::test]
async fn webhook_and_service_tokens_are_verified_once_then_checked_locally() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let hour = Duration::from_secs(3600);
    let webhook = issuer.credentials.add_opaque_token(
        CredentialKind::Webhook,
        "t1",
        "orders-hook",
        &["deliver"],
        hour,
    );
    let answer = validate(&mut client, &webhook, &["deliver"], "orders-hook")
        .await
        .unwrap();
    assert!(answer.valid, "{answer:?}");
    let info = answer.info.unwrap();
    assert_eq!(
        (info.tenant_id.as_str(), info.kind.as_str()),
        ("t1", "webhook")
    );
    // Another subject or a missing permission: refused from the cached answer.
    let answer = validate(&mut client, &webhook, &[], "billing-hook")
        .await
        .unwrap();
    assert_eq!(
        refusal(&answer),
        pb::OpaqueTokenRefusal::InsufficientPermissions
    );
    let answer = validate(&mut client, &webhook, &["admin"], "")
        .await
        .unwrap();
    assert_eq!(
        refusal(&answer),
        pb::OpaqueTokenRefusal::InsufficientPermissions
    );
    assert_eq!(issuer.credentials.calls().validate_service_token, 1);
    let service =
        issuer
            .credentials
            .add_opaque_token(CredentialKind::Service, "t2", "billing", &[], hour);
    assert!(
        validate(&mut client, &service, &[], "billing")
            .await
            .unwrap()
            .valid
    );
    assert_eq!(issuer.credentials.calls().validate_service_token, 2);
    sidecar.stop().await;
}

#[tokio::test]
async fn typos_other_kinds_and_oversized_input_never_reach_the_issuer() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let token = issuer.credentials.add_opaque_token(
        CredentialKind::Service,
        "t1",
        "billing",
        &[],
        Duration::from_secs(60),
    );
    let mut typo = token.clone().into_bytes();
    typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let answer = validate(&mut client, &typo, &[], "").await.unwrap();
    assert_eq!(refusal(&answer), pb::OpaqueTokenRefusal::BadChecksum);
    let api_key = Credential::generate(CredentialKind::ApiKey).expose();
    let answer = validate(&mut client, &api_key, &[], "").await.unwrap();
    assert_eq!(refusal(&answer), pb::OpaqueTokenRefusal::Malformed);
    let long = "x".repeat(129);
    let status = validate(&mut client, &long, &[], "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = validate(&mut client, &token, &[], &long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(issuer.credentials.calls().validate_service_token, 0);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_pushed_revocation_or_tenant_entry_sends_the_token_back_to_the_issuer() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let client = sidecar.client().await;
    let hour = Duration::from_secs(3600);
    let revoked =
        issuer
            .credentials
            .add_opaque_token(CredentialKind::Webhook, "t1", "hook", &[], hour);
    let tenant_victim =
        issuer
            .credentials
            .add_opaque_token(CredentialKind::Service, "t2", "svc", &[], hour);
    let mut first = client.clone();
    assert!(validate(&mut first, &revoked, &[], "").await.unwrap().valid);
    assert!(
        validate(&mut first, &tenant_victim, &[], "")
            .await
            .unwrap()
            .valid
    );
    let id = &revoked[4..20];
    issuer.credentials.revoke_token(id);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut client = client.clone();
            let revoked = revoked.clone();
            async move {
                let answer = validate(&mut client, &revoked, &[], "").await.unwrap();
                !answer.valid && refusal(&answer) == pb::OpaqueTokenRefusal::Revoked
            }
        })
        .await
    );
    assert_eq!(issuer.credentials.calls().validate_service_token, 3);
    issuer.add_revocation(revocation(pb::RevocationKind::Tenant, "t2", now_ms()));
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut client = client.clone();
            let token = tenant_victim.clone();
            let issuer = &issuer;
            async move {
                validate(&mut client, &token, &[], "").await.unwrap();
                issuer.credentials.calls().validate_service_token == 4
            }
        })
        .await
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn the_issuer_down_on_a_miss_is_unavailable() {
    let issuer = FakeIssuer::start(&[]).await;
    let (sidecar, _dir) = serving(&issuer).await;
    let mut client = sidecar.client().await;
    let token = issuer.credentials.add_opaque_token(
        CredentialKind::Service,
        "t1",
        "svc",
        &[],
        Duration::from_secs(60),
    );
    issuer.credentials.set_failing(true);
    let status = validate(&mut client, &token, &[], "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    sidecar.stop().await;
}
