//! WebhookService over gRPC, in-process: tenant confinement (a caller confined to `acme`
//! signs, verifies and reads secrets for `acme` only), secret reads audited without the
//! secret, signatures checked with an HMAC computed here from the documented format, and
//! the scheduler's rotation of the `webhook` set driven by a test clock: both signatures
//! through the 3-day overlap, then only the successor's.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_common::{Clock, ManualClock, SystemClock};
use tessera_proto::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TestIssuer, with_credential};

type Webhooks = pb::webhook_service_client::WebhookServiceClient<Channel>;

async fn webhooks(issuer: &TestIssuer) -> Webhooks {
    pb::webhook_service_client::WebhookServiceClient::new(issuer.channel().await)
}

/// Creates a client with `scopes` confined to `tenants`; returns its credential.
async fn client(issuer: &TestIssuer, scopes: &[&str], tenants: &[&str]) -> String {
    issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: format!("webhooks-{}", tenants.join("-")),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
        }))
        .await
        .expect("create client")
        .into_inner()
        .credential
}

fn sign_request(tenant: &str, payload: &[u8]) -> pb::SignWebhookRequest {
    pb::SignWebhookRequest {
        tenant_id: tenant.into(),
        payload: payload.to_vec(),
        webhook_id: String::new(),
    }
}

