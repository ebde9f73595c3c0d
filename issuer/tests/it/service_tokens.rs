//! Service identities, service tokens (`tbs_`) and webhook tokens (`tbw_`) over gRPC,
//! in-process on real sockets: the service-token lifecycle with rotation (issue → issue
//! replacing → confirm → the predecessor REVOKED, the successor valid; a replay of the
//! rotated-out token is REVOKED), disabling an identity, the webhook-token lifecycle and
//! expiry on a test clock, tenant confinement and missing scopes for every RPC, the
//! attacker's inputs (a forged checksum costs no database read, a real id with a wrong
//! secret is UNKNOWN, oversized input is INVALID_ARGUMENT), an emergency tenant
//! revocation refusing every standing credential of that tenant only, and the
//! `CredentialChanged` events a trust-bundle subscriber receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tessera_common::bundle::CredentialChange;
use tessera_common::credential::{Credential, CredentialKind, random_base62};
use tessera_common::ids::{ClientId, TenantId};
use tessera_common::{Clock, ManualClock, SystemClock, UnixMillis};
use tessera_issuer::audit::Actor;
use tessera_issuer::opaque_tokens::{NewWebhookToken, OpaqueTokens, Refusal};
use tessera_issuer::store::sqlite::SqliteStore;
use tessera_issuer::store::{
    AuditEntry, OpaqueTokenRecord, OpaqueTokenStore, RevocationRecords, ServiceIdentityRecord,
    ServiceTokenInsert, StoreError,
};
use tessera_proto::v1 as pb;
use tessera_proto::v1::OpaqueTokenRefusal as Refused;
use tessera_proto::v1::service_token_service_client::ServiceTokenServiceClient;
use tessera_proto::v1::webhook_service_client::WebhookServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TestIssuer, with_credential};

const HOME: &str = "acme";
const VICTIM: &str = "globex";

async fn service(issuer: &TestIssuer) -> ServiceTokenServiceClient<Channel> {
    ServiceTokenServiceClient::new(issuer.channel().await)
}

async fn webhooks(issuer: &TestIssuer) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(issuer.channel().await)
}

/// Creates a client with `scopes` confined to `tenants`; returns its credential.
async fn client(issuer: &TestIssuer, scopes: &[&str], tenants: &[&str]) -> String {
    issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: format!("{}-{}", scopes.join("-"), tenants.join("-")).replace(':', "-"),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
        }))
        .await
        .expect("create client")
        .into_inner()
        .credential
}

async fn create_identity(issuer: &TestIssuer, tenant: &str, name: &str) -> pb::ServiceIdentity {
    service(issuer)
        .await
        .create_service_identity(issuer.as_admin(pb::CreateServiceIdentityRequest {
            tenant_id: tenant.into(),
            name: name.into(),
            permissions: vec!["invoices:read".into(), "invoices:write".into()],
            role: "worker".into(),
            token_ttl_seconds: 0,
            reason: "onboarding".into(),
        }))
        .await
        .expect("create identity")
        .into_inner()
}

fn issue_request(tenant: &str, name: &str, replaces: &str) -> pb::IssueServiceTokenRequest {
    pb::IssueServiceTokenRequest {
        tenant_id: tenant.into(),
        service: name.into(),
        replaces: replaces.into(),
        holder: "pod-7".into(),
    }
}

async fn issue(
    issuer: &TestIssuer,
    tenant: &str,
    name: &str,
    replaces: &str,
) -> pb::IssueServiceTokenResponse {
    service(issuer)
        .await
        .issue_service_token(issuer.as_admin(issue_request(tenant, name, replaces)))
        .await
        .expect("issue")
        .into_inner()
}

async fn issue_webhook(
    issuer: &TestIssuer,
    tenant: &str,
    endpoint: &str,
) -> pb::IssueWebhookTokenResponse {
    webhooks(issuer)
        .await
        .issue_webhook_token(issuer.as_admin(pb::IssueWebhookTokenRequest {
            tenant_id: tenant.into(),
            endpoint: endpoint.into(),
            permissions: vec!["callback".into()],
            ttl_seconds: 0,
        }))
        .await
        .expect("issue webhook token")
        .into_inner()
}

fn validate_request(token: &str) -> pb::ValidateOpaqueTokenRequest {
    pb::ValidateOpaqueTokenRequest {
        token: token.into(),
        ..Default::default()
    }
}

/// Validates `token` as the admin; returns the answer.
async fn validate(issuer: &TestIssuer, token: &str) -> pb::ValidateOpaqueTokenResponse {
    service(issuer)
        .await
        .validate_service_token(issuer.as_admin(validate_request(token)))
        .await
        .expect("validate")
        .into_inner()
}

