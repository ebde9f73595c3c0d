//! Tenant confinement over gRPC, in-process: a caller confined to `acme` — whatever its
//! scope, `admin` included — cannot revoke, read or learn anything of `globex`, cannot
//! touch what every tenant shares (keys, global revocation, the audit log), and cannot
//! mint a credential stronger than its own; a confined bundle reader gets only its
//! tenant's revocation entries, with its revision still advancing past the others.

use std::time::Duration;

use tessera_proto::v1 as pb;
use tessera_proto::v1::revoke_tokens_request::Target;
use tessera_proto::v1::trust_bundle_update::Kind;
use tonic::{Code, Status};

use crate::harness::{TestIssuer, with_credential};

const HOME: &str = "acme";
const VICTIM: &str = "globex";

/// Creates a client with `scopes` confined to `tenants`; returns (client id, credential).
async fn client(issuer: &TestIssuer, scopes: &[&str], tenants: &[&str]) -> (String, String) {
    let created = issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: format!("{}-{}", scopes.join("-"), tenants.join("-")).replace(':', "-"),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
        }))
        .await
        .expect("create client")
        .into_inner();
    (created.client_id, created.credential)
}

/// Logs `alice` into `tenant` as the unconfined admin.
async fn login(issuer: &TestIssuer, tenant: &str) -> pb::SessionTokens {
    issuer
        .tokens()
        .await
        .create_session(issuer.as_admin(pb::CreateSessionRequest {
            subject: "alice".into(),
            tenant_id: tenant.into(),
            role: "staff".into(),
            ..Default::default()
        }))
        .await
        .expect("create session")
        .into_inner()
}