fn verify_request(
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

async fn secrets(issuer: &TestIssuer, tenant: &str) -> Vec<pb::WebhookSecret> {
    webhooks(issuer)
        .await
        .get_webhook_secrets(issuer.as_admin(pb::GetWebhookSecretsRequest {
            tenant_id: tenant.into(),
        }))
        .await
        .expect("secrets")
        .into_inner()
        .secrets
}

/// True when some `v1` entry of the message is HMAC-SHA256(`whsec`, id.timestamp.payload),
/// computed here from the documented format, as a receiver would.
fn receiver_accepts(whsec: &str, signed: &pb::SignWebhookResponse, payload: &[u8]) -> bool {
    let secret = STANDARD
        .decode(whsec.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
    let mut content = format!("{}.{}.", signed.webhook_id, signed.webhook_timestamp).into_bytes();
    content.extend_from_slice(payload);
    let expected = format!("v1,{}", STANDARD.encode(hmac::sign(&key, &content)));
    signed
        .webhook_signature
        .split(' ')
        .any(|entry| entry == expected)
}

#[tokio::test]
async fn confined_callers_sign_verify_and_read_secrets_of_their_own_tenant_only() {
    let issuer = TestIssuer::start().await;
    let acme = client(&issuer, &["admin", "issue", "introspect"], &["acme"]).await;
    let mut service = webhooks(&issuer).await;
    let payload = br#"{"event":"invoice.paid","id":"inv_1"}"#;

    let signed = service
        .sign_webhook(with_credential(sign_request("acme", payload), &acme))
        .await
        .expect("acme signs for acme")
        .into_inner();
    assert!(signed.webhook_id.starts_with("msg_"));
    assert_eq!(signed.kids.len(), 1);
    let verdict = service
        .verify_webhook(with_credential(
            verify_request("acme", payload, &signed),
            &acme,
        ))
        .await
        .expect("verify")
        .into_inner();
    assert!(verdict.valid);
    assert_eq!(verdict.kid, signed.kids[0]);

    // The secret handed to acme's receivers verifies acme's message independently.
    let acme_secrets = webhooks(&issuer)
        .await
        .get_webhook_secrets(with_credential(
            pb::GetWebhookSecretsRequest {
                tenant_id: "acme".into(),
            },
            &acme,
        ))
        .await
        .expect("acme reads its secrets")
        .into_inner()
        .secrets;
    assert_eq!(acme_secrets.len(), 1);
    assert_eq!(acme_secrets[0].state, "active");
    assert!(receiver_accepts(&acme_secrets[0].secret, &signed, payload));

    // Nothing of globex: not signing, verifying nor its secrets, whatever the scope.
    let refused = [
        service
            .sign_webhook(with_credential(sign_request("globex", payload), &acme))
            .await
            .map(|_| ()),
        service
            .verify_webhook(with_credential(
                verify_request("globex", payload, &signed),
                &acme,
            ))
            .await
            .map(|_| ()),
        service
            .get_webhook_secrets(with_credential(
                pb::GetWebhookSecretsRequest {
                    tenant_id: "globex".into(),
                },
                &acme,
            ))
            .await
            .map(|_| ()),
    ];
    for result in refused {
        assert_eq!(result.expect_err("refused").code(), Code::PermissionDenied);
    }

    // Tenants' secrets differ, and acme's signature is no globex signature.
    let globex_secrets = secrets(&issuer, "globex").await;
    assert_ne!(globex_secrets[0].secret, acme_secrets[0].secret);
    assert!(!receiver_accepts(
        &globex_secrets[0].secret,
        &signed,
        payload
    ));
    let cross = service
        .verify_webhook(issuer.as_admin(verify_request("globex", payload, &signed)))
        .await
        .expect("verify")
        .into_inner();
    assert!(!cross.valid);
    assert_eq!(cross.verdict, pb::WebhookVerdict::SignatureMismatch as i32);

    // A caller without `admin` cannot read secrets even for its own tenant.
    let signer_only = client(&issuer, &["issue"], &["acme"]).await;
    let status = service
        .get_webhook_secrets(with_credential(
            pb::GetWebhookSecretsRequest {
                tenant_id: "acme".into(),
            },
            &signer_only,
        ))
        .await
        .expect_err("needs admin");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Every secret read is audited, naming the tenant and kid, never the secret.
    let events = issuer
        .admin()
        .await
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest {
            limit: 1000,
            ..Default::default()
        }))
        .await
        .expect("audit")
        .into_inner()
        .events;
    let reads: Vec<&pb::AuditEvent> = events
        .iter()
        .filter(|event| event.action == "webhook.secrets.read")
        .collect();
    assert_eq!(reads.len(), 2, "{events:?}");
    assert!(reads.iter().any(|event| event.target == "acme"));
    assert!(reads.iter().any(|event| event.target == "globex"));
    let all = format!("{events:?}");
    for secret in acme_secrets.iter().chain(&globex_secrets) {
        let bare = &secret.secret["whsec_".len()..];
        assert!(!all.contains(bare), "a secret reached the audit log");
    }
    assert!(all.contains(&acme_secrets[0].kid));
    issuer.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_typed_answers() {
    let issuer = TestIssuer::start().await;
    let mut service = webhooks(&issuer).await;
    let mut bad_id = sign_request("acme", b"x");
    bad_id.webhook_id = "msg_a.b".into();
    let status = service
        .sign_webhook(issuer.as_admin(bad_id))
        .await
        .expect_err("bad id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("webhook_id"), "{status:?}");

    let oversized = vec![b'a'; 1024 * 1024 + 1];
    let status = service
        .sign_webhook(issuer.as_admin(sign_request("acme", &oversized)))
        .await
        .expect_err("oversized");
    assert_eq!(status.code(), Code::InvalidArgument);

    let signed = service
        .sign_webhook(issuer.as_admin(pb::SignWebhookRequest {
            webhook_id: "msg_chosen-id_1".into(),
            ..sign_request("acme", b"x")
        }))
        .await
        .expect("sign")
        .into_inner();
    assert_eq!(signed.webhook_id, "msg_chosen-id_1");
    let verdict = service
        .verify_webhook(issuer.as_admin(verify_request("acme", &oversized, &signed)))
        .await
        .expect("verify answers")
        .into_inner();
    assert_eq!(verdict.verdict, pb::WebhookVerdict::PayloadTooLarge as i32);
    let mut malformed = verify_request("acme", b"x", &signed);
    malformed.webhook_signature = vec!["v1,AAAA"; 17].join(" ");
    let verdict = service
        .verify_webhook(issuer.as_admin(malformed))
        .await
        .expect("verify answers")
        .into_inner();
    assert_eq!(verdict.verdict, pb::WebhookVerdict::MalformedHeaders as i32);
    issuer.stop().await;
}

#[tokio::test]
async fn scheduled_rotation_signs_with_both_secrets_through_the_overlap_then_the_successor_only() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone()).await;
    let mut service = webhooks(&issuer).await;
    let payload = b"rotation";
    let before = secrets(&issuer, "acme").await;
    assert_eq!(before.len(), 1);
    let old = before[0].clone();

    // 30 days on, the scheduler prepublishes the successor: receivers can fetch its
    // secret before it signs, and messages still carry one signature.
    clock.advance(Duration::from_secs(30 * 24 * 3600 + 1));
    issuer
        .app
        .keys
        .run_scheduled()
        .await
        .expect("scheduled run");
    let prepublished = secrets(&issuer, "acme").await;
    let states: Vec<&str> = prepublished
        .iter()
        .map(|secret| secret.state.as_str())
        .collect();
    assert_eq!(states, ["pending", "active"], "{prepublished:?}");
    let signed = service
        .sign_webhook(issuer.as_admin(sign_request("acme", payload)))
        .await
        .expect("sign")
        .into_inner();
    assert_eq!(signed.kids, std::slice::from_ref(&old.kid));

    // When it activates, the successor signs, the predecessor's signature is listed
    // too, and a receiver knowing either secret verifies.
    let activates_at = prepublished[0].activates_at.expect("activation").seconds;
    let now_seconds = clock.now().0 / 1000;
    clock.advance(Duration::from_secs((activates_at - now_seconds + 1) as u64));
    issuer
        .app
        .keys
        .run_scheduled()
        .await
        .expect("scheduled run");
    let during = secrets(&issuer, "acme").await;
    let states: Vec<&str> = during.iter().map(|secret| secret.state.as_str()).collect();
    assert_eq!(states, ["active", "retiring"], "{during:?}");
    assert_eq!(during[1].kid, old.kid);
    assert_eq!(
        during[1].secret, old.secret,
        "a rotation keeps the old secret"
    );
    let new = during[0].clone();
    assert_ne!(new.secret, old.secret);
    assert_eq!(
        new.secret, prepublished[0].secret,
        "the prepublished secret signs"
    );

    let signed = service
        .sign_webhook(issuer.as_admin(sign_request("acme", payload)))
        .await
        .expect("sign")
        .into_inner();
    assert_eq!(signed.kids, [new.kid.clone(), old.kid.clone()]);
    assert_eq!(signed.webhook_signature.split(' ').count(), 2);
    assert!(receiver_accepts(&old.secret, &signed, payload));
    assert!(receiver_accepts(&new.secret, &signed, payload));

    // The issuer's own check accepts the two-signature message.
    let verdict = service
        .verify_webhook(issuer.as_admin(verify_request("acme", payload, &signed)))
        .await
        .expect("verify")
        .into_inner();
    assert!(verdict.valid);

    // Past the 3-day overlap only the successor signs and the old secret is gone.
    clock.advance(Duration::from_secs(3 * 24 * 3600 + 1));
    issuer
        .app
        .keys
        .run_scheduled()
        .await
        .expect("scheduled run");
    let after = secrets(&issuer, "acme").await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].kid, new.kid);
    let signed_after = service
        .sign_webhook(issuer.as_admin(sign_request("acme", payload)))
        .await
        .expect("sign")
        .into_inner();
    assert_eq!(signed_after.kids, std::slice::from_ref(&new.kid));
    assert!(receiver_accepts(&new.secret, &signed_after, payload));
    assert!(!receiver_accepts(&old.secret, &signed_after, payload));

    // A message carrying only the predecessor's signature no longer verifies (its
    // timestamp is fresh, so the refusal is the key's).
    let mut forged = verify_request("acme", payload, &signed_after);
    forged.webhook_signature = old_signature(&old.secret, &signed_after, payload);
    let verdict = service
        .verify_webhook(issuer.as_admin(forged))
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(
        verdict.verdict,
        pb::WebhookVerdict::SignatureMismatch as i32
    );

    // The rotation was the scheduler's, and audited.
    let events = issuer
        .admin()
        .await
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest {
            limit: 1000,
            ..Default::default()
        }))
        .await
        .expect("audit")
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|event| event.action == "key.rotate.scheduled" && event.target.contains("webhook")),
        "{events:?}"
    );
    issuer.stop().await;
}

/// Returns `v1,<sig>` of `whsec` over the message's id, timestamp and `payload`.
fn old_signature(whsec: &str, signed: &pb::SignWebhookResponse, payload: &[u8]) -> String {
    let secret = STANDARD
        .decode(&whsec["whsec_".len()..])
        .expect("base64 secret");
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
    let mut content = format!("{}.{}.", signed.webhook_id, signed.webhook_timestamp).into_bytes();
    content.extend_from_slice(payload);
    format!("v1,{}", STANDARD.encode(hmac::sign(&key, &content)))
}
