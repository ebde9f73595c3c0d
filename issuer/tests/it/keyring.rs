//! The versioned keyring and the one credential model, on a running issuer: a second
//! pepper version hashes new caller credentials and refresh tokens while old ones keep
//! verifying (also on a replica that has not loaded it yet); a second KEK version wraps
//! new keys while old ones still unwrap; caller credentials are `tbc_`, and a client
//! created before that (a `tbk_` record) keeps working with exactly its old credential.

use std::path::PathBuf;
use std::sync::Arc;

use tessera_common::SystemClock;
use tessera_common::credential::{Credential, CredentialKind, PepperVersion};
use tessera_common::ids::ClientId;
use tessera_common::keys::KeySetName;
use tessera_issuer::audit::{Actor, AuditAction};
use tessera_issuer::auth::Scope;
use tessera_issuer::config::IssuerConfig;
use tessera_issuer::credentials::Credentials;
use tessera_issuer::kek::{KEK_BYTES, Kek, KekVersion};
use tessera_issuer::keyring::{self, Keyring};
use tessera_issuer::store::ClientRecord;
use tessera_proto::v1 as pb;
use tonic::Code;

use crate::harness::{TestIssuer, issue_request, with_credential};

/// Starts an issuer on SQLite and returns it with its data directory.
async fn start() -> (TestIssuer, PathBuf) {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let path = data_dir.path().to_owned();
    let config = IssuerConfig::development(&path);
    let issuer = TestIssuer::start_in(config, data_dir, Arc::new(SystemClock)).await;
    (issuer, path)
}

fn keyring_of(issuer: &TestIssuer) -> Arc<Keyring> {
    issuer.app.auth.credentials().keyring().clone()
}

async fn create_client(issuer: &TestIssuer, name: &str) -> pb::CreateClientResponse {
    issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: name.into(),
            scopes: vec!["issue".into()],
            tenants: vec!["acme".into()],
        }))
        .await
        .expect("create client")
        .into_inner()
}

/// Returns the code of an IssueAccessToken call made with `credential`.
async fn issue_with(issuer: &TestIssuer, credential: &str) -> Code {
    match issuer
        .tokens()
        .await
        .issue_access_token(with_credential(issue_request("acme"), credential))
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn client_pepper(issuer: &TestIssuer, client_id: &str) -> PepperVersion {
    let client_id = ClientId::new(client_id).expect("client id");
    let record = issuer.app.store.client(&client_id).await.expect("read");
    record.expect("client exists").pepper_version
}

async fn refresh_pepper(issuer: &TestIssuer, refresh_token: &str) -> PepperVersion {
    let id = Credential::parse(refresh_token).expect("parses").id;
    let record = issuer.app.session_store.refresh_token(&id).await;
    record.expect("read").expect("token exists").pepper_version
}

async fn login(issuer: &TestIssuer) -> pb::SessionTokens {
    let request = pb::CreateSessionRequest {
        subject: "alice".into(),
        tenant_id: "acme".into(),
        role: "staff".into(),
        ..Default::default()
    };
    let mut tokens = issuer.tokens().await;
    let response = tokens.create_session(issuer.as_admin(request)).await;
    response.expect("create session").into_inner()
}

async fn refresh(issuer: &TestIssuer, refresh_token: &str) -> pb::SessionTokens {
    let request = pb::RefreshSessionRequest {
        refresh_token: refresh_token.into(),
    };
    let mut tokens = issuer.tokens().await;
    let response = tokens.refresh_session(issuer.as_admin(request)).await;
    response.expect("refresh").into_inner()
}

#[tokio::test]
async fn a_second_pepper_version_hashes_new_credentials_and_old_ones_still_verify() {
    let (issuer, _) = start().await;
    let keyring = keyring_of(&issuer);
    let old_client = create_client(&issuer, "before").await;
    let old_session = login(&issuer).await;
    assert_eq!(
        client_pepper(&issuer, &old_client.client_id).await,
        PepperVersion::FIRST
    );
    assert_eq!(
        refresh_pepper(&issuer, &old_session.refresh_token).await,
        PepperVersion::FIRST
    );

    let racing = login(&issuer).await;
    let racing_successor = refresh(&issuer, &racing.refresh_token).await;

    let v2 = keyring::introduce_pepper(&keyring, issuer.app.store.as_ref())
        .await
        .expect("introduce pepper v2");
    assert_eq!(v2, PepperVersion::new(2).expect("positive"));

    // Old credentials verify under the version their records name.
    assert_eq!(issue_with(&issuer, &old_client.credential).await, Code::Ok);
    assert_eq!(issue_with(&issuer, &issuer.admin_token).await, Code::Ok);
    let rotated = refresh(&issuer, &old_session.refresh_token).await;
    // A token exchanged just before v2 and presented again within the grace window
    // (a concurrent tab) gets the same successor: the derivation uses the presented
    // token's pepper version, not the current one.
    let repeated = refresh(&issuer, &racing.refresh_token).await;
    assert_eq!(repeated.refresh_token, racing_successor.refresh_token);
    // New ones are hashed with the new version, and verify too.
    let new_client = create_client(&issuer, "after").await;
    assert_eq!(client_pepper(&issuer, &new_client.client_id).await, v2);
    assert_eq!(issue_with(&issuer, &new_client.credential).await, Code::Ok);
    assert_eq!(refresh_pepper(&issuer, &rotated.refresh_token).await, v2);
    let again = refresh(&issuer, &rotated.refresh_token).await;
    assert_eq!(refresh_pepper(&issuer, &again.refresh_token).await, v2);
    assert_eq!(
        refresh_pepper(&issuer, &login(&issuer).await.refresh_token).await,
        v2
    );
    issuer.stop().await;
}

#[tokio::test]
async fn a_replica_loads_a_pepper_version_another_introduced_when_a_record_names_it() {
    let (issuer, data_dir) = start().await;
    keyring::introduce_pepper(&keyring_of(&issuer), issuer.app.store.as_ref())
        .await
        .expect("introduce pepper v2");
    let client = create_client(&issuer, "after").await;
    let client_id = ClientId::new(client.client_id).expect("client id");
    let record = issuer.app.store.client(&client_id).await.expect("read");
    let record = record.expect("client exists");

    // A replica started before v2 existed: pepper 1 only, the same KEK and store.
    let kek = Kek::from_file(&data_dir.join("kek")).expect("kek");
    let replica_keyring = Arc::new(Keyring::from_kek(kek).expect("keyring"));
    let replica = Credentials::new(replica_keyring.clone(), issuer.app.store.clone());
    let presented = Credential::parse(&client.credential).expect("parses");
    assert!(replica.verify(&presented, &record).await);
    assert_eq!(
        replica_keyring.current_pepper().expect("pepper").version(),
        record.pepper_version
    );
    let mut wrong = presented.clone();
    wrong.secret = Credential::generate(CredentialKind::IssuerCaller).secret;
    assert!(!replica.verify(&wrong, &record).await);
    issuer.stop().await;
}

#[tokio::test]
async fn a_second_kek_version_wraps_new_keys_and_old_ones_still_unwrap() {
    let (issuer, _) = start().await;
    let keyring = keyring_of(&issuer);
    let before = issuer.app.store.key_set(KeySetName::Access).await;
    let before = before.expect("key set").keys;
    assert!(before.iter().any(|key| key.wrapped_private.is_some()));

    let v2 = KekVersion::new(2).expect("positive");
    let kek_v2 = Kek::from_bytes(&[42; KEK_BYTES]).expect("kek");
    keyring
        .add_kek(kek_v2.with_version(v2))
        .expect("add KEK v2");
    let rotated = issuer
        .keys()
        .await
        .rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
            key_set: "access".into(),
            reason: "kek v2".into(),
            ..Default::default()
        }))
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(issue_with(&issuer, &issuer.admin_token).await, Code::Ok);

    let after = issuer.app.store.key_set(KeySetName::Access).await;
    for key in after.expect("key set").keys {
        let Some(wrapped) = &key.wrapped_private else {
            continue;
        };
        let kid = key.schedule.kid.as_str();
        let expected = if kid == rotated.new_kid {
            v2
        } else {
            KekVersion::FIRST
        };
        assert_eq!(wrapped.kek_version, expected, "{kid}");
        let opened = keyring.unwrap(KeySetName::Access, kid, wrapped);
        assert!(opened.is_ok(), "{kid} unwraps with the version it records");
    }
    issuer.stop().await;
}

