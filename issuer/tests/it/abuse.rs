//! Abuse resistance: the negative cache of unknown client ids (a store wrapper counts
//! lookups), the per-peer budget of refused calls, the per-burst audit summary, and the
//! refusal of control and bidi characters in every text field that reaches the audit log.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tessera_common::bundle::{BundleChange, BundleEvent, Revision};
use tessera_common::credential::{Credential, CredentialKind};
use tessera_common::ids::ClientId;
use tessera_common::keys::KeySetName;
use tessera_common::{SystemClock, UnixMillis};
use tessera_issuer::audit::{Actor, AuditAction};
use tessera_issuer::auth::{Authenticator, Scope, StoreAccess};
use tessera_issuer::credentials::Credentials;
use tessera_issuer::kek::{KEK_BYTES, Kek};
use tessera_issuer::keyring::Keyring;
use tessera_issuer::store::sqlite::SqliteStore;
use tessera_issuer::store::{
    AuditEntry, AuditRecord, ClientRecord, KeyCommit, KeySetState, Store, StoreError,
};
use tessera_proto::v1 as pb;
use tokio::sync::Notify;
use tonic::Code;
use tonic::metadata::MetadataMap;

use crate::harness::{TestIssuer, issue_request, with_credential};

/// A store that counts client lookups and passes everything through.
struct CountingStore {
    inner: SqliteStore,
    n_client_lookups: AtomicUsize,
}

#[async_trait]
impl Store for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn change_signal(&self) -> Arc<Notify> {
        self.inner.change_signal()
    }
    async fn key_set(&self, key_set: KeySetName) -> Result<KeySetState, StoreError> {
        self.inner.key_set(key_set).await
    }
    async fn commit_keys(&self, commit: KeyCommit) -> Result<Revision, StoreError> {
        self.inner.commit_keys(commit).await
    }
    async fn append_events(
        &self,
        changes: Vec<BundleChange>,
        at: UnixMillis,
    ) -> Result<Revision, StoreError> {
        self.inner.append_events(changes, at).await
    }
    async fn events_after(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<BundleEvent>, StoreError> {
        self.inner.events_after(after, limit).await
    }
    async fn latest_revision(&self) -> Result<Revision, StoreError> {
        self.inner.latest_revision().await
    }
    async fn oldest_revision(&self) -> Result<Revision, StoreError> {
        self.inner.oldest_revision().await
    }
    async fn prune_events(&self, before: Revision) -> Result<u64, StoreError> {
        self.inner.prune_events(before).await
    }
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        self.inner.append_audit(entry).await
    }
    async fn audit_page(
        &self,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_page(before_seq, limit).await
    }
    async fn audit_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_after(after_seq, limit).await
    }
    async fn insert_client(
        &self,
        client: ClientRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.inner.insert_client(client, audit).await
    }
    async fn client(&self, client_id: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        self.n_client_lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.client(client_id).await
    }
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.inner.list_clients().await
    }
    async fn disable_client(
        &self,
        client_id: &ClientId,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.inner.disable_client(client_id, at, audit).await
    }
    async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.meta(name).await
    }
    async fn put_meta_if_absent(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.inner.put_meta_if_absent(name, value).await
    }
}

fn counting_authenticator() -> (Arc<CountingStore>, Authenticator) {
    let store = Arc::new(CountingStore {
        inner: SqliteStore::open_in_memory().expect("in-memory store"),
        n_client_lookups: AtomicUsize::new(0),
    });
    let keyring =
        Keyring::from_kek(Kek::from_bytes(&[7u8; KEK_BYTES]).expect("kek")).expect("keyring");
    let credentials = Credentials::new(Arc::new(keyring), store.clone());
    let authenticator = Authenticator::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(credentials),
        Duration::from_secs(5),
    );
    (store, authenticator)
}

fn bearer(credential: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        "authorization",
        format!("Bearer {credential}").parse().expect("ascii"),
    );
    metadata
}