async fn revoke(
    issuer: &TestIssuer,
    credential: &str,
    target: Target,
    scope_tenant_id: &str,
) -> Result<pb::RevokeTokensResponse, Status> {
    issuer
        .tokens()
        .await
        .revoke_tokens(with_credential(
            pb::RevokeTokensRequest {
                target: Some(target),
                scope_tenant_id: scope_tenant_id.into(),
                reason: "tenancy test".into(),
            },
            credential,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts that `session` is untouched: its refresh token still rotates (as the admin)
/// and its access token still introspects active. Returns the rotated tokens.
async fn assert_untouched(issuer: &TestIssuer, session: &pb::SessionTokens) -> pb::SessionTokens {
    let introspection = issuer
        .tokens()
        .await
        .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest {
            token: session.access_token.clone(),
        }))
        .await
        .expect("introspect")
        .into_inner();
    assert!(introspection.active, "{introspection:?}");
    issuer
        .tokens()
        .await
        .refresh_session(issuer.as_admin(pb::RefreshSessionRequest {
            refresh_token: session.refresh_token.clone(),
        }))
        .await
        .expect("the victim's refresh still works")
        .into_inner()
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) -> Status {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    status
}

#[tokio::test]
async fn confined_issue_client_revoking_another_tenants_session_or_family_ends_nothing_of_it() {
    let issuer = TestIssuer::start().await;
    let (_, issue_acme) = client(&issuer, &["issue"], &[HOME]).await;
    let victim = login(&issuer, VICTIM).await;

    // Naming the victim's tenant outright is a plain tenant refusal.
    assert_code(
        revoke(
            &issuer,
            &issue_acme,
            Target::SessionId(victim.session_id.clone()),
            VICTIM,
        )
        .await,
        Code::PermissionDenied,
        "scope tenant globex",
    );
    // Named under the caller's own tenant, another tenant's session or family is treated
    // exactly like an id that exists nowhere: the entry is filed under acme, no session
    // ends, and the answer is the same, so existence does not leak.
    for (what, target) in [
        (
            "globex session named under acme",
            Target::SessionId(victim.session_id.clone()),
        ),
        ("unknown session", Target::SessionId("no-such".into())),
        (
            "globex family named under acme",
            Target::FamilyId(victim.family_id.clone()),
        ),
        ("unknown family", Target::FamilyId("no-such".into())),
    ] {
        let answer = revoke(&issuer, &issue_acme, target, HOME)
            .await
            .expect(what);
        assert_eq!(answer.n_sessions_revoked, 0, "{what}: {answer:?}");
    }
    assert_untouched(&issuer, &victim).await;
    assert!(
        issuer
            .app
            .hub
            .current()
            .revocations
            .entries()
            .all(|entry| entry.tenant_id.as_deref() != Some(VICTIM)),
        "no entry may name globex"
    );

    // The client's own tenant still works.
    let own = login(&issuer, HOME).await;
    let revoked = revoke(
        &issuer,
        &issue_acme,
        Target::SessionId(own.session_id.clone()),
        HOME,
    )
    .await
    .expect("own session");
    assert_eq!(revoked.n_sessions_revoked, 1);
    issuer.stop().await;
}

#[tokio::test]
async fn user_and_jti_revocations_by_a_confined_client_stay_in_its_tenant() {
    let issuer = TestIssuer::start().await;
    let (_, issue_acme) = client(&issuer, &["issue"], &[HOME]).await;
    let victim = login(&issuer, VICTIM).await;
    let own = login(&issuer, HOME).await;

    revoke(&issuer, &issue_acme, Target::UserId("alice".into()), HOME)
        .await
        .expect("revoke alice in acme");
    revoke(
        &issuer,
        &issue_acme,
        Target::Jti(victim.access_jti.clone()),
        HOME,
    )
    .await
    .expect("a jti is scoped, whatever tenant minted it");
    // The same user id in globex, and globex's jti, are untouched.
    assert_untouched(&issuer, &victim).await;
    let status = issuer
        .tokens()
        .await
        .refresh_session(issuer.as_admin(pb::RefreshSessionRequest {
            refresh_token: own.refresh_token.clone(),
        }))
        .await
        .expect_err("acme's alice is logged out");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    issuer.stop().await;
}

#[tokio::test]
async fn unconfined_admin_revokes_a_session_without_naming_its_tenant() {
    let issuer = TestIssuer::start().await;
    let victim = login(&issuer, VICTIM).await;
    let revoked = revoke(
        &issuer,
        &issuer.admin_token,
        Target::SessionId(victim.session_id.clone()),
        "",
    )
    .await
    .expect("platform admin");
    assert_eq!(revoked.n_sessions_revoked, 1);
    let bundle = issuer.app.hub.current();
    let entry = bundle
        .revocations
        .entries()
        .find(|entry| entry.value == victim.session_id)
        .expect("session entry");
    assert_eq!(
        entry.tenant_id.as_deref(),
        Some(VICTIM),
        "the entry carries the session's own tenant"
    );
    let family = login(&issuer, VICTIM).await;
    revoke(
        &issuer,
        &issuer.admin_token,
        Target::FamilyId(family.family_id.clone()),
        "",
    )
    .await
    .expect("platform admin, family");
    issuer.stop().await;
}

#[tokio::test]
async fn confined_admin_cannot_reach_another_tenant_or_the_platform() {
    let issuer = TestIssuer::start().await;
    let (admin_id, admin_acme) = client(&issuer, &["admin"], &[HOME]).await;
    let victim = login(&issuer, VICTIM).await;
    let kid = issuer
        .keys()
        .await
        .list_keys(issuer.as_admin(pb::ListKeysRequest::default()))
        .await
        .expect("list keys")
        .into_inner()
        .keys[0]
        .kid
        .clone();

    assert_code(
        revoke(&issuer, &admin_acme, Target::TenantId(VICTIM.into()), "").await,
        Code::PermissionDenied,
        "RevokeTokens{tenant_id: globex}",
    );
    assert_code(
        revoke(&issuer, &admin_acme, Target::All(true), "").await,
        Code::PermissionDenied,
        "RevokeTokens{all}",
    );
    assert_code(
        revoke(
            &issuer,
            &admin_acme,
            Target::SessionId(victim.session_id.clone()),
            "",
        )
        .await,
        Code::InvalidArgument,
        "a confined admin must name its tenant",
    );
    let emergency = |scope| pb::EmergencyRevokeRequest {
        incident_id: "inc-1".into(),
        reason: "tenancy test".into(),
        scope: Some(scope),
    };
    use pb::emergency_revoke_request::Scope as EmergencyScope;
    let mut tokens = issuer.tokens().await;
    assert_code(
        tokens
            .emergency_revoke(with_credential(
                emergency(EmergencyScope::TenantId(VICTIM.into())),
                &admin_acme,
            ))
            .await,
        Code::PermissionDenied,
        "EmergencyRevoke{tenant: globex}",
    );
    assert_code(
        tokens
            .emergency_revoke(with_credential(
                emergency(EmergencyScope::Global(true)),
                &admin_acme,
            ))
            .await,
        Code::PermissionDenied,
        "EmergencyRevoke{global}",
    );
    let mut keys = issuer.keys().await;
    assert_code(
        keys.rotate_keys(with_credential(
            pb::RotateKeysRequest {
                key_set: "access".into(),
                reason: "tenancy test".into(),
                ..Default::default()
            },
            &admin_acme,
        ))
        .await,
        Code::PermissionDenied,
        "RotateKeys",
    );
    assert_code(
        keys.revoke_key(with_credential(
            pb::RevokeKeyRequest {
                kid: kid.clone(),
                reason: "tenancy test".into(),
            },
            &admin_acme,
        ))
        .await,
        Code::PermissionDenied,
        "RevokeKey",
    );
    keys.list_keys(with_credential(pb::ListKeysRequest::default(), &admin_acme))
        .await
        .expect("keys are public: a confined admin may list them");
    let mut admin = issuer.admin().await;
    assert_code(
        admin
            .list_audit_events(with_credential(
                pb::ListAuditEventsRequest::default(),
                &admin_acme,
            ))
            .await,
        Code::PermissionDenied,
        "ListAuditEvents",
    );
    assert_code(
        admin
            .verify_audit_log(with_credential(pb::VerifyAuditLogRequest {}, &admin_acme))
            .await,
        Code::PermissionDenied,
        "VerifyAuditLog",
    );

    // Nothing changed: globex's session lives, the key is not revoked, and the refused
    // emergency did not burn the incident id.
    assert_untouched(&issuer, &victim).await;
    let key = issuer
        .keys()
        .await
        .list_keys(issuer.as_admin(pb::ListKeysRequest::default()))
        .await
        .expect("list keys")
        .into_inner()
        .keys
        .into_iter()
        .find(|key| key.kid == kid)
        .expect("key still listed");
    assert!(key.revoked_at.is_none(), "{key:?}");
    let handled = tokens
        .emergency_revoke(issuer.as_admin(emergency(EmergencyScope::TenantId(VICTIM.into()))))
        .await
        .expect("the platform admin's emergency")
        .into_inner();
    assert!(!handled.replayed, "the refused call claimed the incident");

    // Every refusal is audited under the confined admin's id.
    let events = admin
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest {
            limit: 200,
            before_seq: 0,
        }))
        .await
        .expect("audit")
        .into_inner()
        .events;
    for rpc in [
        "TokenService/RevokeTokens",
        "TokenService/EmergencyRevoke",
        "KeyService/RotateKeys",
        "KeyService/RevokeKey",
        "AdminService/ListAuditEvents",
        "AdminService/VerifyAuditLog",
    ] {
        assert!(
            events.iter().any(|event| event.action == "auth.denied"
                && event.actor == admin_id
                && event.target == rpc),
            "no audited denial of {rpc}"
        );
    }
    issuer.stop().await;
}

