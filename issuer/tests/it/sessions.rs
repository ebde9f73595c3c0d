//! Sessions over gRPC: login, refresh rotation, the reuse-grace window, reuse detection
//! revoking the family, exactly one successor under 50 concurrent refreshes (SQLite,
//! PostgreSQL, and split across two PostgreSQL replicas), revocation pushed in the
//! stream, emergency revocation, and refresh-token introspection.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::{Clock, ManualClock, SystemClock};
use tessera_proto::v1 as pb;
use tessera_proto::v1::trust_bundle_update::Kind;
use tonic::Code;

use crate::harness::TestIssuer;
use crate::postgres_replicas::{fresh_schema, replica_configs};
use crate::test_database::database_url;

fn login(tenant: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        subject: "alice".into(),
        tenant_id: tenant.into(),
        role: "staff".into(),
        permissions: vec!["invoices:read".into()],
        ..Default::default()
    }
}

async fn create_session(issuer: &TestIssuer, tenant: &str) -> pb::SessionTokens {
    issuer
        .tokens()
        .await
        .create_session(issuer.as_admin(login(tenant)))
        .await
        .expect("create session")
        .into_inner()
}

async fn refresh(
    issuer: &TestIssuer,
    refresh_token: &str,
) -> Result<pb::SessionTokens, tonic::Status> {
    issuer
        .tokens()
        .await
        .refresh_session(issuer.as_admin(pb::RefreshSessionRequest {
            refresh_token: refresh_token.to_owned(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

async fn introspect(issuer: &TestIssuer, token: &str) -> pb::IntrospectTokenResponse {
    issuer
        .tokens()
        .await
        .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest {
            token: token.to_owned(),
        }))
        .await
        .expect("introspect")
        .into_inner()
}

fn short_grace(seconds: u64) -> impl FnOnce(&mut tessera_issuer::config::IssuerConfig) {
    move |config| config.refresh_reuse_grace = Duration::from_secs(seconds)
}

#[tokio::test]
async fn refresh_rotates_and_reuse_after_grace_revokes_the_family() {
    // The grace window runs on the issuer's injected clock, moved by hand: no sleep, and
    // a slow machine cannot push a "within grace" call past the window.
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = TestIssuer::start_with(short_grace(1), clock.clone()).await;
    let first = create_session(&issuer, "acme").await;
    assert!(first.refresh_token.starts_with("tbf_"));
    assert!(introspect(&issuer, &first.access_token).await.active);
    let refresh_info = introspect(&issuer, &first.refresh_token).await;
    assert!(
        refresh_info.active && refresh_info.token_type == "refresh",
        "{refresh_info:?}"
    );
    assert_eq!(
        refresh_info.refresh.expect("info").session_id,
        first.session_id
    );

    let second = refresh(&issuer, &first.refresh_token)
        .await
        .expect("refresh");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(second.family_id, first.family_id);
    assert_ne!(second.access_jti, first.access_jti);
    // Within the grace window the rotated token returns the very same successor.
    let again = refresh(&issuer, &first.refresh_token)
        .await
        .expect("within grace");
    assert_eq!(again.refresh_token, second.refresh_token);
    assert_eq!(
        introspect(&issuer, &first.refresh_token).await.reason,
        "rotated"
    );
    // The first access token stays valid until it expires.
    assert!(introspect(&issuer, &first.access_token).await.active);

    // The last millisecond of the window still returns the successor; the next is reuse.
    clock.advance(Duration::from_secs(1));
    let at_the_edge = refresh(&issuer, &first.refresh_token)
        .await
        .expect("at the end of the grace window");
    assert_eq!(at_the_edge.refresh_token, second.refresh_token);
    clock.advance(Duration::from_millis(1));
    let status = refresh(&issuer, &first.refresh_token)
        .await
        .expect_err("reuse after grace");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("reuse"), "{}", status.message());
    // The whole family is dead: the current refresh token and every access token.
    let status = refresh(&issuer, &second.refresh_token)
        .await
        .expect_err("family revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    for token in [
        &first.access_token,
        &second.access_token,
        &again.access_token,
        &at_the_edge.access_token,
    ] {
        let response = introspect(&issuer, token).await;
        assert!(
            !response.active && response.reason == "revoked",
            "{response:?}"
        );
    }
    let events = issuer
        .admin()
        .await
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest::default()))
        .await
        .expect("audit")
        .into_inner()
        .events;
    assert!(
        events.iter().any(
            |event| event.action == "refresh.reuse_detected" && event.target == first.family_id
        )
    );
    // A new login of the same user is unaffected.
    let fresh = create_session(&issuer, "acme").await;
    assert!(introspect(&issuer, &fresh.access_token).await.active);
    issuer.stop().await;
}

