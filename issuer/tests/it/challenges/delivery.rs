//! Challenge delivery through real endpoints: an SMTP server on a real socket receives
//! the e-mail (the code, or the magic link) and the code verifies; an HTTP receiver gets
//! the signed webhook, whose Standard Webhooks signature verifies with the tenant's
//! secret (or the configured one); a primary that is down or answers 500 fails over to
//! the backup (audited); a disabled primary is skipped (its server sees nothing); both
//! disabled is a typed UNAVAILABLE; the switch needs an unconfined admin and is audited.

use std::sync::Arc;

use aws_lc_rs::hmac;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_common::SystemClock;
use tessera_proto::v1 as pb;
use tonic::Code;

use super::support::{HttpReceiver, SmtpServer, closed_port};
use super::{HOME, audit_rows, client, service, start, start_request, verify};
use crate::harness::with_credential;

fn smtp(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "[providers.{name}]\nkind = \"smtp\"\nhost = \"{}\"\nport = {}\nstarttls = \"off\"\n\
         from = \"Tessera <no-reply@example.com>\"\ntimeout_seconds = 5\n",
        addr.ip(),
        addr.port()
    )
}

fn webhook(name: &str, url: &str, secret_file: Option<&std::path::Path>) -> String {
    let secret = secret_file
        .map(|path| format!("secret_file = \"{}\"\n", path.display()))
        .unwrap_or_default();
    format!(
        "[providers.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_seconds = 5\n{secret}"
    )
}

fn route(method: &str, primary: &str, backup: Option<&str>) -> String {
    let backup = backup
        .map(|name| format!("backup = \"{name}\"\n"))
        .unwrap_or_default();
    format!("[methods.{method}]\nprimary = \"{primary}\"\n{backup}")
}

fn by_provider(
    method: pb::ChallengeMethod,
    user: &str,
    destination: &str,
) -> pb::StartChallengeRequest {
    pb::StartChallengeRequest {
        delivery: pb::ChallengeDelivery::Provider as i32,
        destination: destination.into(),
        ..start_request(method, user)
    }
}