#[tokio::test]
async fn confined_admin_cannot_mint_a_client_beyond_its_own_tenants() {
    let issuer = TestIssuer::start().await;
    let (admin_id, admin_acme) = client(&issuer, &["admin"], &[HOME, "initech"]).await;
    let mut admin = issuer.admin().await;
    let create = |tenants: &[&str]| {
        with_credential(
            pb::CreateClientRequest {
                name: "escalation".into(),
                scopes: vec!["admin".into()],
                tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
            },
            &admin_acme,
        )
    };
    for tenants in [&[][..], &[VICTIM], &[HOME, VICTIM]] {
        assert_code(
            admin.create_client(create(tenants)).await,
            Code::PermissionDenied,
            &format!("client on {tenants:?}"),
        );
    }
    let created = admin
        .create_client(create(&[HOME]))
        .await
        .expect("a client within the caller's tenants")
        .into_inner();
    // The new admin really is confined: it cannot act on globex either.
    assert_code(
        issuer
            .tokens()
            .await
            .issue_access_token(with_credential(
                crate::harness::issue_request(VICTIM),
                &created.credential,
            ))
            .await,
        Code::PermissionDenied,
        "the minted client on globex",
    );
    let events = admin
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest {
            limit: 100,
            before_seq: 0,
        }))
        .await
        .expect("audit")
        .into_inner()
        .events;
    assert!(
        events.iter().any(|event| event.action == "auth.denied"
            && event.actor == admin_id
            && event.target == "AdminService/CreateClient"),
        "the escalation attempt is audited"
    );
    issuer.stop().await;
}