#[tokio::test]
async fn presenting_an_older_ancestor_is_reuse_even_within_grace() {
    let issuer = TestIssuer::start().await;
    let first = create_session(&issuer, "acme").await;
    let second = refresh(&issuer, &first.refresh_token)
        .await
        .expect("refresh 1");
    let _third = refresh(&issuer, &second.refresh_token)
        .await
        .expect("refresh 2");
    let status = refresh(&issuer, &first.refresh_token)
        .await
        .expect_err("ancestor");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = refresh(&issuer, "tbf_garbage").await.expect_err("garbage");
    assert_eq!(status.code(), Code::Unauthenticated);
    issuer.stop().await;
}

/// Fires 50 concurrent refreshes of one token across `issuers` and checks that exactly
/// one successor exists: every success returns the same refresh token.
async fn fifty_concurrent_refreshes(issuers: &[&TestIssuer]) {
    let session = create_session(issuers[0], "acme").await;
    let mut calls = Vec::new();
    for i in 0..50 {
        let issuer = issuers[i % issuers.len()];
        let mut client = issuer.tokens().await;
        let request = issuer.as_admin(pb::RefreshSessionRequest {
            refresh_token: session.refresh_token.clone(),
        });
        calls.push(tokio::spawn(async move {
            client
                .refresh_session(request)
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut successors = std::collections::BTreeSet::new();
    let mut n_ok = 0;
    for call in calls {
        match call.await.expect("join") {
            Ok(tokens) => {
                n_ok += 1;
                successors.insert(tokens.refresh_token);
            }
            Err(status) => panic!("a concurrent refresh within grace failed: {status:?}"),
        }
    }
    assert_eq!(n_ok, 50);
    assert_eq!(successors.len(), 1, "exactly one successor");
    let successor = successors.into_iter().next().expect("one");
    assert!(introspect(issuers[0], &successor).await.active);
}

#[tokio::test]
async fn fifty_concurrent_refreshes_yield_one_successor_on_sqlite() {
    let issuer = TestIssuer::start().await;
    fifty_concurrent_refreshes(&[&issuer]).await;
    issuer.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_refreshes_yield_one_successor_on_postgres_and_across_replicas() {
    let Some(url) = database_url() else { return };
    let schema = fresh_schema(&url).await;
    let kek_dir = tempfile::tempdir().expect("tempdir");
    let mut configs = replica_configs(&url, &schema, kek_dir.path());
    let (config_b, dir_b) = configs.pop().expect("b");
    let (config_a, dir_a) = configs.pop().expect("a");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let replica_a = TestIssuer::start_in(config_a, dir_a, clock.clone()).await;
    let replica_b = TestIssuer::start_in(config_b, dir_b, clock).await;
    fifty_concurrent_refreshes(&[&replica_a]).await;
    fifty_concurrent_refreshes(&[&replica_a, &replica_b]).await;
    replica_a.stop().await;
    replica_b.stop().await;
}

/// Picks the revocation target out of a session's tokens.
type TargetOf = Box<dyn Fn(&pb::SessionTokens) -> pb::revoke_tokens_request::Target>;

async fn wait_for_revocation(
    stream: &mut tonic::Streaming<pb::TrustBundleUpdate>,
    kind: pb::RevocationKind,
    value: &str,
) {
    tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let update = stream.message().await.expect("ok").expect("open");
            if let Some(Kind::Delta(delta)) = update.kind {
                let found = delta.changes.iter().any(|change| {
                    matches!(&change.change, Some(pb::bundle_change::Change::RevocationAdded(entry))
                        if entry.kind == kind as i32 && entry.value == value)
                });
                if found {
                    return;
                }
            }
        }
    })
    .await
    .expect("revocation pushed within 2 s");
}

#[tokio::test]
async fn revocations_by_every_target_are_pushed_and_checked() {
    let issuer = TestIssuer::start().await;
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest::default()))
        .await
        .expect("watch")
        .into_inner();
    let _snapshot = stream.message().await.expect("ok").expect("snapshot");
    use pb::revoke_tokens_request::Target;
    let cases: Vec<(TargetOf, pb::RevocationKind, &str)> = vec![
        (
            Box::new(|s| Target::Jti(s.access_jti.clone())),
            pb::RevocationKind::Jti,
            "jti",
        ),
        (
            Box::new(|s| Target::SessionId(s.session_id.clone())),
            pb::RevocationKind::Session,
            "session",
        ),
        (
            Box::new(|_| Target::UserId("alice".into())),
            pb::RevocationKind::User,
            "user",
        ),
        (
            Box::new(|s| Target::FamilyId(s.family_id.clone())),
            pb::RevocationKind::Family,
            "family",
        ),
        (
            Box::new(|_| Target::TenantId("acme".into())),
            pb::RevocationKind::Tenant,
            "tenant",
        ),
    ];
    for (target, kind, name) in cases {
        let session = create_session(&issuer, "acme").await;
        let target = target(&session);
        let value = match &target {
            Target::Jti(v)
            | Target::SessionId(v)
            | Target::UserId(v)
            | Target::FamilyId(v)
            | Target::TenantId(v) => v.clone(),
            Target::All(_) => String::new(),
        };
        let response = issuer
            .tokens()
            .await
            .revoke_tokens(issuer.as_admin(pb::RevokeTokensRequest {
                target: Some(target),
                scope_tenant_id: "acme".into(),
                reason: format!("test {name}"),
            }))
            .await
            .expect("revoke")
            .into_inner();
        assert!(response.revision > 0);
        wait_for_revocation(&mut stream, kind, &value).await;
        let introspection = introspect(&issuer, &session.access_token).await;
        assert!(
            !introspection.active && introspection.reason == "revoked",
            "{name}: {introspection:?}"
        );
        if name != "jti" {
            assert!(response.n_sessions_revoked >= 1, "{name} ends the session");
            let status = refresh(&issuer, &session.refresh_token)
                .await
                .expect_err("session ended");
            assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        }
    }
    // Another tenant's user of the same name is untouched by the acme-scoped entries.
    let other = create_session(&issuer, "globex").await;
    assert!(introspect(&issuer, &other.access_token).await.active);
    issuer.stop().await;
}