fn audit_entry() -> AuditEntry {
    Actor::system("r1".into(), "").entry(UnixMillis(1), AuditAction::ClientCreate, String::new())
}

#[tokio::test]
async fn a_flood_of_unknown_client_ids_reaches_the_store_once_per_id() {
    let (store, authenticator) = counting_authenticator();
    let unknown = Credential::generate(CredentialKind::IssuerCaller).expose();
    for _ in 0..200 {
        assert!(authenticator.authenticate(&bearer(&unknown)).await.is_err());
    }
    assert_eq!(
        store.n_client_lookups.load(Ordering::SeqCst),
        1,
        "one lookup, then the negative cache answers"
    );
    for _ in 0..10 {
        let fresh = Credential::generate(CredentialKind::IssuerCaller).expose();
        assert!(authenticator.authenticate(&bearer(&fresh)).await.is_err());
    }
    assert_eq!(store.n_client_lookups.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn a_peer_over_budget_costs_no_lookup_for_unknown_ids_but_known_clients_still_work() {
    let (store, authenticator) = counting_authenticator();
    let (_, credential) = authenticator
        .create_client("svc".into(), vec![Scope::Issue], Vec::new(), audit_entry())
        .await
        .expect("create client");
    for _ in 0..50 {
        let guess = Credential::generate(CredentialKind::IssuerCaller).expose();
        assert!(
            authenticator
                .authenticate_with(&bearer(&guess), StoreAccess::KnownClientsOnly)
                .await
                .is_err()
        );
    }
    assert_eq!(
        store.n_client_lookups.load(Ordering::SeqCst),
        0,
        "guesses from a peer over budget never reach the store"
    );
    let caller = authenticator
        .authenticate_with(&bearer(&credential.expose()), StoreAccess::KnownClientsOnly)
        .await
        .expect("a client created on this replica is known");
    assert_eq!(caller.scopes, vec![Scope::Issue]);
    // A wrong secret for a known id is refused whatever the cache holds.
    let mut forged = Credential::generate(CredentialKind::IssuerCaller);
    forged.id = credential.id.clone();
    assert!(
        authenticator
            .authenticate_with(&bearer(&forged.expose()), StoreAccess::KnownClientsOnly)
            .await
            .is_err()
    );
}

/// Sends `n` anonymous ListKeys calls and returns their codes.
async fn anonymous_list_keys(issuer: &TestIssuer, n: usize) -> Vec<tonic::Status> {
    let mut keys = issuer.keys().await;
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let status = keys
            .list_keys(tonic::Request::new(pb::ListKeysRequest::default()))
            .await
            .expect_err("anonymous ListKeys");
        statuses.push(status);
    }
    statuses
}

async fn audit_events(issuer: &TestIssuer) -> Vec<pb::AuditEvent> {
    issuer
        .admin()
        .await
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest {
            limit: 1000,
            before_seq: 0,
        }))
        .await
        .expect("audit")
        .into_inner()
        .events
}

#[tokio::test]
async fn a_flood_of_refused_calls_is_rate_limited_with_retry_after_while_the_admin_still_works() {
    let issuer = TestIssuer::start().await;
    // The admin is seen once before the flood, as an operator's tool would be.
    audit_events(&issuer).await;
    let statuses = anonymous_list_keys(&issuer, 120).await;
    assert!(
        statuses[..50]
            .iter()
            .all(|status| status.code() == Code::Unauthenticated),
        "the burst of 50 is Unauthenticated: {statuses:?}"
    );
    // Tokens come back at 10 a second, so a slow machine sees a few more Unauthenticated.
    let limited = statuses[50..]
        .iter()
        .find(|status| status.code() == Code::ResourceExhausted)
        .expect("calls beyond the burst are ResourceExhausted");
    let retry_after: u64 = limited
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    // Forged credentials from the same peer share its budget.
    let mut tokens = issuer.tokens().await;
    let mut forged_codes = Vec::new();
    for _ in 0..10 {
        let forged = Credential::generate(CredentialKind::ApiKey).expose();
        let status = tokens
            .issue_access_token(with_credential(issue_request("acme"), &forged))
            .await
            .expect_err("forged credential");
        forged_codes.push(status.code());
    }
    assert!(
        forged_codes.contains(&Code::ResourceExhausted),
        "{forged_codes:?}"
    );
    // A valid credential from the same peer is never refused for the peer's budget.
    issuer
        .keys()
        .await
        .list_keys(issuer.as_admin(pb::ListKeysRequest::default()))
        .await
        .expect("the admin still works during the flood");
    let metrics = tessera_issuer::metrics::render();
    assert!(
        metrics.contains("tessera_ratelimit_exceeded_total{scope=\"auth_failure\"}"),
        "{metrics}"
    );
    issuer.stop().await;
}

