//! Attack cases: WebhookService against the real binary. A forged signature (zeros, a
//! truncated tag, another tenant's genuine signature, a genuine signature moved to another
//! id or payload), a genuine message replayed after the 5-minute tolerance, oversized
//! payloads and headers, and a caller confined to `acme` reaching for `globex`: each gets
//! its typed verdict or status, never a valid answer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_common::ids::KeyId;
use tessera_common::keys::Algorithm;
use tessera_issuer::keys::mac::MacKey;
use tessera_proto::v1 as pb;
use tessera_proto::v1::admin_service_client::AdminServiceClient;
use tessera_proto::v1::webhook_service_client::WebhookServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;

/// The attacker's tenant.
const HOME: &str = "acme";
/// The victim tenant.
const VICTIM: &str = "globex";

fn sign(tenant: &str, payload: &[u8]) -> pb::SignWebhookRequest {
    pb::SignWebhookRequest {
        tenant_id: tenant.into(),
        payload: payload.to_vec(),
        webhook_id: String::new(),
    }
}

fn verify(
    tenant: &str,
    payload: &[u8],
    signed: &pb::SignWebhookResponse,
) -> pb::VerifyWebhookRequest {
    pb::VerifyWebhookRequest {
        tenant_id: tenant.into(),
        payload: payload.to_vec(),
        webhook_id: signed.webhook_id.clone(),
        webhook_timestamp: signed.webhook_timestamp.clone(),
        webhook_signature: signed.webhook_signature.clone(),
    }
}

/// Asserts the call was answered with `verdict` (and not valid).
fn verdict(
    case: &str,
    expected: pb::WebhookVerdict,
    result: Result<Response<pb::VerifyWebhookResponse>, Status>,
) {
    let answer = result
        .unwrap_or_else(|status| panic!("{case}: expected a verdict, got {status:?}"))
        .into_inner();
    assert!(!answer.valid, "{case}: accepted");
    assert_eq!(answer.verdict, expected as i32, "{case}: {answer:?}");
    assert!(answer.kid.is_empty(), "{case}: {answer:?}");
}

/// Asserts the call was refused with `code`.
fn refused<T: std::fmt::Debug>(case: &str, code: Code, result: Result<Response<T>, Status>) {
    match result {
        Ok(answer) => panic!("{case}: expected {code:?}, got {answer:?}"),
        Err(status) => assert_eq!(status.code(), code, "{case}: {status:?}"),
    }
}

/// Returns the tenant's active secret, as its receivers get it.
async fn active_secret(
    webhooks: &mut WebhookServiceClient<Channel>,
    root: &str,
    tenant: &str,
) -> Vec<u8> {
    let secrets = webhooks
        .get_webhook_secrets(with_bearer(
            pb::GetWebhookSecretsRequest {
                tenant_id: tenant.into(),
            },
            root,
        ))
        .await
        .expect("secrets")
        .into_inner()
        .secrets;
    let whsec = &secrets
        .iter()
        .find(|secret| secret.state == "active")
        .expect("an active secret")
        .secret;
    STANDARD
        .decode(&whsec["whsec_".len()..])
        .expect("base64 secret")
}

/// Returns `v1,<sig>` over `{id}.{timestamp}.{payload}` with `secret`: what a holder of
/// the secret (or a captured message) has.
fn genuine_signature(secret: &[u8], id: &str, timestamp: i64, payload: &[u8]) -> String {
    let key = MacKey::from_secret(
        KeyId::new("receiver").expect("kid"),
        Algorithm::Hs256,
        secret,
    )
    .expect("32-byte secret");
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(payload);
    format!("v1,{}", STANDARD.encode(key.sign(&content)))
}