#[tokio::test]
async fn emergency_revocation_of_a_tenant_and_of_everything_is_idempotent() {
    let issuer = TestIssuer::start().await;
    let acme = create_session(&issuer, "acme").await;
    let globex = create_session(&issuer, "globex").await;
    let mut tokens = issuer.tokens().await;
    let tenant_request = || {
        issuer.as_admin(pb::EmergencyRevokeRequest {
            scope: Some(pb::emergency_revoke_request::Scope::TenantId("acme".into())),
            incident_id: "inc-1".into(),
            reason: "breach".into(),
        })
    };
    let first = tokens
        .emergency_revoke(tenant_request())
        .await
        .expect("tenant")
        .into_inner();
    assert!(
        !first.replayed && first.n_sessions_revoked == 1,
        "{first:?}"
    );
    let again = tokens
        .emergency_revoke(tenant_request())
        .await
        .expect("replay")
        .into_inner();
    assert!(again.replayed);
    assert!(!introspect(&issuer, &acme.access_token).await.active);
    assert!(introspect(&issuer, &globex.access_token).await.active);

    let keys_before = issuer.app.keys.list(None).await.expect("keys");
    let global = tokens
        .emergency_revoke(issuer.as_admin(pb::EmergencyRevokeRequest {
            scope: Some(pb::emergency_revoke_request::Scope::Global(true)),
            incident_id: "inc-2".into(),
            reason: "root compromise".into(),
        }))
        .await
        .expect("global")
        .into_inner();
    assert_eq!(
        global.new_kids.len(),
        tessera_common::keys::KeySetName::ALL.len(),
        "every key set rotated, webhook (HMAC) included"
    );
    let response = introspect(&issuer, &globex.access_token).await;
    assert!(!response.active, "{response:?}");
    for key in keys_before {
        let state = issuer
            .app
            .keys
            .list(None)
            .await
            .expect("keys")
            .into_iter()
            .find(|k| k.kid == key.kid)
            .expect("still listed");
        assert!(state.revoked_at.is_some(), "{} revoked", key.kid);
    }
    // New tokens work after the emergency.
    let fresh = create_session(&issuer, "globex").await;
    assert!(introspect(&issuer, &fresh.access_token).await.active);
    // An incident id is scoped by what it revokes: acme's `inc-1` does not make globex's
    // emergency with the same id a replay that revokes nothing.
    let globex_incident = tokens
        .emergency_revoke(issuer.as_admin(pb::EmergencyRevokeRequest {
            scope: Some(pb::emergency_revoke_request::Scope::TenantId(
                "globex".into(),
            )),
            incident_id: "inc-1".into(),
            reason: "breach".into(),
        }))
        .await
        .expect("globex's own inc-1")
        .into_inner();
    assert!(
        !globex_incident.replayed && globex_incident.n_sessions_revoked == 1,
        "{globex_incident:?}"
    );
    assert!(!introspect(&issuer, &fresh.access_token).await.active);
    let status = tokens
        .emergency_revoke(issuer.as_admin(pb::EmergencyRevokeRequest {
            scope: Some(pb::emergency_revoke_request::Scope::Global(true)),
            incident_id: String::new(),
            reason: "x".into(),
        }))
        .await
        .expect_err("incident id required");
    assert_eq!(status.code(), Code::InvalidArgument);
    issuer.stop().await;
}