#[tokio::test]
async fn three_hundred_anonymous_calls_add_one_summary_row_to_the_audit_log() {
    let issuer = TestIssuer::start().await;
    let n_before = audit_events(&issuer).await.len();
    anonymous_list_keys(&issuer, 300).await;
    // The burst ends after 3 quiet seconds; the flusher looks every second.
    crate::assert_eventually!(
        audit_events(&issuer).await.len() > n_before,
        Duration::from_secs(15),
        "no summary row within 15 s"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = audit_events(&issuer).await;
    assert_eq!(
        events.len(),
        n_before + 1,
        "one row for 300 refusals: {events:?}"
    );
    let summary = &events[0];
    assert_eq!(
        (summary.actor.as_str(), summary.action.as_str()),
        ("anonymous", "auth.denied")
    );
    assert_eq!(summary.target, "KeyService/ListKeys");
    assert!(
        summary
            .reason
            .starts_with("300 refused calls from 127.0.0.1 (RPCs KeyService/ListKeys;"),
        "{}",
        summary.reason
    );
    issuer.stop().await;
}

#[tokio::test]
async fn refusals_of_an_authenticated_caller_are_not_rate_limited_and_stay_one_audit_row_each() {
    let issuer = TestIssuer::start().await;
    let created = issuer
        .admin()
        .await
        .create_client(issuer.as_admin(pb::CreateClientRequest {
            name: "issue-only".into(),
            scopes: vec!["issue".into()],
            tenants: Vec::new(),
        }))
        .await
        .expect("create client")
        .into_inner();
    let mut keys = issuer.keys().await;
    for _ in 0..60 {
        let status = keys
            .list_keys(with_credential(
                pb::ListKeysRequest::default(),
                &created.credential,
            ))
            .await
            .expect_err("an issue client listed keys");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let events = audit_events(&issuer).await;
    let attributed = events
        .iter()
        .filter(|event| event.action == "auth.denied" && event.actor == created.client_id)
        .count();
    assert_eq!(attributed, 60, "each attributable refusal is its own row");
    assert!(
        events.iter().all(|event| event.actor != "anonymous"),
        "nothing was charged to the peer: {events:?}"
    );
    issuer.stop().await;
}

#[tokio::test]
async fn an_open_burst_is_written_at_shutdown() {
    let issuer = TestIssuer::start().await;
    anonymous_list_keys(&issuer, 3).await;
    let store = issuer.app.store.clone();
    issuer.stop().await;
    crate::assert_eventually!(
        store
            .audit_page(None, 10)
            .await
            .expect("audit page")
            .iter()
            .any(|event| event
                .entry
                .reason
                .starts_with("3 refused calls from 127.0.0.1")),
        // Well before the 3 s of quiet that would end the burst on its own.
        Duration::from_millis(1500),
        "the open burst was not written at shutdown"
    );
}

/// Control, line-separator and bidi characters an attacker would use to forge or disguise
/// an audit entry.
const HOSTILE: [(&str, &str); 4] = [
    ("bidi override", "rotate \u{202E}gnitset"),
    ("newline", "ok\nauth.denied forged"),
    ("NUL", "ok\0"),
    ("isolate", "a\u{2066}b\u{2069}"),
];

fn assert_invalid_field<T>(result: Result<T, tonic::Status>, field: &str, what: &str) {
    let Err(status) = result else {
        panic!("{field} with a {what} was accepted");
    };
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{field}, {what}: {status:?}"
    );
    assert!(
        status.message().starts_with(field),
        "the message names `{field}` ({what}): {status:?}"
    );
}

#[tokio::test]
async fn reasons_names_and_ids_with_control_or_bidi_characters_are_refused_and_nothing_is_written()
{
    let issuer = TestIssuer::start().await;
    let n_before = audit_events(&issuer).await.len();
    let revision_before = issuer.app.store.latest_revision().await.expect("revision");
    let mut tokens = issuer.tokens().await;
    let mut keys = issuer.keys().await;
    let mut admin = issuer.admin().await;
    let mut bundle = issuer.bundle().await;
    let kid = keys
        .list_keys(issuer.as_admin(pb::ListKeysRequest::default()))
        .await
        .expect("keys")
        .into_inner()
        .keys[0]
        .kid
        .clone();
    for (what, text) in HOSTILE {
        let text = text.to_owned();
        assert_invalid_field(
            tokens
                .revoke_tokens(issuer.as_admin(pb::RevokeTokensRequest {
                    target: Some(pb::revoke_tokens_request::Target::UserId("alice".into())),
                    scope_tenant_id: "acme".into(),
                    reason: text.clone(),
                }))
                .await,
            "reason",
            what,
        );
        assert_invalid_field(
            tokens
                .emergency_revoke(issuer.as_admin(pb::EmergencyRevokeRequest {
                    scope: Some(pb::emergency_revoke_request::Scope::TenantId("acme".into())),
                    incident_id: "inc-1".into(),
                    reason: text.clone(),
                }))
                .await,
            "reason",
            what,
        );
        assert_invalid_field(
            tokens
                .emergency_revoke(issuer.as_admin(pb::EmergencyRevokeRequest {
                    scope: Some(pb::emergency_revoke_request::Scope::TenantId("acme".into())),
                    incident_id: text.clone(),
                    reason: "breach".into(),
                }))
                .await,
            "incident_id",
            what,
        );
        assert_invalid_field(
            keys.rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
                key_set: "access".into(),
                reason: text.clone(),
                ..Default::default()
            }))
            .await,
            "reason",
            what,
        );
        assert_invalid_field(
            keys.revoke_key(issuer.as_admin(pb::RevokeKeyRequest {
                kid: kid.clone(),
                reason: text.clone(),
            }))
            .await,
            "reason",
            what,
        );
        assert_invalid_field(
            admin
                .create_client(issuer.as_admin(pb::CreateClientRequest {
                    name: text.clone(),
                    scopes: vec!["issue".into()],
                    tenants: Vec::new(),
                }))
                .await,
            "name",
            what,
        );
        assert_invalid_field(
            admin
                .disable_client(issuer.as_admin(pb::DisableClientRequest {
                    client_id: "c1".into(),
                    reason: text.clone(),
                }))
                .await,
            "reason",
            what,
        );
        assert_invalid_field(
            bundle
                .watch_trust_bundle(issuer.as_admin(pb::WatchTrustBundleRequest {
                    since_revision: 0,
                    subscriber_id: text.clone(),
                    credential_changes: false,
                    secret_changes: false,
                }))
                .await,
            "subscriber_id",
            what,
        );
    }
    assert_eq!(
        audit_events(&issuer).await.len(),
        n_before,
        "nothing audited"
    );
    assert_eq!(
        issuer.app.store.latest_revision().await.expect("revision"),
        revision_before,
        "nothing published"
    );
    issuer.stop().await;
}
