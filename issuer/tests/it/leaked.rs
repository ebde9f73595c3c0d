//! `AdminService/RevokeLeakedCredentials`, in-process: a presented caller credential
//! disables its client and a refresh token revokes its family (then neither works), a
//! second presentation says `already_dead`; a tenant API key is revoked; a forged checksum
//! or the right id with the wrong secret is `unknown` and revokes nothing; service and
//! webhook tokens (`tbs_`, `tbw_`) are revoked like API keys; a confined admin cannot
//! revoke (nor learn of) another tenant's
//! credentials; oversized requests and non-admin callers are refused; every revocation is
//! audited without the secret.

use tessera_common::credential::{Credential, CredentialKind, random_base62};
use tessera_proto::v1 as pb;
use tessera_proto::v1::LeakedCredentialOutcome as Outcome;
use tonic::{Code, Status};

use crate::harness::{TestIssuer, issue_request, with_credential};

/// Creates a client with `scopes` confined to `tenants`; returns its credential.
async fn client(issuer: &TestIssuer, name: &str, scopes: &[&str], tenants: &[&str]) -> String {
    issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: name.to_owned(),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            tenants: tenants.iter().map(|tenant| (*tenant).to_owned()).collect(),
        }))
        .await
        .expect("create client")
        .into_inner()
        .credential
}

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

async fn revoke_leaked(
    issuer: &TestIssuer,
    caller: &str,
    credentials: &[&str],
) -> Result<Vec<Outcome>, Status> {
    let answer = issuer
        .admin()
        .await
        .revoke_leaked_credentials(with_credential(
            pb::RevokeLeakedCredentialsRequest {
                credentials: credentials.iter().map(|text| (*text).to_owned()).collect(),
                reason: "found in a public repository".into(),
            },
            caller,
        ))
        .await?
        .into_inner();
    Ok(answer
        .outcomes
        .into_iter()
        .map(|outcome| Outcome::try_from(outcome).expect("a known outcome"))
        .collect())
}

async fn authenticates(issuer: &TestIssuer, credential: &str, tenant: &str) -> bool {
    issuer
        .tokens()
        .await
        .issue_access_token(with_credential(issue_request(tenant), credential))
        .await
        .is_ok()
}