/// Returns why `token` is refused, `Unspecified` when it is valid.
async fn refusal(issuer: &TestIssuer, token: &str) -> Refused {
    let answer = validate(issuer, token).await;
    assert_eq!(
        answer.valid,
        answer.refusal() == Refused::Unspecified,
        "{answer:?}"
    );
    answer.refusal()
}

/// The audit rows of `action` (newest first): target and reason.
async fn audited(issuer: &TestIssuer, action: &str) -> Vec<(String, String)> {
    issuer
        .app
        .store
        .audit_page(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.entry.action == action)
        .map(|record| (record.entry.target, record.entry.reason))
        .collect()
}

#[tokio::test]
async fn service_token_lifecycle_with_rotation_confirmation_and_revocation() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone()).await;
    let identity = create_identity(&issuer, HOME, "billing").await;
    assert_eq!(identity.token_ttl_seconds, 86_400, "default 24 h");
    assert!(identity.disabled_at.is_none());
    let listed = service(&issuer)
        .await
        .list_service_identities(issuer.as_admin(pb::ListServiceIdentitiesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.identities, vec![identity.clone()]);

    let first = issue(&issuer, HOME, "billing", "").await;
    assert!(first.token.starts_with("tbs_"), "the prefix");
    let first_info = first.info.clone().unwrap();
    assert_eq!(first_info.kind, "service");
    assert_eq!(first_info.subject, "billing");
    assert_eq!(first_info.state, "active");
    assert_eq!(first_info.holder, "pod-7");
    let issued = first_info.issued_at.unwrap().seconds;
    assert_eq!(first_info.expires_at.unwrap().seconds - issued, 86_400);
    assert_eq!(
        first_info.renew_at.unwrap().seconds - issued,
        86_400 * 8 / 10,
        "renew at 80 % of the life"
    );
    let valid = validate(&issuer, &first.token).await;
    assert!(valid.valid);
    let info = valid.info.unwrap();
    assert_eq!(
        (info.tenant_id.as_str(), info.role.as_str()),
        (HOME, "worker")
    );
    assert_eq!(info.permissions, ["invoices:read", "invoices:write"]);
    // Required permission, role and subject.
    for request in [
        pb::ValidateOpaqueTokenRequest {
            required_permissions: vec!["payroll:read".into()],
            ..validate_request(&first.token)
        },
        pb::ValidateOpaqueTokenRequest {
            required_role: "admin".into(),
            ..validate_request(&first.token)
        },
        pb::ValidateOpaqueTokenRequest {
            required_subject: "mailer".into(),
            ..validate_request(&first.token)
        },
    ] {
        let answer = service(&issuer)
            .await
            .validate_service_token(issuer.as_admin(request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.refusal(), Refused::InsufficientPermissions);
        assert!(answer.info.is_none(), "a refusal says nothing of the token");
    }

    // Rotation: both work until the successor is confirmed, then only the successor.
    clock.advance(Duration::from_secs(70_000));
    let second = issue(&issuer, HOME, "billing", &first_info.token_id).await;
    let second_info = second.info.clone().unwrap();
    assert_eq!(second_info.replaces, first_info.token_id);
    assert!(validate(&issuer, &first.token).await.valid);
    assert!(validate(&issuer, &second.token).await.valid);
    let confirmed = service(&issuer)
        .await
        .confirm_service_token(issuer.as_admin(pb::ConfirmServiceTokenRequest {
            token_id: second_info.token_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.revoked_token_id, first_info.token_id);
    assert_eq!(
        refusal(&issuer, &first.token).await,
        Refused::Revoked,
        "replay of the rotated-out token"
    );
    assert!(validate(&issuer, &second.token).await.valid);
    // Confirming twice is idempotent.
    let again = service(&issuer)
        .await
        .confirm_service_token(issuer.as_admin(pb::ConfirmServiceTokenRequest {
            token_id: second_info.token_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revoked_token_id, "");
    // A dead token cannot be replaced.
    let stale = service(&issuer)
        .await
        .issue_service_token(issuer.as_admin(issue_request(HOME, "billing", &first_info.token_id)))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");

    // Revocation at once; twice is FAILED_PRECONDITION.
    let revoked = service(&issuer)
        .await
        .revoke_service_token(issuer.as_admin(pb::RevokeServiceTokenRequest {
            token_id: second_info.token_id.clone(),
            reason: "pod compromised".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state, "revoked");
    assert_eq!(refusal(&issuer, &second.token).await, Refused::Revoked);
    // A revoked successor cannot be confirmed (its predecessor is already gone here,
    // but the rule is checked first).
    let dead_confirm = service(&issuer)
        .await
        .confirm_service_token(issuer.as_admin(pb::ConfirmServiceTokenRequest {
            token_id: second_info.token_id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(dead_confirm.code(), Code::FailedPrecondition);
    let twice = service(&issuer)
        .await
        .revoke_service_token(issuer.as_admin(pb::RevokeServiceTokenRequest {
            token_id: second_info.token_id.clone(),
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);

    // Expiry by the token's own lifetime.
    let third = issue(&issuer, HOME, "billing", "").await;
    // A successor revoked before it was confirmed: confirming it is refused and the
    // predecessor the holder still has keeps working.
    let fourth = issue(
        &issuer,
        HOME,
        "billing",
        &third.info.clone().unwrap().token_id,
    )
    .await;
    let fourth_id = fourth.info.unwrap().token_id;
    service(&issuer)
        .await
        .revoke_service_token(issuer.as_admin(pb::RevokeServiceTokenRequest {
            token_id: fourth_id.clone(),
            reason: String::new(),
        }))
        .await
        .unwrap();
    let refused = service(&issuer)
        .await
        .confirm_service_token(issuer.as_admin(pb::ConfirmServiceTokenRequest {
            token_id: fourth_id,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(validate(&issuer, &third.token).await.valid);
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(refusal(&issuer, &third.token).await, Refused::Expired);

    // Audited with ids, never a token.
    for action in [
        "service.identity.created",
        "service.token.issued",
        "service.token.rotated",
        "service.token.revoked",
    ] {
        let rows = audited(&issuer, action).await;
        assert!(!rows.is_empty(), "{action}");
        for (target, reason) in rows {
            for token in [&first.token, &second.token, &third.token] {
                let secret = &token[token.len() - 20..];
                assert!(!target.contains(secret) && !reason.contains(secret));
            }
        }
    }
    assert_eq!(audited(&issuer, "service.token.issued").await.len(), 4);
    let rotated = audited(&issuer, "service.token.rotated").await;
    assert_eq!(rotated.len(), 1);
    assert!(rotated[0].0.ends_with(&first_info.token_id), "{rotated:?}");
}

#[tokio::test]
async fn disabling_an_identity_revokes_its_live_tokens_and_refuses_new_ones() {
    let issuer = TestIssuer::start().await;
    create_identity(&issuer, HOME, "billing").await;
    create_identity(&issuer, HOME, "mailer").await;
    let a = issue(&issuer, HOME, "billing", "").await;
    let b = issue(&issuer, HOME, "billing", "").await;
    let other = issue(&issuer, HOME, "mailer", "").await;
    let disabled = service(&issuer)
        .await
        .disable_service_identity(issuer.as_admin(pb::DisableServiceIdentityRequest {
            tenant_id: HOME.into(),
            name: "billing".into(),
            reason: "decommissioned".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(disabled.disabled_at.is_some());
    assert_eq!(refusal(&issuer, &a.token).await, Refused::Revoked);
    assert_eq!(refusal(&issuer, &b.token).await, Refused::Revoked);
    assert!(
        validate(&issuer, &other.token).await.valid,
        "another identity is untouched"
    );
    let refused = service(&issuer)
        .await
        .issue_service_token(issuer.as_admin(issue_request(HOME, "billing", "")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(audited(&issuer, "service.identity.disabled").await.len(), 1);
    assert_eq!(audited(&issuer, "service.token.revoked").await.len(), 2);
    // Disabling again changes nothing.
    let again = service(&issuer)
        .await
        .disable_service_identity(issuer.as_admin(pb::DisableServiceIdentityRequest {
            tenant_id: HOME.into(),
            name: "billing".into(),
            reason: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.disabled_at, disabled.disabled_at);
    assert_eq!(audited(&issuer, "service.identity.disabled").await.len(), 1);
    let missing = service(&issuer)
        .await
        .disable_service_identity(issuer.as_admin(pb::DisableServiceIdentityRequest {
            tenant_id: HOME.into(),
            name: "nobody".into(),
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn webhook_token_lifecycle_and_expiry() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone()).await;
    let issued = issue_webhook(&issuer, HOME, "orders-callback").await;
    assert!(issued.token.starts_with("tbw_"));
    let info = issued.info.clone().unwrap();
    assert_eq!(info.kind, "webhook");
    assert_eq!(
        info.expires_at.unwrap().seconds - info.issued_at.unwrap().seconds,
        3600,
        "default 1 h"
    );
    let answer = service(&issuer)
        .await
        .validate_service_token(issuer.as_admin(pb::ValidateOpaqueTokenRequest {
            required_subject: "orders-callback".into(),
            required_permissions: vec!["callback".into()],
            ..validate_request(&issued.token)
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.valid, "{answer:?}");
    assert_eq!(answer.info.unwrap().kind, "webhook");
    let wrong_endpoint = service(&issuer)
        .await
        .validate_service_token(issuer.as_admin(pb::ValidateOpaqueTokenRequest {
            required_subject: "refunds-callback".into(),
            ..validate_request(&issued.token)
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wrong_endpoint.refusal(), Refused::InsufficientPermissions);

    // Bounds.
    for (endpoint, ttl) in [
        ("", 0),
        (&"e".repeat(129)[..], 0),
        ("cb", 59),
        ("cb", 86_401),
    ] {
        let refused = webhooks(&issuer)
            .await
            .issue_webhook_token(issuer.as_admin(pb::IssueWebhookTokenRequest {
                tenant_id: HOME.into(),
                endpoint: endpoint.into(),
                permissions: Vec::new(),
                ttl_seconds: ttl,
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{endpoint:?} {ttl}");
    }

    // Revocation.
    let doomed = issue_webhook(&issuer, HOME, "refunds-callback").await;
    let revoked = webhooks(&issuer)
        .await
        .revoke_webhook_token(issuer.as_admin(pb::RevokeWebhookTokenRequest {
            token_id: doomed.info.unwrap().token_id,
            reason: "receiver rebuilt".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state, "revoked");
    assert_eq!(refusal(&issuer, &doomed.token).await, Refused::Revoked);
    // A service-token id is not a webhook token's.
    create_identity(&issuer, HOME, "billing").await;
    let service_token = issue(&issuer, HOME, "billing", "").await;
    let wrong_kind = webhooks(&issuer)
        .await
        .revoke_webhook_token(issuer.as_admin(pb::RevokeWebhookTokenRequest {
            token_id: service_token.info.unwrap().token_id,
            reason: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(wrong_kind.code(), Code::NotFound);

    // Expiry on the test clock; the sweep then marks the row.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(refusal(&issuer, &issued.token).await, Refused::Expired);
    let swept = issuer.app.opaque_tokens.sweep().await.unwrap();
    assert!(swept.expired >= 1, "{swept:?}");
    assert_eq!(refusal(&issuer, &issued.token).await, Refused::Expired);
    assert_eq!(audited(&issuer, "webhook.token.issued").await.len(), 2);
    assert_eq!(audited(&issuer, "webhook.token.revoked").await.len(), 1);
}

/// A caller confined to `acme` acts on `acme` only, for every new RPC: another tenant's
/// identity or token is answered like a missing one (NOT_FOUND, UNKNOWN), an RPC naming
/// another tenant is PERMISSION_DENIED; a caller without the RPC's scope is refused.
#[tokio::test]
async fn confined_callers_act_on_their_own_tenant_only_and_scopes_are_required() {
    let issuer = TestIssuer::start().await;
    create_identity(&issuer, VICTIM, "billing").await;
    create_identity(&issuer, HOME, "billing").await;
    let victim_token = issue(&issuer, VICTIM, "billing", "").await;
    let victim_id = victim_token.info.clone().unwrap().token_id;
    let victim_webhook = issue_webhook(&issuer, VICTIM, "cb").await;
    let victim_webhook_id = victim_webhook.info.clone().unwrap().token_id;
    let confined = client(&issuer, &["admin", "issue", "introspect"], &[HOME]).await;
    let mut tokens = service(&issuer).await;
    let mut hooks = webhooks(&issuer).await;

    let denied = tokens
        .create_service_identity(with_credential(
            pb::CreateServiceIdentityRequest {
                tenant_id: VICTIM.into(),
                name: "spy".into(),
                ..Default::default()
            },
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let listed = tokens
        .list_service_identities(with_credential(
            pb::ListServiceIdentitiesRequest::default(),
            &confined,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.identities.len(), 1);
    assert_eq!(listed.identities[0].tenant_id, HOME);
    let denied = tokens
        .list_service_identities(with_credential(
            pb::ListServiceIdentitiesRequest {
                tenant_id: VICTIM.into(),
            },
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = tokens
        .disable_service_identity(with_credential(
            pb::DisableServiceIdentityRequest {
                tenant_id: VICTIM.into(),
                name: "billing".into(),
                reason: String::new(),
            },
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = tokens
        .issue_service_token(with_credential(
            issue_request(VICTIM, "billing", ""),
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Replacing another tenant's token from the caller's own identity: not live there.
    let cross = tokens
        .issue_service_token(with_credential(
            issue_request(HOME, "billing", &victim_id),
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(cross.code(), Code::FailedPrecondition);
    let hidden = tokens
        .confirm_service_token(with_credential(
            pb::ConfirmServiceTokenRequest {
                token_id: victim_id.clone(),
            },
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let hidden = tokens
        .revoke_service_token(with_credential(
            pb::RevokeServiceTokenRequest {
                token_id: victim_id.clone(),
                reason: String::new(),
            },
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    for token in [&victim_token.token, &victim_webhook.token] {
        let answer = tokens
            .validate_service_token(with_credential(validate_request(token), &confined))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.refusal(), Refused::Unknown, "like a missing token");
    }
    let denied = hooks
        .issue_webhook_token(with_credential(
            pb::IssueWebhookTokenRequest {
                tenant_id: VICTIM.into(),
                endpoint: "cb".into(),
                ..Default::default()
            },
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let hidden = hooks
        .revoke_webhook_token(with_credential(
            pb::RevokeWebhookTokenRequest {
                token_id: victim_webhook_id.clone(),
                reason: String::new(),
            },
            &confined,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    // Nothing of the victim's changed.
    assert!(validate(&issuer, &victim_token.token).await.valid);
    assert!(validate(&issuer, &victim_webhook.token).await.valid);
    // The confined caller's own tenant works.
    let own = tokens
        .issue_service_token(with_credential(
            issue_request(HOME, "billing", ""),
            &confined,
        ))
        .await
        .unwrap()
        .into_inner();
    let answer = tokens
        .validate_service_token(with_credential(validate_request(&own.token), &confined))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.valid);

    // Scopes: issue cannot administer or validate; introspect cannot issue.
    let issuer_only = client(&issuer, &["issue"], &[]).await;
    let introspect_only = client(&issuer, &["introspect"], &[]).await;
    let codes = [
        tokens
            .create_service_identity(with_credential(
                pb::CreateServiceIdentityRequest {
                    tenant_id: HOME.into(),
                    name: "x".into(),
                    ..Default::default()
                },
                &issuer_only,
            ))
            .await
            .map(drop),
        tokens
            .list_service_identities(with_credential(
                pb::ListServiceIdentitiesRequest::default(),
                &issuer_only,
            ))
            .await
            .map(drop),
        tokens
            .disable_service_identity(with_credential(
                pb::DisableServiceIdentityRequest {
                    tenant_id: HOME.into(),
                    name: "billing".into(),
                    reason: String::new(),
                },
                &issuer_only,
            ))
            .await
            .map(drop),
        tokens
            .revoke_service_token(with_credential(
                pb::RevokeServiceTokenRequest {
                    token_id: victim_id.clone(),
                    reason: String::new(),
                },
                &issuer_only,
            ))
            .await
            .map(drop),
        tokens
            .validate_service_token(with_credential(validate_request(&own.token), &issuer_only))
            .await
            .map(drop),
        tokens
            .issue_service_token(with_credential(
                issue_request(HOME, "billing", ""),
                &introspect_only,
            ))
            .await
            .map(drop),
        tokens
            .confirm_service_token(with_credential(
                pb::ConfirmServiceTokenRequest {
                    token_id: own.info.clone().unwrap().token_id,
                },
                &introspect_only,
            ))
            .await
            .map(drop),
        hooks
            .issue_webhook_token(with_credential(
                pb::IssueWebhookTokenRequest {
                    tenant_id: HOME.into(),
                    endpoint: "cb".into(),
                    ..Default::default()
                },
                &introspect_only,
            ))
            .await
            .map(drop),
        hooks
            .revoke_webhook_token(with_credential(
                pb::RevokeWebhookTokenRequest {
                    token_id: victim_webhook_id,
                    reason: String::new(),
                },
                &issuer_only,
            ))
            .await
            .map(drop),
    ];
    for (i, result) in codes.into_iter().enumerate() {
        assert_eq!(
            result.unwrap_err().code(),
            Code::PermissionDenied,
            "call {i}"
        );
    }
}

/// An opaque-token store that counts token lookups.
struct CountingStore {
    inner: SqliteStore,
    lookups: AtomicUsize,
}

#[async_trait]
impl OpaqueTokenStore for CountingStore {
    async fn insert_service_identity(
        &self,
        identity: ServiceIdentityRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.inner.insert_service_identity(identity, audit).await
    }

    async fn service_identity(
        &self,
        tenant_id: &TenantId,
        name: &str,
    ) -> Result<Option<ServiceIdentityRecord>, StoreError> {
        self.inner.service_identity(tenant_id, name).await
    }

    async fn list_service_identities(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<ServiceIdentityRecord>, StoreError> {
        self.inner.list_service_identities(tenant_id).await
    }

    async fn disable_service_identity(
        &self,
        tenant_id: &TenantId,
        name: &str,
        at: UnixMillis,
        audit: AuditEntry,
        records: RevocationRecords,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.inner
            .disable_service_identity(tenant_id, name, at, audit, records)
            .await
    }

    async fn insert_service_token(
        &self,
        token: OpaqueTokenRecord,
        audit: AuditEntry,
    ) -> Result<ServiceTokenInsert, StoreError> {
        self.inner.insert_service_token(token, audit).await
    }

    async fn insert_webhook_token(
        &self,
        token: OpaqueTokenRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.inner.insert_webhook_token(token, audit).await
    }

    async fn opaque_token(&self, token_id: &str) -> Result<Option<OpaqueTokenRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.opaque_token(token_id).await
    }

    async fn revoke_opaque_token(
        &self,
        token_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        self.inner
            .revoke_opaque_token(token_id, at, audit, event)
            .await
    }

    async fn sweep_opaque_tokens(
        &self,
        now: UnixMillis,
        delete_until: UnixMillis,
    ) -> Result<(u64, u64), StoreError> {
        self.inner.sweep_opaque_tokens(now, delete_until).await
    }
}

/// A forged checksum is BAD_CHECKSUM and another prefix MALFORMED, without a database
/// read; a real id with a wrong secret is read once and answered UNKNOWN; oversized
/// input is INVALID_ARGUMENT at the edge.
#[tokio::test]
async fn attacker_inputs_forged_checksum_wrong_secret_and_oversized() {
    let issuer = TestIssuer::start().await;
    let store = Arc::new(CountingStore {
        inner: SqliteStore::open_in_memory().unwrap(),
        lookups: AtomicUsize::new(0),
    });
    let tokens = OpaqueTokens::new(
        store.clone(),
        issuer.app.auth.credentials().clone(),
        Arc::new(SystemClock),
    );
    let actor = Actor::client(ClientId::new("ops").unwrap(), "req".into(), String::new());
    let (_, credential) = tokens
        .issue_webhook(
            &actor,
            NewWebhookToken {
                tenant_id: TenantId::new(HOME).unwrap(),
                endpoint: "cb".into(),
                permissions: Vec::new(),
                ttl: None,
            },
        )
        .await
        .unwrap();
    let token = credential.expose();
    let everyone = |_: &str| true;
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        tokens
            .validate(&forged, &[], "", "", everyone)
            .await
            .unwrap(),
        Err(Refusal::BadChecksum)
    );
    let api_key = Credential::generate(CredentialKind::ApiKey).expose();
    for malformed in ["tbw_not-a-token", api_key.as_str()] {
        assert_eq!(
            tokens
                .validate(malformed, &[], "", "", everyone)
                .await
                .unwrap(),
            Err(Refusal::Malformed)
        );
    }
    assert_eq!(store.lookups.load(Ordering::SeqCst), 0, "no database read");
    let parsed = Credential::parse(&token).unwrap();
    let wrong_secret = Credential::from_parts(parsed.kind, parsed.id, random_base62(43)).expose();
    assert_eq!(
        tokens
            .validate(&wrong_secret, &[], "", "", everyone)
            .await
            .unwrap(),
        Err(Refusal::Unknown)
    );
    assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
    assert!(
        tokens
            .validate(&token, &[], "", "", everyone)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(
        tokens
            .validate(&token, &[], "", "", |_| false)
            .await
            .unwrap(),
        Err(Refusal::Unknown),
        "another tenant's token is unknown"
    );

    // The same over gRPC, and the bounds.
    let real = issue_webhook(&issuer, HOME, "cb").await.token;
    let parsed = Credential::parse(&real).unwrap();
    let wrong_secret = Credential::from_parts(parsed.kind, parsed.id, random_base62(43)).expose();
    assert_eq!(refusal(&issuer, &wrong_secret).await, Refused::Unknown);
    let mut forged = real.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(refusal(&issuer, &forged).await, Refused::BadChecksum);
    let oversized = [
        validate_request(&format!("tbs_{}", "a".repeat(125))),
        pb::ValidateOpaqueTokenRequest {
            required_permissions: (0..129).map(|i| format!("p{i}")).collect(),
            ..validate_request(&real)
        },
        pb::ValidateOpaqueTokenRequest {
            required_permissions: vec!["p".repeat(129)],
            ..validate_request(&real)
        },
        pb::ValidateOpaqueTokenRequest {
            required_subject: "s".repeat(129),
            ..validate_request(&real)
        },
    ];
    for request in oversized {
        let refused = service(&issuer)
            .await
            .validate_service_token(issuer.as_admin(request))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    let refused = service(&issuer)
        .await
        .create_service_identity(issuer.as_admin(pb::CreateServiceIdentityRequest {
            tenant_id: HOME.into(),
            name: "Not_A_Name".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = service(&issuer)
        .await
        .create_service_identity(issuer.as_admin(pb::CreateServiceIdentityRequest {
            tenant_id: HOME.into(),
            name: "ok".into(),
            permissions: (0..129).map(|i| format!("p{i}")).collect(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    create_identity(&issuer, HOME, "billing").await;
    let refused = service(&issuer)
        .await
        .issue_service_token(issuer.as_admin(pb::IssueServiceTokenRequest {
            holder: "h".repeat(129),
            ..issue_request(HOME, "billing", "")
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let duplicate = service(&issuer)
        .await
        .create_service_identity(issuer.as_admin(pb::CreateServiceIdentityRequest {
            tenant_id: HOME.into(),
            name: "billing".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
}

/// An emergency tenant revocation leaves every API key, service token and webhook token
/// of that tenant refused at the issuer, and another tenant's untouched.
#[tokio::test]
async fn an_emergency_tenant_revocation_refuses_every_standing_credential_of_the_tenant() {
    let issuer = TestIssuer::start().await;
    let mut keys = pb::api_key_service_client::ApiKeyServiceClient::new(issuer.channel().await);
    let mut standing = Vec::new();
    for tenant in [HOME, VICTIM] {
        let key = keys
            .create_api_key(issuer.as_admin(pb::CreateApiKeyRequest {
                tenant_id: tenant.into(),
                name: "integration".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .key;
        create_identity(&issuer, tenant, "billing").await;
        let service_token = issue(&issuer, tenant, "billing", "").await.token;
        let webhook_token = issue_webhook(&issuer, tenant, "cb").await.token;
        standing.push((tenant, key, service_token, webhook_token));
    }
    issuer
        .tokens()
        .await
        .emergency_revoke(issuer.as_admin(pb::EmergencyRevokeRequest {
            scope: Some(pb::emergency_revoke_request::Scope::TenantId(HOME.into())),
            incident_id: "inc-42".into(),
            reason: "tenant breach".into(),
        }))
        .await
        .unwrap();
    for (tenant, key, service_token, webhook_token) in standing {
        let key_answer = keys
            .validate_api_key(issuer.as_admin(pb::ValidateApiKeyRequest {
                key: key.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let service_answer = refusal(&issuer, &service_token).await;
        let webhook_answer = refusal(&issuer, &webhook_token).await;
        if tenant == HOME {
            assert_eq!(key_answer.refusal(), pb::ApiKeyRefusal::Revoked);
            assert_eq!(service_answer, Refused::Revoked);
            assert_eq!(webhook_answer, Refused::Revoked);
        } else {
            assert!(key_answer.valid, "{tenant}");
            assert_eq!(service_answer, Refused::Unspecified, "valid");
            assert_eq!(webhook_answer, Refused::Unspecified, "valid");
        }
    }
    let revoked = audited(&issuer, "revoke.tenant").await;
    assert!(
        revoked[0]
            .1
            .ends_with("deactivated 1 api keys, 1 service tokens, 1 webhook tokens"),
        "{revoked:?}"
    );
    // The identity survives: new tokens may be issued after the incident.
    let fresh = issue(&issuer, HOME, "billing", "").await;
    assert!(validate(&issuer, &fresh.token).await.valid);
}

/// Subscribes with the admin credential, asking for credential changes; returns the
/// stream after its snapshot.
async fn watch(issuer: &TestIssuer) -> tonic::Streaming<pb::TrustBundleUpdate> {
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest {
            credential_changes: true,
            secret_changes: false,
            ..Default::default()
        }))
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("snapshot in time")
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.kind,
        Some(pb::trust_bundle_update::Kind::Snapshot(_))
    ));
    stream
}

/// Returns the next credential change on `stream` (skipping heartbeats).
async fn next_change(stream: &mut tonic::Streaming<pb::TrustBundleUpdate>) -> pb::CredentialChange {
    loop {
        let update = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("delta in time")
            .unwrap()
            .unwrap();
        if let Some(pb::trust_bundle_update::Kind::Delta(delta)) = update.kind {
            for change in delta.changes {
                if let Some(pb::bundle_change::Change::CredentialChanged(change)) = change.change {
                    return change;
                }
            }
        }
    }
}

/// A confirmed rotation and a webhook-token revocation reach a trust-bundle subscriber as
/// `CredentialChanged` events with the kind, id, tenant and state.
#[tokio::test]
async fn token_revocations_reach_a_trust_bundle_subscriber() {
    let issuer = TestIssuer::start().await;
    create_identity(&issuer, HOME, "billing").await;
    let first = issue(&issuer, HOME, "billing", "").await.info.unwrap();
    let second = issue(&issuer, HOME, "billing", &first.token_id)
        .await
        .info
        .unwrap();
    let webhook = issue_webhook(&issuer, HOME, "cb").await.info.unwrap();
    let mut stream = watch(&issuer).await;
    service(&issuer)
        .await
        .confirm_service_token(issuer.as_admin(pb::ConfirmServiceTokenRequest {
            token_id: second.token_id.clone(),
        }))
        .await
        .unwrap();
    let change = next_change(&mut stream).await;
    assert_eq!(
        (
            change.kind,
            change.credential_id.as_str(),
            change.tenant_id.as_str(),
            change.state.as_str()
        ),
        (
            pb::CredentialKind::ServiceToken as i32,
            first.token_id.as_str(),
            HOME,
            "revoked"
        )
    );
    webhooks(&issuer)
        .await
        .revoke_webhook_token(issuer.as_admin(pb::RevokeWebhookTokenRequest {
            token_id: webhook.token_id.clone(),
            reason: String::new(),
        }))
        .await
        .unwrap();
    let change = next_change(&mut stream).await;
    assert_eq!(
        (
            change.kind,
            change.credential_id.as_str(),
            change.state.as_str()
        ),
        (
            pb::CredentialKind::WebhookToken as i32,
            webhook.token_id.as_str(),
            "revoked"
        )
    );
}

/// Runs the `tessera-issuer` binary against `issuer` with `args` and `--json`; returns
/// whether it succeeded and its JSON answer.
async fn cli(
    issuer: &TestIssuer,
    token_file: &std::path::Path,
    args: &[&str],
) -> (bool, serde_json::Value) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera-issuer"))
        .args(args)
        .arg("--json")
        .arg("--addr")
        .arg(format!("http://{}", issuer.grpc_addr))
        .arg("--token-file")
        .arg(token_file)
        .output()
        .await
        .expect("run tessera-issuer");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "{args:?}: {error}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), value)
}

/// The CLI end to end, with `--json`: create an identity, issue, rotate and confirm,
/// validate (the rotated-out token is revoked, exit non-zero), disable; issue, validate
/// and revoke a webhook token.
#[tokio::test]
async fn the_cli_manages_service_and_webhook_tokens() {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, &issuer.admin_token).unwrap();
    let run = |args: &'static [&'static str]| cli(&issuer, &token_file, args);

    let (ok, identity) = run(&[
        "service-tokens",
        "create-identity",
        "--tenant",
        "acme",
        "--name",
        "billing",
        "--permission",
        "invoices:read",
        "--token-ttl-seconds",
        "3600",
    ])
    .await;
    assert!(ok);
    assert_eq!(identity["token_ttl_seconds"], 3600);
    let (_, listed) = run(&["service-tokens", "list", "--tenant", "acme"]).await;
    assert_eq!(listed["identities"][0]["name"], "billing");

    let (ok, first) = run(&[
        "service-tokens",
        "issue",
        "--tenant",
        "acme",
        "--service",
        "billing",
    ])
    .await;
    assert!(ok);
    let first_token = first["token"].as_str().unwrap().to_owned();
    let first_id = first["token_id"].as_str().unwrap().to_owned();
    assert!(first_token.starts_with("tbs_"));
    let second = cli(
        &issuer,
        &token_file,
        &[
            "service-tokens",
            "issue",
            "--tenant",
            "acme",
            "--service",
            "billing",
            "--replaces",
            &first_id,
        ],
    )
    .await
    .1;
    let second_id = second["token_id"].as_str().unwrap().to_owned();
    let (_, confirmed) = cli(
        &issuer,
        &token_file,
        &["service-tokens", "confirm", &second_id],
    )
    .await;
    assert_eq!(confirmed["revoked_token_id"], first_id.as_str());
    let (ok, refused) = cli(
        &issuer,
        &token_file,
        &["service-tokens", "validate", &first_token],
    )
    .await;
    assert!(!ok, "exits non-zero for a refused token");
    assert_eq!(refused["refusal"], "revoked");
    let (ok, valid) = cli(
        &issuer,
        &token_file,
        &[
            "service-tokens",
            "validate",
            second["token"].as_str().unwrap(),
            "--subject",
            "billing",
        ],
    )
    .await;
    assert!(ok);
    assert_eq!(valid["info"]["kind"], "service");
    let (ok, disabled) = run(&[
        "service-tokens",
        "disable",
        "--tenant",
        "acme",
        "--name",
        "billing",
    ])
    .await;
    assert!(ok);
    assert!(disabled["disabled_at"].is_number());

    let (ok, webhook) = run(&[
        "webhooks",
        "token",
        "issue",
        "--tenant",
        "acme",
        "--endpoint",
        "orders",
    ])
    .await;
    assert!(ok);
    let webhook_token = webhook["token"].as_str().unwrap().to_owned();
    assert!(webhook_token.starts_with("tbw_"));
    let (ok, _) = cli(
        &issuer,
        &token_file,
        &[
            "webhooks",
            "token",
            "validate",
            &webhook_token,
            "--subject",
            "orders",
        ],
    )
    .await;
    assert!(ok);
    let (ok, revoked) = cli(
        &issuer,
        &token_file,
        &[
            "webhooks",
            "token",
            "revoke",
            webhook["token_id"].as_str().unwrap(),
        ],
    )
    .await;
    assert!(ok);
    assert_eq!(revoked["state"], "revoked");
    let (ok, refused) = cli(
        &issuer,
        &token_file,
        &["webhooks", "token", "validate", &webhook_token],
    )
    .await;
    assert!(!ok);
    assert_eq!(refused["refusal"], "revoked");
}