#[tokio::test]
async fn confined_admin_lists_and_disables_only_clients_within_its_tenants() {
    let issuer = TestIssuer::start().await;
    let (admin_id, admin_acme) = client(&issuer, &["admin"], &[HOME]).await;
    let (own_id, own_credential) = client(&issuer, &["issue"], &[HOME]).await;
    let (victim_id, victim_credential) = client(&issuer, &["issue"], &[VICTIM]).await;
    let (spanning_id, _) = client(&issuer, &["issue"], &[HOME, VICTIM]).await;
    let mut admin = issuer.admin().await;
    let everyone = admin
        .list_clients(issuer.as_admin(pb::ListClientsRequest {}))
        .await
        .expect("list")
        .into_inner()
        .clients;
    let root_id = everyone
        .iter()
        .find(|client| client.tenants.is_empty())
        .expect("the bootstrap admin")
        .client_id
        .clone();

    let mut listed: Vec<String> = admin
        .list_clients(with_credential(pb::ListClientsRequest {}, &admin_acme))
        .await
        .expect("list as acme admin")
        .into_inner()
        .clients
        .into_iter()
        .map(|client| client.client_id)
        .collect();
    listed.sort();
    let mut expected = vec![admin_id.clone(), own_id.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    let disable = |client_id: &str| {
        with_credential(
            pb::DisableClientRequest {
                client_id: client_id.to_owned(),
                reason: "tenancy test".into(),
            },
            &admin_acme,
        )
    };
    for other in [&victim_id, &spanning_id, &root_id] {
        assert_code(
            admin.disable_client(disable(other)).await,
            Code::NotFound,
            &format!("disable {other}"),
        );
    }
    admin
        .disable_client(disable(&own_id))
        .await
        .expect("disable a client of acme");
    let mut tokens = issuer.tokens().await;
    tokens
        .issue_access_token(with_credential(
            crate::harness::issue_request(VICTIM),
            &victim_credential,
        ))
        .await
        .expect("globex's client still works");
    assert_code(
        tokens
            .issue_access_token(with_credential(
                crate::harness::issue_request(HOME),
                &own_credential,
            ))
            .await,
        Code::Unauthenticated,
        "the disabled acme client",
    );
    issuer.stop().await;
}

/// Reads updates until `wanted` holds (5 s at most); returns it.
async fn next_matching(
    stream: &mut tonic::Streaming<pb::TrustBundleUpdate>,
    wanted: impl Fn(&pb::TrustBundleUpdate) -> bool,
) -> pb::TrustBundleUpdate {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let update = stream.message().await.expect("ok").expect("open");
            if wanted(&update) {
                return update;
            }
        }
    })
    .await
    .expect("update within 5 s")
}