#[tokio::test]
async fn tenant_confined_callers_revoke_and_refresh_only_their_tenant() {
    let issuer = TestIssuer::start().await;
    let created = issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: "acme-app".into(),
            scopes: vec!["issue".into()],
            tenants: vec!["acme".into()],
        }))
        .await
        .expect("client")
        .into_inner();
    let globex = create_session(&issuer, "globex").await;
    let mut tokens = issuer.tokens().await;
    let status = tokens
        .refresh_session(crate::harness::with_credential(
            pb::RefreshSessionRequest {
                refresh_token: globex.refresh_token.clone(),
            },
            &created.credential,
        ))
        .await
        .expect_err("other tenant's session");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = tokens
        .revoke_tokens(crate::harness::with_credential(
            pb::RevokeTokensRequest {
                target: Some(pb::revoke_tokens_request::Target::All(true)),
                scope_tenant_id: String::new(),
                reason: "x".into(),
            },
            &created.credential,
        ))
        .await
        .expect_err("all needs admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = tokens
        .revoke_tokens(crate::harness::with_credential(
            pb::RevokeTokensRequest {
                target: Some(pb::revoke_tokens_request::Target::UserId("alice".into())),
                scope_tenant_id: "globex".into(),
                reason: "x".into(),
            },
            &created.credential,
        ))
        .await
        .expect_err("other tenant");
    assert_eq!(status.code(), Code::PermissionDenied);
    tokens
        .revoke_tokens(crate::harness::with_credential(
            pb::RevokeTokensRequest {
                target: Some(pb::revoke_tokens_request::Target::UserId("alice".into())),
                scope_tenant_id: "acme".into(),
                reason: "logout everywhere".into(),
            },
            &created.credential,
        ))
        .await
        .expect("own tenant");
    assert!(introspect(&issuer, &globex.access_token).await.active);
    issuer.stop().await;
}
