//! Attack cases: tenant isolation. Against the real binary, every issuer RPC is called
//! by a caller confined to tenant `acme` (an `admin` of acme, the strongest confined
//! caller, and an `issue` client of acme) against tenant `globex`'s data; each must be
//! refused with its typed status or answer without globex's data. Afterwards globex is
//! shown unchanged: its refresh token still rotates, its access token is still active,
//! its client still issues, and no key was touched. A real sidecar confined to acme keeps
//! its revision in step without receiving globex's entries.

use std::time::Duration;

use tessera_proto::v1 as pb;
use tessera_proto::v1::admin_service_client::AdminServiceClient;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::revoke_tokens_request::Target;
use tessera_proto::v1::token_service_client::TokenServiceClient;
use tessera_proto::v1::trust_bundle_service_client::TrustBundleServiceClient;
use tessera_proto::v1::trust_bundle_update::Kind;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::sidecar::harness::{self as sidecar_harness, Sidecar, assert_rejected};
use crate::support::grpc::{connect, runtime, with_bearer};
use crate::support::issuer::Issuer;
use crate::support::wait::{patience, poll_until};

/// The attacker's tenant.
const HOME: &str = "acme";
/// The victim tenant.
const VICTIM: &str = "globex";

/// Clients of every service over one channel.
struct Clients {
    keys: KeyServiceClient<Channel>,
    tokens: TokenServiceClient<Channel>,
    bundle: TrustBundleServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
}

impl Clients {
    fn new(channel: Channel) -> Clients {
        Clients {
            keys: KeyServiceClient::new(channel.clone()),
            tokens: TokenServiceClient::new(channel.clone()),
            bundle: TrustBundleServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel),
        }
    }
}

/// The victim's data, created by the unconfined admin.
struct Victim {
    session: pb::SessionTokens,
    /// A `globex` client, which the attacker must neither see nor disable.
    client_id: String,
    credential: String,
}

/// Asserts that `result` is refused with `code`.
fn refused<T: std::fmt::Debug>(case: &str, code: Code, result: Result<tonic::Response<T>, Status>) {
    match result {
        Ok(response) => panic!("{case}: expected {code:?}, got {:?}", response.get_ref()),
        Err(status) => assert_eq!(status.code(), code, "{case}: {status:?}"),
    }
}

/// Returns the answer of an RPC that must succeed.
fn answered<T>(case: &str, result: Result<tonic::Response<T>, Status>) -> T {
    result
        .unwrap_or_else(|status| panic!("{case}: expected an answer, got {status:?}"))
        .into_inner()
}

fn create_client(name: &str, scopes: &[&str], tenants: &[&str]) -> pb::CreateClientRequest {
    pb::CreateClientRequest {
        name: name.into(),
        scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
    }
}

fn login(tenant: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        subject: "alice".into(),
        tenant_id: tenant.into(),
        role: "staff".into(),
        ..Default::default()
    }
}

fn revoke(target: Target, scope_tenant_id: &str) -> pb::RevokeTokensRequest {
    pb::RevokeTokensRequest {
        target: Some(target),
        scope_tenant_id: scope_tenant_id.into(),
        reason: "tenant isolation attack".into(),
    }
}

fn emergency(scope: pb::emergency_revoke_request::Scope) -> pb::EmergencyRevokeRequest {
    pb::EmergencyRevokeRequest {
        incident_id: "attack-1".into(),
        reason: "tenant isolation attack".into(),
        scope: Some(scope),
    }
}