fn revocations_of(update: &pb::TrustBundleUpdate) -> Vec<pb::RevocationEntry> {
    match &update.kind {
        Some(Kind::Snapshot(snapshot)) => snapshot.revocations.clone(),
        Some(Kind::Delta(delta)) => delta
            .changes
            .iter()
            .filter_map(|change| match &change.change {
                Some(pb::bundle_change::Change::RevocationAdded(entry)) => Some(entry.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn confined_bundle_reader_receives_only_its_tenants_revocations() {
    let issuer = TestIssuer::start().await;
    let (_, reader_acme) = client(&issuer, &["bundle:read"], &[HOME]).await;
    let admin = issuer.admin_token.clone();
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(with_credential(
            pb::WatchTrustBundleRequest::default(),
            &reader_acme,
        ))
        .await
        .expect("watch")
        .into_inner();
    let snapshot = next_matching(&mut stream, |update| {
        matches!(update.kind, Some(Kind::Snapshot(_)))
    })
    .await;
    let Some(Kind::Snapshot(first)) = &snapshot.kind else {
        unreachable!("matched a snapshot")
    };
    assert!(!first.keys.is_empty(), "keys are public and stay visible");

    let hidden = revoke(&issuer, &admin, Target::UserId("alice".into()), VICTIM)
        .await
        .expect("globex revocation");
    let update = next_matching(&mut stream, |update| {
        matches!(update.kind, Some(Kind::Delta(_)))
    })
    .await;
    assert_eq!(
        update.revision, hidden.revision,
        "the hidden event still advances the revision"
    );
    assert!(revocations_of(&update).is_empty(), "{update:?}");

    let shown = revoke(&issuer, &admin, Target::UserId("alice".into()), HOME)
        .await
        .expect("acme revocation");
    let platform_wide = revoke(&issuer, &admin, Target::Jti("jti-everywhere".into()), "")
        .await
        .expect("tenant-less revocation");
    // One delta per event: acme's entry, then the tenant-less one.
    for (revoked, tenant) in [(&shown, HOME), (&platform_wide, "")] {
        let update = next_matching(&mut stream, |update| {
            matches!(update.kind, Some(Kind::Delta(_)))
        })
        .await;
        assert_eq!(update.revision, revoked.revision);
        let entries = revocations_of(&update);
        assert_eq!(entries.len(), 1, "{update:?}");
        assert_eq!(entries[0].tenant_id, tenant);
    }

    // A new subscription's snapshot carries the same view.
    let mut resumed = issuer
        .bundle()
        .await
        .watch_trust_bundle(with_credential(
            pb::WatchTrustBundleRequest::default(),
            &reader_acme,
        ))
        .await
        .expect("watch again")
        .into_inner();
    let snapshot = next_matching(&mut resumed, |update| {
        matches!(update.kind, Some(Kind::Snapshot(_)))
    })
    .await;
    let tenants: Vec<String> = revocations_of(&snapshot)
        .into_iter()
        .map(|entry| entry.tenant_id)
        .collect();
    assert_eq!(snapshot.revision, platform_wide.revision);
    assert!(tenants.contains(&HOME.to_owned()), "{tenants:?}");
    assert!(tenants.contains(&String::new()), "{tenants:?}");
    assert!(!tenants.contains(&VICTIM.to_owned()), "{tenants:?}");

    // Resuming from before the hidden event sends deltas without it, ending at the head.
    let mut from_before = issuer
        .bundle()
        .await
        .watch_trust_bundle(with_credential(
            pb::WatchTrustBundleRequest {
                since_revision: hidden.revision - 1,
                subscriber_id: String::new(),
                credential_changes: false,
                secret_changes: false,
            },
            &reader_acme,
        ))
        .await
        .expect("watch from a revision")
        .into_inner();
    let deltas = next_matching(&mut from_before, |_| true).await;
    assert_eq!(deltas.revision, platform_wide.revision);
    assert!(
        revocations_of(&deltas)
            .iter()
            .all(|entry| entry.tenant_id != VICTIM),
        "{deltas:?}"
    );
    issuer.stop().await;
}

#[tokio::test]
async fn a_caller_chosen_session_id_without_a_record_is_revoked_within_the_callers_tenant() {
    let issuer = TestIssuer::start().await;
    let (_, issue_acme) = client(&issuer, &["issue"], &[HOME]).await;
    let mint = |tenant: &str| pb::IssueAccessTokenRequest {
        subject: "alice".into(),
        tenant_id: tenant.into(),
        role: "member".into(),
        session_id: "app-session-7".into(),
        ..Default::default()
    };
    let own = issuer
        .tokens()
        .await
        .issue_access_token(with_credential(mint(HOME), &issue_acme))
        .await
        .expect("acme token")
        .into_inner();
    let other = issuer
        .tokens()
        .await
        .issue_access_token(issuer.as_admin(mint(VICTIM)))
        .await
        .expect("globex token with the same session id")
        .into_inner();

    let answer = revoke(
        &issuer,
        &issue_acme,
        Target::SessionId("app-session-7".into()),
        HOME,
    )
    .await
    .expect("revoke the app's own session id");
    assert_eq!(answer.n_sessions_revoked, 0, "no session record to end");
    issuer.app.hub.catch_up().await.expect("catch up");
    let introspect = |token: String| async {
        issuer
            .tokens()
            .await
            .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest { token }))
            .await
            .expect("introspect")
            .into_inner()
    };
    let own = introspect(own.token).await;
    assert!(!own.active, "{own:?}");
    assert_eq!(own.reason, "revoked");
    let other = introspect(other.token).await;
    assert!(
        other.active,
        "globex's token with the same session id: {other:?}"
    );
    issuer.stop().await;
}