async fn refreshes(issuer: &TestIssuer, refresh_token: &str) -> Result<pb::SessionTokens, Status> {
    issuer
        .tokens()
        .await
        .refresh_session(issuer.as_admin(pb::RefreshSessionRequest {
            refresh_token: refresh_token.to_owned(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// The same id with another secret (and a valid checksum): what someone who saw an id in
/// a log could forge.
fn same_id_other_secret(credential: &str) -> String {
    let parsed = Credential::parse(credential).expect("a credential");
    Credential::from_parts(parsed.kind, parsed.id, random_base62(43)).expose()
}

fn forged_checksum(credential: &str) -> String {
    let mut bytes = credential.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn leaked_caller_credentials_and_refresh_tokens_are_revoked_only_when_presented_whole() {
    let issuer = TestIssuer::start().await;
    let admin = issuer.admin_token.clone();
    let leaked_caller = client(&issuer, "leaky-ci", &["issue"], &["acme"]).await;
    let session = login(&issuer, "acme").await;
    let leaked_refresh = session.refresh_token.clone();

    // Forgeries: nothing is revoked, everything keeps working.
    let outcomes = revoke_leaked(
        &issuer,
        &admin,
        &[
            &forged_checksum(&leaked_caller),
            &same_id_other_secret(&leaked_caller),
            &forged_checksum(&leaked_refresh),
            &same_id_other_secret(&leaked_refresh),
            "not a credential",
            &Credential::generate(CredentialKind::IssuerCaller).expose(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [Outcome::Unknown; 6]);
    assert!(authenticates(&issuer, &leaked_caller, "acme").await);

    // Service and webhook tokens and an API key that do not exist.
    let outcomes = revoke_leaked(
        &issuer,
        &admin,
        &[
            &Credential::generate(CredentialKind::Service).expose(),
            &Credential::generate(CredentialKind::Webhook).expose(),
            &Credential::generate(CredentialKind::ApiKey).expose(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        [Outcome::Unknown, Outcome::Unknown, Outcome::Unknown]
    );

    // The real ones: revoked, and then dead.
    let outcomes = revoke_leaked(&issuer, &admin, &[&leaked_caller, &leaked_refresh])
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::Revoked, Outcome::Revoked]);
    assert!(!authenticates(&issuer, &leaked_caller, "acme").await);
    let refused = refreshes(&issuer, &leaked_refresh).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let introspection = issuer
        .tokens()
        .await
        .introspect_token(issuer.as_admin(pb::IntrospectTokenRequest {
            token: session.access_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !introspection.active,
        "the family's access token dies with it"
    );

    // Presented again: already dead, nothing new audited.
    let outcomes = revoke_leaked(&issuer, &admin, &[&leaked_caller, &leaked_refresh])
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::AlreadyDead, Outcome::AlreadyDead]);

    let events = issuer
        .admin()
        .await
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest {
            limit: 1000,
            before_seq: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .events;
    let leaked_events: Vec<_> = events
        .iter()
        .filter(|event| event.reason.starts_with("leaked credential"))
        .collect();
    let actions: Vec<&str> = leaked_events
        .iter()
        .map(|event| event.action.as_str())
        .collect();
    assert_eq!(
        actions,
        ["revoke.family", "client.disable"],
        "one audit entry per revocation, newest first: {leaked_events:?}"
    );
    assert_eq!(leaked_events[0].target, session.family_id);
    assert!(leaked_events[1].reason.contains("public repository"));
    let caller_id = Credential::parse(&leaked_caller).unwrap().id;
    assert_eq!(leaked_events[1].target, caller_id);
    for event in &events {
        let text = format!("{event:?}");
        for credential in [&leaked_caller, &leaked_refresh] {
            let secret = Credential::parse(credential).unwrap().secret;
            assert!(!text.contains(secret.expose()), "secret in audit: {text}");
        }
    }
}

#[tokio::test]
async fn a_confined_admin_revokes_only_its_tenants_leaked_credentials() {
    let issuer = TestIssuer::start().await;
    let acme_admin = client(&issuer, "acme-admin", &["admin"], &["acme"]).await;
    let acme_caller = client(&issuer, "acme-ci", &["issue"], &["acme"]).await;
    let globex_caller = client(&issuer, "globex-ci", &["issue"], &["globex"]).await;
    let unconfined_caller = client(&issuer, "platform-ci", &["issue"], &[]).await;
    let acme_session = login(&issuer, "acme").await;
    let globex_session = login(&issuer, "globex").await;

    let outcomes = revoke_leaked(
        &issuer,
        &acme_admin,
        &[
            &globex_caller,
            &unconfined_caller,
            &globex_session.refresh_token,
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        [Outcome::Unknown; 3],
        "answered like credentials that do not exist"
    );
    assert!(authenticates(&issuer, &globex_caller, "globex").await);
    assert!(authenticates(&issuer, &unconfined_caller, "globex").await);
    refreshes(&issuer, &globex_session.refresh_token)
        .await
        .expect("globex's session is untouched");

    let outcomes = revoke_leaked(
        &issuer,
        &acme_admin,
        &[&acme_caller, &acme_session.refresh_token],
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [Outcome::Revoked, Outcome::Revoked]);
    assert!(!authenticates(&issuer, &acme_caller, "acme").await);
    assert!(
        refreshes(&issuer, &acme_session.refresh_token)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn oversized_empty_and_non_admin_requests_are_refused() {
    let issuer = TestIssuer::start().await;
    let admin = issuer.admin_token.clone();
    let live = client(&issuer, "still-live", &["issue"], &["acme"]).await;

    let many: Vec<String> = (0..129).map(|_| live.clone()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let refused = revoke_leaked(&issuer, &admin, &many).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("more than 128"), "{refused:?}");

    let long = format!("{live}{}", "a".repeat(100));
    let refused = revoke_leaked(&issuer, &admin, &[&live, &long])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("credentials[1]"), "{refused:?}");

    let refused = revoke_leaked(&issuer, &admin, &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    // A caller without the admin scope may not revoke even its own credential this way.
    let refused = revoke_leaked(&issuer, &live, &[&live]).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Nothing refused changed anything.
    assert!(authenticates(&issuer, &live, "acme").await);
}

async fn create_api_key(issuer: &TestIssuer, tenant: &str) -> String {
    pb::api_key_service_client::ApiKeyServiceClient::new(issuer.channel().await)
        .create_api_key(issuer.as_admin(pb::CreateApiKeyRequest {
            tenant_id: tenant.into(),
            name: format!("{tenant}-partner"),
            permissions: vec!["invoices:read".into()],
            role: "api_partner".into(),
            ..Default::default()
        }))
        .await
        .expect("create api key")
        .into_inner()
        .key
}

async fn api_key_valid(issuer: &TestIssuer, key: &str) -> bool {
    pb::api_key_service_client::ApiKeyServiceClient::new(issuer.channel().await)
        .validate_api_key(issuer.as_admin(pb::ValidateApiKeyRequest {
            key: key.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("validate api key")
        .into_inner()
        .valid
}

#[tokio::test]
async fn a_leaked_tenant_api_key_is_revoked_within_the_callers_tenants_only() {
    let issuer = TestIssuer::start().await;
    let admin = issuer.admin_token.clone();
    let acme_admin = client(&issuer, "acme-admin", &["admin"], &["acme"]).await;
    let acme_key = create_api_key(&issuer, "acme").await;
    let globex_key = create_api_key(&issuer, "globex").await;
    assert!(api_key_valid(&issuer, &acme_key).await);

    let outcomes = revoke_leaked(
        &issuer,
        &acme_admin,
        &[
            &globex_key,
            &same_id_other_secret(&acme_key),
            &forged_checksum(&acme_key),
        ],
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [Outcome::Unknown; 3]);
    assert!(api_key_valid(&issuer, &globex_key).await);
    assert!(api_key_valid(&issuer, &acme_key).await);

    let outcomes = revoke_leaked(&issuer, &acme_admin, &[&acme_key])
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::Revoked]);
    assert!(!api_key_valid(&issuer, &acme_key).await);
    let outcomes = revoke_leaked(&issuer, &admin, &[&acme_key, &globex_key])
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::AlreadyDead, Outcome::Revoked]);
    assert!(!api_key_valid(&issuer, &globex_key).await);
}

async fn service_token(issuer: &TestIssuer, tenant: &str) -> String {
    let mut service =
        pb::service_token_service_client::ServiceTokenServiceClient::new(issuer.channel().await);
    service
        .create_service_identity(issuer.as_admin(pb::CreateServiceIdentityRequest {
            tenant_id: tenant.into(),
            name: "billing".into(),
            ..Default::default()
        }))
        .await
        .expect("create identity");
    service
        .issue_service_token(issuer.as_admin(pb::IssueServiceTokenRequest {
            tenant_id: tenant.into(),
            service: "billing".into(),
            ..Default::default()
        }))
        .await
        .expect("issue service token")
        .into_inner()
        .token
}

async fn webhook_token(issuer: &TestIssuer, tenant: &str) -> String {
    pb::webhook_service_client::WebhookServiceClient::new(issuer.channel().await)
        .issue_webhook_token(issuer.as_admin(pb::IssueWebhookTokenRequest {
            tenant_id: tenant.into(),
            endpoint: "orders-callback".into(),
            ..Default::default()
        }))
        .await
        .expect("issue webhook token")
        .into_inner()
        .token
}

async fn opaque_token_valid(issuer: &TestIssuer, token: &str) -> bool {
    pb::service_token_service_client::ServiceTokenServiceClient::new(issuer.channel().await)
        .validate_service_token(issuer.as_admin(pb::ValidateOpaqueTokenRequest {
            token: token.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("validate opaque token")
        .into_inner()
        .valid
}

/// Leaked `tbs_` and `tbw_` tokens presented whole are revoked (audited, pushed), within
/// a confined admin's tenants only; forgeries and another tenant's are `unknown`; a
/// second presentation is `already_dead`.
#[tokio::test]
async fn leaked_service_and_webhook_tokens_are_revoked_within_the_callers_tenants_only() {
    let issuer = TestIssuer::start().await;
    let admin = issuer.admin_token.clone();
    let acme_admin = client(&issuer, "acme-admin", &["admin"], &["acme"]).await;
    let acme_service = service_token(&issuer, "acme").await;
    let acme_webhook = webhook_token(&issuer, "acme").await;
    let globex_service = service_token(&issuer, "globex").await;
    let globex_webhook = webhook_token(&issuer, "globex").await;

    let outcomes = revoke_leaked(
        &issuer,
        &acme_admin,
        &[
            &globex_service,
            &globex_webhook,
            &same_id_other_secret(&acme_service),
            &forged_checksum(&acme_webhook),
        ],
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [Outcome::Unknown; 4]);
    for token in [
        &acme_service,
        &acme_webhook,
        &globex_service,
        &globex_webhook,
    ] {
        assert!(opaque_token_valid(&issuer, token).await, "nothing revoked");
    }

    let outcomes = revoke_leaked(&issuer, &acme_admin, &[&acme_service, &acme_webhook])
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::Revoked, Outcome::Revoked]);
    assert!(!opaque_token_valid(&issuer, &acme_service).await);
    assert!(!opaque_token_valid(&issuer, &acme_webhook).await);
    let outcomes = revoke_leaked(&issuer, &admin, &[&acme_service, &globex_webhook])
        .await
        .unwrap();
    assert_eq!(outcomes, [Outcome::AlreadyDead, Outcome::Revoked]);
    assert!(opaque_token_valid(&issuer, &globex_service).await);

    let actions: Vec<String> = issuer
        .app
        .store
        .audit_page(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.entry.reason.contains("found in a public repository"))
        .map(|record| record.entry.action)
        .collect();
    assert_eq!(
        actions,
        [
            "webhook.token.revoked",
            "webhook.token.revoked",
            "service.token.revoked"
        ]
    );
}

/// Runs `tessera-issuer scan --revoke --json PATH` against `issuer`; returns each
/// finding's revocation outcome.
async fn scan_revoke(
    issuer: &TestIssuer,
    path: &std::path::Path,
    token_file: &std::path::Path,
) -> Vec<String> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera-issuer"))
        .arg("scan")
        .arg("--revoke")
        .arg("--json")
        .arg("--addr")
        .arg(format!("http://{}", issuer.grpc_addr))
        .arg("--token-file")
        .arg(token_file)
        .arg(path)
        .output()
        .await
        .expect("run tessera-issuer scan");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let document: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "{error}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    document["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|finding| finding["revocation"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// `tessera-issuer scan --revoke`: the service and webhook tokens found in a file are
/// revoked; scanned again, they are already dead.
#[tokio::test]
async fn scan_revoke_revokes_found_service_and_webhook_tokens() {
    let issuer = TestIssuer::start().await;
    let service = service_token(&issuer, "acme").await;
    let webhook = webhook_token(&issuer, "acme").await;
    let dir = tempfile::tempdir().unwrap();
    let leaked = dir.path().join("leaked.env");
    std::fs::write(
        &leaked,
        format!("SERVICE_TOKEN={service}\n# hook\nWEBHOOK_TOKEN=\"{webhook}\"\n"),
    )
    .unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, &issuer.admin_token).unwrap();
    assert_eq!(
        scan_revoke(&issuer, &leaked, &token_file).await,
        ["revoked", "revoked"]
    );
    assert!(!opaque_token_valid(&issuer, &service).await);
    assert!(!opaque_token_valid(&issuer, &webhook).await);
    assert_eq!(
        scan_revoke(&issuer, &leaked, &token_file).await,
        ["already_dead", "already_dead"]
    );
}