/// The revocation entries an update carries.
fn revocations(update: &pb::TrustBundleUpdate) -> Vec<pb::RevocationEntry> {
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

/// Sets up globex's data as the unconfined admin: a session, a client, and a
/// globex-scoped revocation entry (of another user, so the session stays live).
async fn victim(clients: &mut Clients, root: &str) -> Victim {
    let session = answered(
        "globex login",
        clients
            .tokens
            .create_session(with_bearer(login(VICTIM), root))
            .await,
    );
    let created = answered(
        "globex client",
        clients
            .admin
            .create_client(with_bearer(
                create_client("globex-api", &["issue"], &[VICTIM]),
                root,
            ))
            .await,
    );
    answered(
        "globex revocation entry",
        clients
            .tokens
            .revoke_tokens(with_bearer(
                revoke(Target::UserId("mallory".into()), VICTIM),
                root,
            ))
            .await,
    );
    Victim {
        session,
        client_id: created.client_id,
        credential: created.credential,
    }
}

/// KeyService as acme's admin: keys are public (listed, JWKS), but changing them spans
/// every tenant.
async fn key_service_cases(clients: &mut Clients, attacker: &str, kid: &str) {
    answered(
        "ListKeys (public keys)",
        clients
            .keys
            .list_keys(with_bearer(pb::ListKeysRequest::default(), attacker))
            .await,
    );
    answered(
        "GetJwks (public keys)",
        clients
            .keys
            .get_jwks(with_bearer(pb::GetJwksRequest {}, attacker))
            .await,
    );
    refused(
        "RotateKeys",
        Code::PermissionDenied,
        clients
            .keys
            .rotate_keys(with_bearer(
                pb::RotateKeysRequest {
                    key_set: "access".into(),
                    emergency: true,
                    reason: "tenant isolation attack".into(),
                    ..Default::default()
                },
                attacker,
            ))
            .await,
    );
    refused(
        "RevokeKey",
        Code::PermissionDenied,
        clients
            .keys
            .revoke_key(with_bearer(
                pb::RevokeKeyRequest {
                    kid: kid.into(),
                    reason: "tenant isolation attack".into(),
                },
                attacker,
            ))
            .await,
    );
}

/// TokenService as acme's admin against globex's session and tokens.
async fn token_service_cases(clients: &mut Clients, attacker: &str, victim: &Victim) {
    use pb::emergency_revoke_request::Scope as EmergencyScope;
    let session = &victim.session;
    let tokens = &mut clients.tokens;
    refused(
        "IssueAccessToken{tenant: globex}",
        Code::PermissionDenied,
        tokens
            .issue_access_token(with_bearer(
                pb::IssueAccessTokenRequest {
                    subject: "alice".into(),
                    tenant_id: VICTIM.into(),
                    role: "staff".into(),
                    ..Default::default()
                },
                attacker,
            ))
            .await,
    );
    for (case, token) in [
        (
            "IntrospectToken(globex access token)",
            &session.access_token,
        ),
        (
            "IntrospectToken(globex refresh token)",
            &session.refresh_token,
        ),
    ] {
        let introspection = answered(
            case,
            tokens
                .introspect_token(with_bearer(
                    pb::IntrospectTokenRequest {
                        token: token.clone(),
                    },
                    attacker,
                ))
                .await,
        );
        assert!(
            !introspection.active
                && introspection.reason == "not_active"
                && introspection.claims.is_none()
                && introspection.claims_json.is_empty()
                && introspection.refresh.is_none(),
            "{case}: {introspection:?}"
        );
    }
    refused(
        "CreateSession{tenant: globex}",
        Code::PermissionDenied,
        tokens
            .create_session(with_bearer(login(VICTIM), attacker))
            .await,
    );
    refused(
        "RefreshSession(globex refresh token)",
        Code::PermissionDenied,
        tokens
            .refresh_session(with_bearer(
                pb::RefreshSessionRequest {
                    refresh_token: session.refresh_token.clone(),
                },
                attacker,
            ))
            .await,
    );
    let revocations: [(&str, Code, pb::RevokeTokensRequest); 4] = [
        (
            "RevokeTokens{session_id: globex's, scope: globex}",
            Code::PermissionDenied,
            revoke(Target::SessionId(session.session_id.clone()), VICTIM),
        ),
        (
            "RevokeTokens{session_id: globex's, no scope}",
            Code::InvalidArgument,
            revoke(Target::SessionId(session.session_id.clone()), ""),
        ),
        (
            "RevokeTokens{tenant_id: globex}",
            Code::PermissionDenied,
            revoke(Target::TenantId(VICTIM.into()), ""),
        ),
        (
            "RevokeTokens{all}",
            Code::PermissionDenied,
            revoke(Target::All(true), ""),
        ),
    ];
    for (case, code, request) in revocations {
        refused(
            case,
            code,
            tokens.revoke_tokens(with_bearer(request, attacker)).await,
        );
    }
    // A jti, user, session or family id named under acme is an acme entry: accepted,
    // ending no session, and globex's token with that jti, its user of that name, its
    // session and its family are untouched (checked afterwards).
    for (case, request) in [
        (
            "RevokeTokens{session_id: globex's, scope: acme}",
            revoke(Target::SessionId(session.session_id.clone()), HOME),
        ),
        (
            "RevokeTokens{family_id: globex's, scope: acme}",
            revoke(Target::FamilyId(session.family_id.clone()), HOME),
        ),
        (
            "RevokeTokens{jti: globex's, scope: acme}",
            revoke(Target::Jti(session.access_jti.clone()), HOME),
        ),
        (
            "RevokeTokens{user_id: alice, scope: acme}",
            revoke(Target::UserId("alice".into()), HOME),
        ),
    ] {
        let answer = answered(
            case,
            tokens.revoke_tokens(with_bearer(request, attacker)).await,
        );
        assert_eq!(answer.n_sessions_revoked, 0, "{case}: {answer:?}");
    }
    refused(
        "EmergencyRevoke{tenant_id: globex}",
        Code::PermissionDenied,
        tokens
            .emergency_revoke(with_bearer(
                emergency(EmergencyScope::TenantId(VICTIM.into())),
                attacker,
            ))
            .await,
    );
    refused(
        "EmergencyRevoke{global}",
        Code::PermissionDenied,
        tokens
            .emergency_revoke(with_bearer(
                emergency(EmergencyScope::Global(true)),
                attacker,
            ))
            .await,
    );
}

/// TrustBundleService as acme's admin: the snapshot carries keys but no globex entry.
async fn bundle_service_cases(clients: &mut Clients, attacker: &str) {
    let mut stream = answered(
        "WatchTrustBundle",
        clients
            .bundle
            .watch_trust_bundle(with_bearer(
                pb::WatchTrustBundleRequest::default(),
                attacker,
            ))
            .await,
    );
    let snapshot = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a snapshot within 10 s")
        .expect("stream ok")
        .expect("stream open");
    let Some(Kind::Snapshot(view)) = &snapshot.kind else {
        panic!("WatchTrustBundle: expected a snapshot first, got {snapshot:?}");
    };
    assert!(!view.keys.is_empty(), "keys are public and stay visible");
    let entries = revocations(&snapshot);
    assert!(
        entries.iter().all(|entry| entry.tenant_id != VICTIM),
        "WatchTrustBundle leaked globex entries: {entries:?}"
    );
    assert!(
        entries.iter().any(|entry| entry.tenant_id == HOME),
        "acme's own entries are visible: {entries:?}"
    );
}

/// AdminService as acme's admin.
async fn admin_service_cases(clients: &mut Clients, attacker: &str, victim: &Victim) {
    let admin = &mut clients.admin;
    for (case, tenants) in [
        ("CreateClient{tenants: [] (unconfined)}", &[][..]),
        ("CreateClient{tenants: [globex]}", &[VICTIM][..]),
        ("CreateClient{tenants: [acme, globex]}", &[HOME, VICTIM][..]),
    ] {
        refused(
            case,
            Code::PermissionDenied,
            admin
                .create_client(with_bearer(
                    create_client("escalation", &["admin"], tenants),
                    attacker,
                ))
                .await,
        );
    }
    let listed = answered(
        "ListClients",
        admin
            .list_clients(with_bearer(pb::ListClientsRequest {}, attacker))
            .await,
    );
    assert!(
        listed
            .clients
            .iter()
            .all(|client| !client.tenants.is_empty()
                && client.tenants.iter().all(|tenant| tenant == HOME)),
        "ListClients shows clients beyond acme: {:?}",
        listed.clients
    );
    refused(
        "DisableClient(globex's client)",
        Code::NotFound,
        admin
            .disable_client(with_bearer(
                pb::DisableClientRequest {
                    client_id: victim.client_id.clone(),
                    reason: "tenant isolation attack".into(),
                },
                attacker,
            ))
            .await,
    );
    refused(
        "ListAuditEvents",
        Code::PermissionDenied,
        admin
            .list_audit_events(with_bearer(pb::ListAuditEventsRequest::default(), attacker))
            .await,
    );
    refused(
        "VerifyAuditLog",
        Code::PermissionDenied,
        admin
            .verify_audit_log(with_bearer(pb::VerifyAuditLogRequest {}, attacker))
            .await,
    );
}

/// Globex is as it was: its access token active, its refresh token rotates, its client
/// issues, and no key was revoked or rotated.
async fn assert_victim_unchanged(
    clients: &mut Clients,
    root: &str,
    victim: &Victim,
    kids: &[String],
) {
    let introspection = answered(
        "globex access token, as the platform admin",
        clients
            .tokens
            .introspect_token(with_bearer(
                pb::IntrospectTokenRequest {
                    token: victim.session.access_token.clone(),
                },
                root,
            ))
            .await,
    );
    assert!(introspection.active, "globex's token: {introspection:?}");
    answered(
        "globex refresh after the attacks",
        clients
            .tokens
            .refresh_session(with_bearer(
                pb::RefreshSessionRequest {
                    refresh_token: victim.session.refresh_token.clone(),
                },
                root,
            ))
            .await,
    );
    answered(
        "globex's client still issues",
        clients
            .tokens
            .issue_access_token(with_bearer(
                pb::IssueAccessTokenRequest {
                    subject: "alice".into(),
                    tenant_id: VICTIM.into(),
                    role: "staff".into(),
                    ..Default::default()
                },
                &victim.credential,
            ))
            .await,
    );
    let keys = answered(
        "ListKeys as the platform admin",
        clients
            .keys
            .list_keys(with_bearer(pb::ListKeysRequest::default(), root))
            .await,
    );
    let now: Vec<String> = keys.keys.iter().map(|key| key.kid.clone()).collect();
    assert_eq!(now, kids, "the key set changed");
    assert!(
        keys.keys.iter().all(|key| key.revoked_at.is_none()),
        "a key was revoked: {:?}",
        keys.keys
    );
}

#[test]
fn an_admin_confined_to_one_tenant_gets_nothing_of_another_from_any_rpc() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let issuer = Issuer::start(root_dir.path());
    let root = issuer.admin_token();
    runtime().block_on(async {
        let mut clients = Clients::new(connect(issuer.grpc_addr).await);
        let victim = victim(&mut clients, &root).await;
        let attacker = answered(
            "acme admin",
            clients
                .admin
                .create_client(with_bearer(
                    create_client("acme-admin", &["admin"], &[HOME]),
                    &root,
                ))
                .await,
        )
        .credential;
        // An acme entry, so that the attacker's snapshot has something of its own.
        answered(
            "acme revocation entry",
            clients
                .tokens
                .revoke_tokens(with_bearer(
                    revoke(Target::UserId("mallory".into()), HOME),
                    &root,
                ))
                .await,
        );
        let kids: Vec<String> = answered(
            "ListKeys as the platform admin",
            clients
                .keys
                .list_keys(with_bearer(pb::ListKeysRequest::default(), &root))
                .await,
        )
        .keys
        .into_iter()
        .map(|key| key.kid)
        .collect();

        key_service_cases(&mut clients, &attacker, &kids[0]).await;
        token_service_cases(&mut clients, &attacker, &victim).await;
        bundle_service_cases(&mut clients, &attacker).await;
        admin_service_cases(&mut clients, &attacker, &victim).await;
        assert_victim_unchanged(&mut clients, &root, &victim, &kids).await;

        // The refused emergency did not claim the incident id for anyone else.
        let handled = answered(
            "the platform admin's emergency with the same incident id",
            clients
                .tokens
                .emergency_revoke(with_bearer(
                    emergency(pb::emergency_revoke_request::Scope::TenantId(HOME.into())),
                    &root,
                ))
                .await,
        );
        assert!(!handled.replayed, "{handled:?}");
    });
}