#[tokio::test]
async fn caller_credentials_are_tbc_and_a_legacy_tbk_client_keeps_only_its_own_prefix() {
    let (issuer, _) = start().await;
    assert!(issuer.admin_token.starts_with("tbc_"), "bootstrap admin");
    let created = create_client(&issuer, "new").await;
    assert!(created.credential.starts_with("tbc_"));
    let new = Credential::parse(&created.credential).expect("parses");
    let as_tbk = Credential::from_parts(CredentialKind::ApiKey, new.id, new.secret.expose().into());
    assert_eq!(
        issue_with(&issuer, &as_tbk.expose()).await,
        Code::Unauthenticated
    );

    // A client as migration 3 leaves one created before `tbc_`: prefix `tbk_`, pepper 1.
    let legacy = Credential::generate(CredentialKind::ApiKey);
    let hashed = keyring_of(&issuer)
        .hash_secret(&legacy.secret)
        .expect("hash");
    let record = ClientRecord {
        client_id: ClientId::new(legacy.id.clone()).expect("client id"),
        name: "legacy".into(),
        scopes: vec![Scope::Issue.as_str().into()],
        tenants: vec!["acme".into()],
        credential_kind: CredentialKind::ApiKey,
        secret_hash: hashed.hash,
        pepper_version: hashed.pepper_version,
        created_at: issuer.app.now(),
        disabled_at: None,
    };
    let audit = Actor::system("r1".into(), "legacy client").entry(
        issuer.app.now(),
        AuditAction::ClientCreate,
        legacy.id.clone(),
    );
    issuer
        .app
        .store
        .insert_client(record, audit)
        .await
        .expect("insert");
    assert_eq!(issue_with(&issuer, &legacy.expose()).await, Code::Ok);
    let as_tbc = Credential::from_parts(
        CredentialKind::IssuerCaller,
        legacy.id.clone(),
        legacy.secret.expose().into(),
    );
    assert_eq!(
        issue_with(&issuer, &as_tbc.expose()).await,
        Code::Unauthenticated
    );
    issuer.stop().await;
}