#[test]
fn forged_replayed_oversized_and_cross_tenant_webhooks_are_refused() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let issuer = Issuer::start(root_dir.path());
    let root = issuer.admin_token();
    runtime().block_on(async {
        let channel = connect(issuer.grpc_addr).await;
        let mut webhooks = WebhookServiceClient::new(channel.clone());
        let mut admin = AdminServiceClient::new(channel);
        let payload = br#"{"type":"payout.sent","amount":100}"#;
        let signed = webhooks
            .sign_webhook(with_bearer(sign(HOME, payload), &root))
            .await
            .expect("sign")
            .into_inner();
        let genuine = webhooks
            .verify_webhook(with_bearer(verify(HOME, payload, &signed), &root))
            .await
            .expect("verify")
            .into_inner();
        assert!(genuine.valid, "{genuine:?}");

        // Forged signatures.
        let mismatch = pb::WebhookVerdict::SignatureMismatch;
        let mut zeros = verify(HOME, payload, &signed);
        zeros.webhook_signature = format!("v1,{}", STANDARD.encode([0u8; 32]));
        verdict(
            "all-zero tag",
            mismatch,
            webhooks.verify_webhook(with_bearer(zeros, &root)).await,
        );
        let tag = signed.webhook_signature.trim_start_matches("v1,");
        let tag_bytes = STANDARD.decode(tag).expect("tag");
        let mut truncated = verify(HOME, payload, &signed);
        truncated.webhook_signature = format!("v1,{}", STANDARD.encode(&tag_bytes[..16]));
        verdict(
            "truncated tag",
            mismatch,
            webhooks.verify_webhook(with_bearer(truncated, &root)).await,
        );
        let mut other_id = verify(HOME, payload, &signed);
        other_id.webhook_id = "msg_someotherid".into();
        verdict(
            "signature moved to another id",
            mismatch,
            webhooks.verify_webhook(with_bearer(other_id, &root)).await,
        );
        verdict(
            "signature moved to another payload",
            mismatch,
            webhooks
                .verify_webhook(with_bearer(
                    verify(HOME, br#"{"type":"payout.sent","amount":100000}"#, &signed),
                    &root,
                ))
                .await,
        );
        let mut unversioned = verify(HOME, payload, &signed);
        unversioned.webhook_signature = signed.webhook_signature.replace("v1,", "v2,");
        verdict(
            "only an unknown version",
            mismatch,
            webhooks
                .verify_webhook(with_bearer(unversioned, &root))
                .await,
        );

        // Cross-tenant: globex's genuine message is no acme message, and back.
        let victims = webhooks
            .sign_webhook(with_bearer(sign(VICTIM, payload), &root))
            .await
            .expect("sign globex")
            .into_inner();
        verdict(
            "globex's signature presented as acme's",
            mismatch,
            webhooks
                .verify_webhook(with_bearer(verify(HOME, payload, &victims), &root))
                .await,
        );
        verdict(
            "acme's signature presented as globex's",
            mismatch,
            webhooks
                .verify_webhook(with_bearer(verify(VICTIM, payload, &signed), &root))
                .await,
        );

        // Replay after the tolerance: a genuine signature over a timestamp 301 s old.
        let secret = active_secret(&mut webhooks, &root, HOME).await;
        let sent: i64 = signed.webhook_timestamp.parse().expect("timestamp");
        let mut replayed = verify(HOME, payload, &signed);
        replayed.webhook_timestamp = (sent - 301).to_string();
        replayed.webhook_signature =
            genuine_signature(&secret, &signed.webhook_id, sent - 301, payload);
        verdict(
            "replayed after the tolerance",
            pb::WebhookVerdict::TimestampTooOld,
            webhooks
                .verify_webhook(with_bearer(replayed.clone(), &root))
                .await,
        );
        // The same construction within the tolerance verifies: the refusal above is the
        // timestamp's, not a wrong signature's.
        replayed.webhook_timestamp = (sent - 60).to_string();
        replayed.webhook_signature =
            genuine_signature(&secret, &signed.webhook_id, sent - 60, payload);
        let within = webhooks
            .verify_webhook(with_bearer(replayed.clone(), &root))
            .await
            .expect("verify")
            .into_inner();
        assert!(within.valid, "{within:?}");
        replayed.webhook_timestamp = (sent + 3600).to_string();
        replayed.webhook_signature =
            genuine_signature(&secret, &signed.webhook_id, sent + 3600, payload);
        verdict(
            "pre-dated an hour ahead",
            pb::WebhookVerdict::TimestampTooNew,
            webhooks.verify_webhook(with_bearer(replayed, &root)).await,
        );

        // Oversized payloads and headers.
        let over = vec![b'x'; 1024 * 1024 + 1];
        refused(
            "signing 1 MiB + 1",
            Code::InvalidArgument,
            webhooks
                .sign_webhook(with_bearer(sign(HOME, &over), &root))
                .await,
        );
        verdict(
            "verifying 1 MiB + 1",
            pb::WebhookVerdict::PayloadTooLarge,
            webhooks
                .verify_webhook(with_bearer(verify(HOME, &over, &signed), &root))
                .await,
        );
        let far_over = vec![b'x'; 4 * 1024 * 1024];
        let status = webhooks
            .verify_webhook(with_bearer(verify(HOME, &far_over, &signed), &root))
            .await
            .expect_err("a message past the gRPC limit is not even decoded");
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        let mut many = verify(HOME, payload, &signed);
        many.webhook_signature = [signed.webhook_signature.as_str(); 17].join(" ");
        verdict(
            "17 signature entries",
            pb::WebhookVerdict::MalformedHeaders,
            webhooks.verify_webhook(with_bearer(many, &root)).await,
        );
        let mut long = verify(HOME, payload, &signed);
        long.webhook_signature = format!("{} {}", signed.webhook_signature, "v9,".repeat(2000));
        verdict(
            "a 6 KB signature header",
            pb::WebhookVerdict::MalformedHeaders,
            webhooks.verify_webhook(with_bearer(long, &root)).await,
        );
        let mut dotted = verify(HOME, payload, &signed);
        dotted.webhook_id = format!("{}.1", signed.webhook_id);
        verdict(
            "a dot in the id",
            pb::WebhookVerdict::MalformedHeaders,
            webhooks.verify_webhook(with_bearer(dotted, &root)).await,
        );

        // A caller confined to acme, admin included, reaches nothing of globex.
        let attacker = admin
            .create_client(with_bearer(
                pb::CreateClientRequest {
                    name: "acme-webhooks".into(),
                    scopes: vec!["admin".into()],
                    tenants: vec![HOME.into()],
                },
                &root,
            ))
            .await
            .expect("acme admin")
            .into_inner()
            .credential;
        refused(
            "sign for globex",
            Code::PermissionDenied,
            webhooks
                .sign_webhook(with_bearer(sign(VICTIM, payload), &attacker))
                .await,
        );
        refused(
            "verify for globex",
            Code::PermissionDenied,
            webhooks
                .verify_webhook(with_bearer(verify(VICTIM, payload, &victims), &attacker))
                .await,
        );
        refused(
            "read globex's secrets",
            Code::PermissionDenied,
            webhooks
                .get_webhook_secrets(with_bearer(
                    pb::GetWebhookSecretsRequest {
                        tenant_id: VICTIM.into(),
                    },
                    &attacker,
                ))
                .await,
        );
        refused(
            "sign without a credential",
            Code::Unauthenticated,
            webhooks
                .sign_webhook(tonic::Request::new(sign(HOME, payload)))
                .await,
        );
        // Its own tenant still works.
        let own = webhooks
            .sign_webhook(with_bearer(sign(HOME, payload), &attacker))
            .await
            .expect("acme signs for acme")
            .into_inner();
        assert_eq!(own.kids, signed.kids);
    });
}