#[test]
fn an_issue_client_confined_to_one_tenant_cannot_revoke_another_tenants_session_or_family() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let issuer = Issuer::start(root_dir.path());
    let root = issuer.admin_token();
    runtime().block_on(async {
        let mut clients = Clients::new(connect(issuer.grpc_addr).await);
        let victim = victim(&mut clients, &root).await;
        let attacker = answered(
            "acme issue client",
            clients
                .admin
                .create_client(with_bearer(
                    create_client("acme-api", &["issue"], &[HOME]),
                    &root,
                ))
                .await,
        )
        .credential;
        let session = &victim.session;
        // Another tenant's id and an id that exists nowhere get the same answer (no
        // session ended), so existence does not leak, and nothing of globex changes.
        for (case, target) in [
            (
                "session_id of globex",
                Target::SessionId(session.session_id.clone()),
            ),
            (
                "session_id that exists nowhere",
                Target::SessionId("nope".into()),
            ),
            (
                "family_id of globex",
                Target::FamilyId(session.family_id.clone()),
            ),
            (
                "family_id that exists nowhere",
                Target::FamilyId("nope".into()),
            ),
        ] {
            let answer = answered(
                case,
                clients
                    .tokens
                    .revoke_tokens(with_bearer(revoke(target, HOME), &attacker))
                    .await,
            );
            assert_eq!(answer.n_sessions_revoked, 0, "{case}: {answer:?}");
        }
        refused(
            "RevokeTokens{session_id of globex, scope: globex}",
            Code::PermissionDenied,
            clients
                .tokens
                .revoke_tokens(with_bearer(
                    revoke(Target::SessionId(session.session_id.clone()), VICTIM),
                    &attacker,
                ))
                .await,
        );
        answered(
            "globex refresh after the attacks",
            clients
                .tokens
                .refresh_session(with_bearer(
                    pb::RefreshSessionRequest {
                        refresh_token: session.refresh_token.clone(),
                    },
                    &root,
                ))
                .await,
        );
    });
}