/// Decodes a quoted-printable body (soft line breaks, `=XX` escapes); other text as is.
fn quoted_printable_decoded(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=' && i + 2 < bytes.len())
            .then(|| u8::from_str_radix(&joined[i + 1..i + 3], 16).ok())
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Returns the 6-digit code in a mail body.
fn code_in(body: &str) -> String {
    let start = body.find("code is ").expect("code sentence") + "code is ".len();
    body[start..start + 6].to_owned()
}

/// Checks a Standard Webhooks signature with `secret` (raw bytes).
fn signature_verifies(post: &super::support::Post, secret: &[u8]) -> bool {
    let header = |name: &str| post.headers.get(name).unwrap().to_str().unwrap().to_owned();
    let content = format!(
        "{}.{}.{}",
        header("webhook-id"),
        header("webhook-timestamp"),
        String::from_utf8(post.body.clone()).unwrap()
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let expected = format!(
        "v1,{}",
        STANDARD.encode(hmac::sign(&key, content.as_bytes()))
    );
    header("webhook-signature")
        .split(' ')
        .any(|entry| entry == expected)
}

/// SMTP: the e-mail reaches the server with the code, the response carries none, and
/// the code verifies; a magic link's e-mail carries the link. Webhook: the POST carries
/// the code as JSON, signed with the tenant's webhook secret.
#[tokio::test]
async fn smtp_and_webhook_deliver_and_the_code_verifies() {
    let mail = SmtpServer::start().await;
    let hook = HttpReceiver::start().await;
    let settings = format!(
        "link_base_url = \"https://app.example.com/magic\"\n{}{}{}{}{}",
        smtp("mail", mail.addr),
        webhook("sms", &hook.url, None),
        route("otp_email", "mail", None),
        route("magic_link", "mail", None),
        route("otp_sms", "sms", None),
    );
    let issuer = start(&settings, Arc::new(SystemClock)).await;

    let started = super::start_challenge(
        &issuer,
        by_provider(pb::ChallengeMethod::OtpEmail, "alice", "alice@example.com"),
    )
    .await;
    assert!(
        started.code.is_empty() && started.link.is_empty(),
        "no code goes back"
    );
    assert_eq!(started.provider, "mail");
    let mails = mail.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["<alice@example.com>"]);
    let code = code_in(&mails[0].data);
    assert!(verify(&issuer, &started.challenge_id, &code).await.verified);

    let link = super::start_challenge(
        &issuer,
        by_provider(pb::ChallengeMethod::MagicLink, "bob", "bob@example.com"),
    )
    .await;
    let body = quoted_printable_decoded(&mail.mails()[1].data);
    let prefix = format!(
        "https://app.example.com/magic?challenge={}&token=",
        link.challenge_id
    );
    let at = body.find(&prefix).expect("the link is in the mail") + prefix.len();
    let token = &body[at..at + 64];
    assert!(verify(&issuer, &link.challenge_id, token).await.verified);

    let sms = super::start_challenge(
        &issuer,
        by_provider(pb::ChallengeMethod::OtpSms, "carol", "+4915112345678"),
    )
    .await;
    assert_eq!(sms.provider, "sms");
    let posts = hook.posts();
    assert_eq!(posts.len(), 1);
    let json: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(json["destination"], "+4915112345678");
    assert_eq!(json["challenge_id"], sms.challenge_id.as_str());
    assert_eq!(json["tenant_id"], HOME);
    let secrets = pb::webhook_service_client::WebhookServiceClient::new(issuer.channel().await)
        .get_webhook_secrets(issuer.as_admin(pb::GetWebhookSecretsRequest {
            tenant_id: HOME.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .secrets;
    let verified_by_tenant_key = secrets.iter().any(|secret| {
        let raw = STANDARD
            .decode(secret.secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        signature_verifies(&posts[0], &raw)
    });
    assert!(
        verified_by_tenant_key,
        "signed with the tenant's webhook key"
    );
    assert!(!signature_verifies(&posts[0], b"another secret"));
    let code = json["code"].as_str().unwrap();
    assert!(verify(&issuer, &sms.challenge_id, code).await.verified);
}

/// A primary that refuses connections, or a webhook answering 500, fails over to the
/// backup: the response names the backup and a `provider.failover` entry is audited
/// (names and the failure class, never the code).
#[tokio::test]
async fn a_failing_primary_fails_over_to_the_backup() {
    let down = closed_port().await;
    let backup_mail = SmtpServer::start().await;
    let failing_hook = HttpReceiver::start().await;
    failing_hook.answer(StatusCode::INTERNAL_SERVER_ERROR);
    let backup_hook = HttpReceiver::start().await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_path = secret_dir.path().join("hook.secret");
    std::fs::write(&secret_path, "configured-hook-secret\n").unwrap();
    let settings = format!(
        "{}{}{}{}{}{}",
        smtp("mail-a", down),
        smtp("mail-b", backup_mail.addr),
        webhook("sms-a", &failing_hook.url, None),
        webhook("sms-b", &backup_hook.url, Some(&secret_path)),
        route("otp_email", "mail-a", Some("mail-b")),
        route("otp_sms", "sms-a", Some("sms-b")),
    );
    let issuer = start(&settings, Arc::new(SystemClock)).await;
    let started = super::start_challenge(
        &issuer,
        by_provider(pb::ChallengeMethod::OtpEmail, "alice", "alice@example.com"),
    )
    .await;
    assert_eq!(started.provider, "mail-b");
    let code = code_in(&backup_mail.mails()[0].data);
    assert!(verify(&issuer, &started.challenge_id, &code).await.verified);

    let sms = super::start_challenge(
        &issuer,
        by_provider(pb::ChallengeMethod::OtpSms, "bob", "+4915112345678"),
    )
    .await;
    assert_eq!(sms.provider, "sms-b");
    assert_eq!(failing_hook.posts().len(), 1, "the primary was tried");
    let post = &backup_hook.posts()[0];
    assert!(
        signature_verifies(post, b"configured-hook-secret"),
        "the configured secret signs"
    );

    let failovers: Vec<(String, String, String)> = audit_rows(&issuer)
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "provider.failover")
        .collect();
    assert_eq!(failovers.len(), 2, "{failovers:?}");
    assert!(failovers[0].2.contains("mail-a") && failovers[0].2.contains("sent by mail-b"));
    assert!(failovers[1].2.contains("http 500"));
    assert!(!failovers[0].2.contains(&code));
}

/// `providers disable`: the disabled primary's server sees nothing and the backup sends;
/// both disabled is UNAVAILABLE naming the method; enabling restores the primary;
/// ListProviders shows state and roles; a tenant-confined admin may not switch; unknown
/// names are NOT_FOUND; each switch is audited with its reason.
#[tokio::test]
async fn disabled_providers_are_skipped_and_both_disabled_is_typed() {
    let primary = SmtpServer::start().await;
    let backup = SmtpServer::start().await;
    let settings = format!(
        "{}{}{}",
        smtp("mail-a", primary.addr),
        smtp("mail-b", backup.addr),
        route("otp_email", "mail-a", Some("mail-b")),
    );
    let issuer = start(&settings, Arc::new(SystemClock)).await;
    let mut challenges = service(&issuer).await;
    let switch = |name: &str, enabled: bool| pb::SetProviderEnabledRequest {
        name: name.into(),
        enabled,
        reason: "provider compromise drill".into(),
    };
    let confined = client(&issuer, &["admin"], &[HOME]).await;
    let refused = challenges
        .set_provider_enabled(with_credential(switch("mail-a", false), &confined))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let unknown = challenges
        .set_provider_enabled(issuer.as_admin(switch("nope", false)))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let info = challenges
        .set_provider_enabled(issuer.as_admin(switch("mail-a", false)))
        .await
        .unwrap()
        .into_inner();
    assert!(!info.enabled && info.changed_at.is_some());
    let started = super::start_challenge(
        &issuer,
        by_provider(pb::ChallengeMethod::OtpEmail, "alice", "alice@example.com"),
    )
    .await;
    assert_eq!(started.provider, "mail-b");
    assert!(
        primary.mails().is_empty(),
        "a disabled provider is never contacted"
    );
    assert_eq!(backup.mails().len(), 1);

    challenges
        .set_provider_enabled(issuer.as_admin(switch("mail-b", false)))
        .await
        .unwrap();
    let status = challenges
        .start_challenge(issuer.as_admin(by_provider(
            pb::ChallengeMethod::OtpEmail,
            "alice",
            "alice@example.com",
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("disabled"),
        "{}",
        status.message()
    );

    let listed = challenges
        .list_providers(issuer.as_admin(pb::ListProvidersRequest {}))
        .await
        .unwrap()
        .into_inner()
        .providers;
    let summary: Vec<(String, bool, Vec<String>)> = listed
        .into_iter()
        .map(|provider| (provider.name, provider.enabled, provider.roles))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "mail-a".to_owned(),
                false,
                vec!["otp_email:primary".to_owned()]
            ),
            (
                "mail-b".to_owned(),
                false,
                vec!["otp_email:backup".to_owned()]
            ),
        ]
    );

    challenges
        .set_provider_enabled(issuer.as_admin(switch("mail-a", true)))
        .await
        .unwrap();
    let again = super::start_challenge(
        &issuer,
        by_provider(pb::ChallengeMethod::OtpEmail, "alice", "alice@example.com"),
    )
    .await;
    assert_eq!(again.provider, "mail-a");
    assert_eq!(primary.mails().len(), 1);

    let switches: Vec<String> = audit_rows(&issuer)
        .await
        .into_iter()
        .filter(|(action, _, why)| {
            action.starts_with("provider.") && why == "provider compromise drill"
        })
        .map(|(action, target, _)| format!("{action} {target}"))
        .collect();
    assert_eq!(
        switches,
        [
            "provider.disabled mail-a",
            "provider.disabled mail-b",
            "provider.enabled mail-a"
        ]
    );
}
