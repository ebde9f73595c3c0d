//! Attack cases: API keys (`tbk_`) against the real binary. A caller confined to `acme`
//! (admin, and an introspect verifier) cannot get, rotate, revoke or validate `globex`'s
//! key — each answered like a missing key —; a forged checksum is BAD_CHECKSUM; a real
//! id with a wrong secret is UNKNOWN; oversized input is INVALID_ARGUMENT; a rotated-out
//! key replayed after a one-second grace is GRACE_ENDED. Afterwards globex's key still
//! validates.

use std::time::Duration;

use tessera_common::credential::{Credential, CredentialKind};
use tessera_proto::v1 as pb;
use tessera_proto::v1::admin_service_client::AdminServiceClient;
use tessera_proto::v1::api_key_service_client::ApiKeyServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;

const HOME: &str = "acme";
const VICTIM: &str = "globex";

async fn client(admin: &mut AdminServiceClient<Channel>, token: &str, scope: &str) -> String {
    admin
        .create_client(with_bearer(
            pb::CreateClientRequest {
                name: format!("{scope}-{HOME}"),
                scopes: vec![scope.into()],
                tenants: vec![HOME.into()],
            },
            token,
        ))
        .await
        .expect("create client")
        .into_inner()
        .credential
}

async fn refusal(
    service: &mut ApiKeyServiceClient<Channel>,
    credential: &str,
    key: &str,
) -> pb::ApiKeyRefusal {
    let response = service
        .validate_api_key(with_bearer(
            pb::ValidateApiKeyRequest {
                key: key.into(),
                ..Default::default()
            },
            credential,
        ))
        .await
        .expect("validate answers")
        .into_inner();
    response.refusal()
}

#[test]
fn attack_api_keys_across_tenants_forged_oversized_and_replayed() {
    let root = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(root.path());
    let admin_token = issuer.admin_token();
    runtime().block_on(async {
        let channel = connect(issuer.grpc_addr).await;
        let mut service = ApiKeyServiceClient::new(channel.clone());
        let mut admin = AdminServiceClient::new(channel);
        let create = |tenant: &str| pb::CreateApiKeyRequest {
            tenant_id: tenant.into(),
            name: format!("{tenant} key"),
            permissions: vec!["invoices:read".into()],
            ..Default::default()
        };
        let victim = service
            .create_api_key(with_bearer(create(VICTIM), &admin_token))
            .await
            .unwrap()
            .into_inner();
        let victim_id = victim.api_key.as_ref().unwrap().key_id.clone();
        let confined_admin = client(&mut admin, &admin_token, "admin").await;
        let confined_verifier = client(&mut admin, &admin_token, "introspect").await;

        // Across tenants: like a key that does not exist.
        let get = service
            .get_api_key(with_bearer(
                pb::GetApiKeyRequest {
                    key_id: victim_id.clone(),
                },
                &confined_admin,
            ))
            .await;
        assert_eq!(get.unwrap_err().code(), Code::NotFound);
        let rotate = service
            .rotate_api_key(with_bearer(
                pb::RotateApiKeyRequest {
                    key_id: victim_id.clone(),
                    ..Default::default()
                },
                &confined_admin,
            ))
            .await;
        assert_eq!(rotate.unwrap_err().code(), Code::NotFound);
        let revoke = service
            .revoke_api_key(with_bearer(
                pb::RevokeApiKeyRequest {
                    key_id: victim_id.clone(),
                    reason: String::new(),
                },
                &confined_admin,
            ))
            .await;
        assert_eq!(revoke.unwrap_err().code(), Code::NotFound);
        let listed = service
            .list_api_keys(with_bearer(
                pb::ListApiKeysRequest::default(),
                &confined_admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.api_keys.is_empty(), "{listed:?}");
        let planted = service
            .create_api_key(with_bearer(create(VICTIM), &confined_admin))
            .await;
        assert_eq!(planted.unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(
            refusal(&mut service, &confined_verifier, &victim.key).await,
            pb::ApiKeyRefusal::Unknown
        );

        // Forged checksum, wrong secret, another kind's prefix.
        let mut forged = victim.key.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'Z' { 'Y' } else { 'Z' });
        assert_eq!(
            refusal(&mut service, &admin_token, &forged).await,
            pb::ApiKeyRefusal::BadChecksum
        );
        let wrong_secret = Credential::from_parts(
            CredentialKind::ApiKey,
            victim_id.clone(),
            "0".repeat(CredentialKind::ApiKey.secret_chars()),
        )
        .expose();
        assert_eq!(
            refusal(&mut service, &admin_token, &wrong_secret).await,
            pb::ApiKeyRefusal::Unknown
        );
        let other_kind = Credential::generate(CredentialKind::Service).expose();
        assert_eq!(
            refusal(&mut service, &admin_token, &other_kind).await,
            pb::ApiKeyRefusal::Malformed
        );

        // Oversized input: typed INVALID_ARGUMENT.
        let oversized_key = service
            .validate_api_key(with_bearer(
                pb::ValidateApiKeyRequest {
                    key: "tbk_".repeat(100),
                    ..Default::default()
                },
                &admin_token,
            ))
            .await;
        assert_eq!(oversized_key.unwrap_err().code(), Code::InvalidArgument);
        let mut long_name = create(HOME);
        long_name.name = "n".repeat(10_000);
        let status = service
            .create_api_key(with_bearer(long_name, &admin_token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let mut many = create(HOME);
        many.permissions = (0..1000).map(|i| format!("p{i}")).collect();
        let status = service
            .create_api_key(with_bearer(many, &admin_token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);

        // Replay after the grace: GRACE_ENDED.
        let home = service
            .create_api_key(with_bearer(create(HOME), &admin_token))
            .await
            .unwrap()
            .into_inner();
        service
            .rotate_api_key(with_bearer(
                pb::RotateApiKeyRequest {
                    key_id: home.api_key.unwrap().key_id,
                    grace_seconds: 1,
                    reason: "attack test".into(),
                },
                &admin_token,
            ))
            .await
            .unwrap();
        assert_eq!(
            refusal(&mut service, &admin_token, &home.key).await,
            pb::ApiKeyRefusal::Unspecified,
            "valid during the grace"
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            refusal(&mut service, &admin_token, &home.key).await,
            pb::ApiKeyRefusal::GraceEnded
        );

        // The victim's key is untouched.
        assert_eq!(
            refusal(&mut service, &admin_token, &victim.key).await,
            pb::ApiKeyRefusal::Unspecified
        );
    });
}