/// A real sidecar subscribed with a credential confined to acme: another tenant's
/// revocation reaches it only as an empty delta, so its revision still catches up with the
/// issuer's, while acme's own revocation takes effect as usual.
#[test]
fn a_sidecar_confined_to_one_tenant_keeps_its_revision_without_seeing_another_tenant() {
    let root_dir = tempfile::tempdir().expect("tempdir");
    let issuer = Issuer::start(root_dir.path());
    let root = issuer.admin_token();
    let runtime = runtime();
    let reader = runtime.block_on(async {
        let mut clients = Clients::new(connect(issuer.grpc_addr).await);
        answered(
            "acme bundle reader",
            clients
                .admin
                .create_client(with_bearer(
                    create_client("acme-sidecar", &["bundle:read"], &[HOME]),
                    &root,
                ))
                .await,
        )
        .credential
    });
    let credential_file = root_dir.path().join("acme-sidecar.credential");
    write_private(&credential_file, &reader);
    let sidecar = Sidecar::builder(
        root_dir.path(),
        "acme-sidecar",
        &issuer.grpc_url(),
        &credential_file,
    )
    .start();
    let client = sidecar.client();
    // `issue` mints for acme, the sidecar harness's tenant.
    assert_eq!(sidecar_harness::TENANT, HOME);
    let token = sidecar_harness::issue(&issuer, "alice", 600, &[]);
    assert!(client.validate(&token.token).valid, "acme token validates");

    let revise = |tenant: &str| {
        runtime.block_on(async {
            let mut clients = Clients::new(connect(issuer.grpc_addr).await);
            answered(
                "revoke alice",
                clients
                    .tokens
                    .revoke_tokens(with_bearer(
                        revoke(Target::UserId("alice".into()), tenant),
                        &root,
                    ))
                    .await,
            )
            .revision
        })
    };
    let hidden = revise(VICTIM);
    let caught_up = poll_until(
        patience(Duration::from_secs(10)),
        Duration::from_millis(20),
        || (sidecar.metric(sidecar_harness::REVISION) >= hidden as f64).then_some(()),
    );
    assert!(
        caught_up.is_some(),
        "the sidecar stayed at revision {} behind the hidden event {hidden}",
        sidecar.metric(sidecar_harness::REVISION)
    );
    assert!(
        client.validate(&token.token).valid,
        "globex's revocation of its alice does not touch acme's alice"
    );

    let shown = revise(HOME);
    let outcome = client.poll(
        &token.token,
        patience(Duration::from_secs(10)),
        Duration::from_millis(20),
        |response| !response.valid,
    );
    let (_, verdict, _) = outcome.unwrap_or_else(|last| panic!("still accepted: {last:?}"));
    assert_rejected(&verdict, pb::Reason::Revoked, "acme's own revocation");
    assert!(sidecar.metric(sidecar_harness::REVISION) >= shown as f64);
}

/// Writes `credential` to a new file readable by its owner only.
fn write_private(path: &std::path::Path, credential: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
    writeln!(file, "{credential}").expect("write the credential");
}
