//! API keys over gRPC, in-process on real sockets: the lifecycle (create, list without
//! secrets, validate, rotate with grace, GRACE_ENDED, revoke) on a test clock, tenant
//! confinement (another tenant's key is answered like a missing one), the attacker's
//! cases (a forged checksum costs no database read, a right id with a wrong secret is
//! UNKNOWN, oversized input is INVALID_ARGUMENT), the `expiring` mark and expiry, and
//! usage that survives a graceful restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tessera_common::bundle::CredentialChange;
use tessera_common::credential::{Credential, CredentialKind};
use tessera_common::ids::{ClientId, TenantId};
use tessera_common::{Clock, ManualClock, SystemClock, UnixMillis};
use tessera_issuer::api_keys::ratelimit::{Lease, RateLimits};
use tessera_issuer::api_keys::{ApiKeys, NewApiKey, Refusal};
use tessera_issuer::audit::Actor;
use tessera_issuer::config::IssuerConfig;
use tessera_issuer::store::sqlite::SqliteStore;
use tessera_issuer::store::{
    ApiKeyRecord, ApiKeyStore, ApiKeyUsage, AuditEntry, RateLimitStore, StoreError,
};
use tessera_proto::v1 as pb;
use tessera_proto::v1::api_key_service_client::ApiKeyServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TestIssuer, with_credential};

const HOME: &str = "acme";
const VICTIM: &str = "globex";
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn api_keys(issuer: &TestIssuer) -> ApiKeyServiceClient<Channel> {
    ApiKeyServiceClient::new(issuer.channel().await)
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

fn create_request(tenant: &str, name: &str) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        tenant_id: tenant.into(),
        name: name.into(),
        permissions: vec!["invoices:read".into(), "invoices:write".into()],
        role: "billing".into(),
        reason: "test".into(),
        ..Default::default()
    }
}

async fn create(issuer: &TestIssuer, tenant: &str, name: &str) -> pb::CreateApiKeyResponse {
    api_keys(issuer)
        .await
        .create_api_key(issuer.as_admin(create_request(tenant, name)))
        .await
        .expect("create api key")
        .into_inner()
}

fn validate_request(key: &str, permissions: &[&str], role: &str) -> pb::ValidateApiKeyRequest {
    pb::ValidateApiKeyRequest {
        key: key.into(),
        required_permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        required_role: role.into(),
        lease_admissions: 0,
    }
}

/// Validates `key` as `credential`; returns the refusal (Unspecified when valid).
async fn refusal_as(issuer: &TestIssuer, credential: &str, key: &str) -> pb::ApiKeyRefusal {
    let response = api_keys(issuer)
        .await
        .validate_api_key(with_credential(validate_request(key, &[], ""), credential))
        .await
        .expect("validate answers")
        .into_inner();
    assert_eq!(response.valid, response.refusal == 0, "{response:?}");
    response.refusal()
}

async fn refusal(issuer: &TestIssuer, key: &str) -> pb::ApiKeyRefusal {
    refusal_as(issuer, &issuer.admin_token, key).await
}

async fn audit_actions(issuer: &TestIssuer) -> Vec<(String, String, String)> {
    let mut page = issuer.app.store.audit_page(None, 1000).await.unwrap();
    page.reverse();
    page.into_iter()
        .map(|record| {
            (
                record.entry.action,
                record.entry.target,
                record.entry.reason,
            )
        })
        .collect()
}

/// Create → list (metadata only) → validate (permissions, role) → rotate (the old key
/// works during its grace, then GRACE_ENDED) → revoke (REVOKED); every creation, rotation
/// and revocation is audited with the key id and never the key.
#[tokio::test]
async fn api_key_lifecycle_with_rotation_grace_and_revocation() {
    let start = SystemClock.now();
    let clock = Arc::new(ManualClock::new(start));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone()).await;
    let mut service = api_keys(&issuer).await;

    let created = create(&issuer, HOME, "billing export").await;
    let key = created.key.clone();
    let metadata = created.api_key.clone().unwrap();
    assert!(key.starts_with("tbk_"), "{key}");
    assert!(Credential::parse(&key).is_ok());
    assert_eq!(metadata.state, "active");
    assert!(!metadata.expiring);
    let expires_at = metadata.expires_at.unwrap().seconds;
    let created_at = metadata.created_at.unwrap().seconds;
    assert_eq!(
        expires_at - created_at,
        90 * 24 * 3600,
        "default lifetime 90 days"
    );

    let listed = service
        .list_api_keys(issuer.as_admin(pb::ListApiKeysRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys, vec![metadata.clone()]);
    let secret = &key[4 + metadata.key_id.len() + 1..];
    assert!(
        !format!("{listed:?}").contains(secret),
        "list leaks the secret"
    );

    // Valid, with what it grants; a missing permission or another role is refused.
    let valid = service
        .validate_api_key(issuer.as_admin(validate_request(&key, &["invoices:read"], "billing")))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid);
    assert_eq!(
        (valid.tenant_id.as_str(), valid.role.as_str()),
        (HOME, "billing")
    );
    assert_eq!(valid.key_id, metadata.key_id);
    for (permissions, role) in [(&["payroll:read"][..], ""), (&[][..], "admin")] {
        let refused = service
            .validate_api_key(issuer.as_admin(validate_request(&key, permissions, role)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            refused.refusal(),
            pb::ApiKeyRefusal::InsufficientPermissions
        );
        assert!(refused.tenant_id.is_empty());
    }

    // Rotation: the successor once, the predecessor valid until its grace ends.
    let rotated = service
        .rotate_api_key(issuer.as_admin(pb::RotateApiKeyRequest {
            key_id: metadata.key_id.clone(),
            reason: "quarterly".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let successor = rotated.key.clone();
    let predecessor = rotated.predecessor.unwrap();
    assert_eq!(predecessor.state, "rotated");
    assert_eq!(
        predecessor.grace_until.unwrap().seconds - predecessor.state_changed_at.unwrap().seconds,
        24 * 3600,
        "default grace 24 h"
    );
    assert_eq!(
        rotated.api_key.as_ref().unwrap().predecessor_id,
        metadata.key_id
    );
    let again = service
        .rotate_api_key(issuer.as_admin(pb::RotateApiKeyRequest {
            key_id: metadata.key_id.clone(),
            ..Default::default()
        }))
        .await;
    assert_eq!(again.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(refusal(&issuer, &key).await, pb::ApiKeyRefusal::Unspecified);
    assert_eq!(
        refusal(&issuer, &successor).await,
        pb::ApiKeyRefusal::Unspecified
    );
    clock.advance(23 * HOUR);
    assert_eq!(refusal(&issuer, &key).await, pb::ApiKeyRefusal::Unspecified);
    clock.advance(HOUR);
    assert_eq!(refusal(&issuer, &key).await, pb::ApiKeyRefusal::GraceEnded);
    assert_eq!(
        refusal(&issuer, &successor).await,
        pb::ApiKeyRefusal::Unspecified
    );

    // Revocation: refused at once.
    let successor_id = rotated.api_key.unwrap().key_id;
    let revoked = service
        .revoke_api_key(issuer.as_admin(pb::RevokeApiKeyRequest {
            key_id: successor_id.clone(),
            reason: "leaked".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state, "revoked");
    assert_eq!(
        refusal(&issuer, &successor).await,
        pb::ApiKeyRefusal::Revoked
    );
    let revoke_again = service
        .revoke_api_key(issuer.as_admin(pb::RevokeApiKeyRequest {
            key_id: successor_id.clone(),
            reason: String::new(),
        }))
        .await;
    assert_eq!(revoke_again.unwrap_err().code(), Code::FailedPrecondition);

    let audit = audit_actions(&issuer).await;
    let ours: Vec<&(String, String, String)> = audit
        .iter()
        .filter(|(action, ..)| action.starts_with("apikey."))
        .collect();
    let actions: Vec<&str> = ours.iter().map(|(action, ..)| action.as_str()).collect();
    assert_eq!(actions, ["apikey.create", "apikey.rotate", "apikey.revoke"]);
    assert_eq!(ours[0].1, format!("apikey:{HOME}/{}", metadata.key_id));
    assert!(ours[1].2.contains(&successor_id), "{:?}", ours[1]);
    let everything = format!("{audit:?}");
    for text in [&key, &successor] {
        let secret = &text[4 + 17..];
        assert!(!everything.contains(secret), "the audit log holds a secret");
    }
}

/// A caller confined to `acme` — admin or introspect — cannot list, get, rotate, revoke
/// or validate `globex`'s keys: they are answered like keys that do not exist.
#[tokio::test]
async fn confined_callers_act_on_their_own_tenant_keys_only() {
    let issuer = TestIssuer::start().await;
    let victim = create(&issuer, VICTIM, "victim key").await;
    let victim_id = victim.api_key.unwrap().key_id;
    let admin_home = client(&issuer, &["admin"], &[HOME]).await;
    let introspect_home = client(&issuer, &["introspect"], &[HOME]).await;
    let mut service = api_keys(&issuer).await;

    // Its own tenant works.
    let own = service
        .create_api_key(with_credential(create_request(HOME, "own"), &admin_home))
        .await
        .expect("a confined admin creates keys of its tenant")
        .into_inner();
    let denied = service
        .create_api_key(with_credential(
            create_request(VICTIM, "planted"),
            &admin_home,
        ))
        .await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);

    let listed = service
        .list_api_keys(with_credential(
            pb::ListApiKeysRequest::default(),
            &admin_home,
        ))
        .await
        .unwrap()
        .into_inner();
    let tenants: Vec<&str> = listed
        .api_keys
        .iter()
        .map(|key| key.tenant_id.as_str())
        .collect();
    assert_eq!(tenants, [HOME]);
    let named = service
        .list_api_keys(with_credential(
            pb::ListApiKeysRequest {
                tenant_id: VICTIM.into(),
            },
            &admin_home,
        ))
        .await;
    assert_eq!(named.unwrap_err().code(), Code::PermissionDenied);

    let missing = "ZZZZZZZZZZZZZZZZ";
    for key_id in [victim_id.as_str(), missing] {
        let get = service
            .get_api_key(with_credential(
                pb::GetApiKeyRequest {
                    key_id: key_id.into(),
                },
                &admin_home,
            ))
            .await;
        assert_eq!(get.unwrap_err().code(), Code::NotFound, "get {key_id}");
        let rotate = service
            .rotate_api_key(with_credential(
                pb::RotateApiKeyRequest {
                    key_id: key_id.into(),
                    ..Default::default()
                },
                &admin_home,
            ))
            .await;
        assert_eq!(
            rotate.unwrap_err().code(),
            Code::NotFound,
            "rotate {key_id}"
        );
        let revoke = service
            .revoke_api_key(with_credential(
                pb::RevokeApiKeyRequest {
                    key_id: key_id.into(),
                    reason: String::new(),
                },
                &admin_home,
            ))
            .await;
        assert_eq!(
            revoke.unwrap_err().code(),
            Code::NotFound,
            "revoke {key_id}"
        );
    }
    assert_eq!(
        refusal_as(&issuer, &introspect_home, &victim.key).await,
        pb::ApiKeyRefusal::Unknown
    );
    assert_eq!(
        refusal_as(&issuer, &introspect_home, &own.key).await,
        pb::ApiKeyRefusal::Unspecified
    );
    // The victim's key is untouched and still valid for an unconfined verifier.
    assert_eq!(
        refusal(&issuer, &victim.key).await,
        pb::ApiKeyRefusal::Unspecified
    );
    // `issue` is not enough to administer keys, nor `introspect` to list them.
    let issuer_scope = client(&issuer, &["issue"], &[HOME]).await;
    let by_issue = service
        .create_api_key(with_credential(create_request(HOME, "x"), &issuer_scope))
        .await;
    assert_eq!(by_issue.unwrap_err().code(), Code::PermissionDenied);
    let by_introspect = service
        .list_api_keys(with_credential(
            pb::ListApiKeysRequest::default(),
            &introspect_home,
        ))
        .await;
    assert_eq!(by_introspect.unwrap_err().code(), Code::PermissionDenied);
}

/// An [`ApiKeyStore`] counting lookups by id, around a real SQLite store.
struct CountingStore {
    inner: SqliteStore,
    lookups: AtomicUsize,
}

#[async_trait]
impl ApiKeyStore for CountingStore {
    async fn insert_api_key(&self, key: ApiKeyRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.inner.insert_api_key(key, audit).await
    }
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.api_key(key_id).await
    }
    async fn list_api_keys(
        &self,
        tenant_id: Option<&TenantId>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.inner.list_api_keys(tenant_id).await
    }
    async fn rotate_api_key(
        &self,
        old_key_id: &str,
        successor: ApiKeyRecord,
        grace_until: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        self.inner
            .rotate_api_key(old_key_id, successor, grace_until, audit, event)
            .await
    }
    async fn revoke_api_key(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        self.inner.revoke_api_key(key_id, at, audit, event).await
    }
    async fn api_keys_expiring_by(
        &self,
        until: UnixMillis,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.inner.api_keys_expiring_by(until).await
    }
    async fn mark_api_key_expiring(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        self.inner
            .mark_api_key_expiring(key_id, at, audit, event)
            .await
    }
    async fn expire_api_key(
        &self,
        key_id: &str,
        at: UnixMillis,
        audit: AuditEntry,
        event: CredentialChange,
    ) -> Result<bool, StoreError> {
        self.inner.expire_api_key(key_id, at, audit, event).await
    }
    async fn set_api_key_rate_limits(
        &self,
        key_id: &str,
        limits: RateLimits,
        at: UnixMillis,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        self.inner
            .set_api_key_rate_limits(key_id, limits, at, audit)
            .await
    }
    async fn record_api_key_usage(&self, usage: Vec<ApiKeyUsage>) -> Result<(), StoreError> {
        self.inner.record_api_key_usage(usage).await
    }
}

#[async_trait]
impl RateLimitStore for CountingStore {
    async fn lease(
        &self,
        key_id: &str,
        limits: RateLimits,
        want: u32,
        now: UnixMillis,
    ) -> Result<Lease, StoreError> {
        self.inner.lease(key_id, limits, want, now).await
    }
}

/// A forged checksum is BAD_CHECKSUM without a database read; a well-formed key with a
/// real id and a wrong secret is read once and answered UNKNOWN, like an unknown id.
#[tokio::test]
async fn a_forged_checksum_costs_no_lookup_and_a_wrong_secret_is_unknown() {
    let issuer = TestIssuer::start().await;
    let store = Arc::new(CountingStore {
        inner: SqliteStore::open_in_memory().unwrap(),
        lookups: AtomicUsize::new(0),
    });
    let keys = ApiKeys::new(
        store.clone(),
        issuer.app.auth.credentials().clone(),
        Arc::new(SystemClock),
    );
    let actor = Actor::client(ClientId::new("ops").unwrap(), "req".into(), String::new());
    let (record, credential) = keys
        .create(
            &actor,
            NewApiKey {
                tenant_id: TenantId::new(HOME).unwrap(),
                name: "probe".into(),
                permissions: Vec::new(),
                role: String::new(),
                expires_at: None,
                rate_limits: RateLimits::default(),
            },
        )
        .await
        .unwrap();
    let key = credential.expose();
    let everyone = |_: &str| true;
    let mut forged = key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        keys.validate(&forged, &[], "", everyone).await.unwrap(),
        Err(Refusal::BadChecksum)
    );
    assert_eq!(
        keys.validate("tbk_not-a-key", &[], "", everyone)
            .await
            .unwrap(),
        Err(Refusal::Malformed)
    );
    assert_eq!(
        store.lookups.load(Ordering::SeqCst),
        0,
        "no read for a forgery"
    );

    let wrong_secret = Credential::from_parts(
        CredentialKind::ApiKey,
        record.key_id.clone(),
        "x".repeat(CredentialKind::ApiKey.secret_chars()),
    )
    .expose();
    assert_eq!(
        keys.validate(&wrong_secret, &[], "", everyone)
            .await
            .unwrap(),
        Err(Refusal::Unknown)
    );
    assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
    assert!(
        keys.validate(&key, &[], "", everyone)
            .await
            .unwrap()
            .is_ok()
    );
    // Another tenant's verifier is told UNKNOWN, as for a wrong secret.
    assert_eq!(
        keys.validate(&key, &[], "", |tenant| tenant == VICTIM)
            .await
            .unwrap(),
        Err(Refusal::Unknown)
    );
    // The other kinds' prefixes are not API keys.
    let caller = Credential::generate(CredentialKind::IssuerCaller).expose();
    assert_eq!(
        keys.validate(&caller, &[], "", everyone).await.unwrap(),
        Err(Refusal::Malformed)
    );
}

/// Oversized keys, names, roles and permission lists are INVALID_ARGUMENT naming the
/// field; a rotated-out key replayed after its grace is GRACE_ENDED over gRPC.
#[tokio::test]
async fn oversized_input_is_refused_with_invalid_argument() {
    let issuer = TestIssuer::start().await;
    let mut service = api_keys(&issuer).await;
    let long_key = format!("tbk_{}", "a".repeat(300));
    let status = service
        .validate_api_key(issuer.as_admin(validate_request(&long_key, &[], "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("key"), "{}", status.message());

    let mut oversized = Vec::new();
    let mut long_name = create_request(HOME, &"n".repeat(129));
    long_name.reason.clear();
    oversized.push(("name", long_name));
    oversized.push(("name", create_request(HOME, "")));
    let mut many = create_request(HOME, "many");
    many.permissions = (0..129).map(|i| format!("p{i}")).collect();
    oversized.push(("permissions", many));
    let mut long_permission = create_request(HOME, "long permission");
    long_permission.permissions = vec!["p".repeat(129)];
    oversized.push(("permissions", long_permission));
    let mut long_role = create_request(HOME, "long role");
    long_role.role = "r".repeat(129);
    oversized.push(("role", long_role));
    let mut control = create_request(HOME, "line\nbreak");
    control.role = String::new();
    oversized.push(("name", control));
    for (field, request) in oversized {
        let status = service
            .create_api_key(issuer.as_admin(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let too_many = validate_request("tbk_x", &[], "");
    let mut too_many = too_many;
    too_many.required_permissions = (0..129).map(|i| format!("p{i}")).collect();
    let status = service
        .validate_api_key(issuer.as_admin(too_many))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        issuer
            .app
            .api_keys
            .list(None, |_| true)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Seven days before expiry the scheduler marks a key `expiring` once (audit, and the
/// flag in ListApiKeys); past expiry it deactivates it (`expired`, audited) and
/// validation answers EXPIRED.
#[tokio::test]
async fn keys_turn_expiring_a_week_ahead_then_expire() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let issuer = TestIssuer::start_with(|_| {}, clock.clone()).await;
    let mut service = api_keys(&issuer).await;
    let mut request = create_request(HOME, "short-lived");
    let expires_at = clock.now().plus(10 * DAY);
    request.expires_at = Some(prost_types::Timestamp {
        seconds: expires_at.0 / 1000,
        nanos: 0,
    });
    let created = service
        .create_api_key(issuer.as_admin(request))
        .await
        .unwrap()
        .into_inner();
    let key_id = created.api_key.unwrap().key_id;
    let pass = issuer.app.api_keys.run_expiry().await.unwrap();
    assert_eq!((pass.marked_expiring, pass.expired), (0, 0));

    clock.advance(4 * DAY);
    let pass = issuer.app.api_keys.run_expiry().await.unwrap();
    assert_eq!((pass.marked_expiring, pass.expiring_now), (1, 1));
    let again = issuer.app.api_keys.run_expiry().await.unwrap();
    assert_eq!(again.marked_expiring, 0, "marked once");
    let listed = service
        .list_api_keys(issuer.as_admin(pb::ListApiKeysRequest {
            tenant_id: HOME.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.api_keys[0].expiring);
    assert_eq!(listed.api_keys[0].state, "active");
    assert_eq!(
        refusal(&issuer, &created.key).await,
        pb::ApiKeyRefusal::Unspecified
    );

    clock.advance(6 * DAY);
    assert_eq!(
        refusal(&issuer, &created.key).await,
        pb::ApiKeyRefusal::Expired
    );
    let pass = issuer.app.api_keys.run_expiry().await.unwrap();
    assert_eq!(pass.expired, 1);
    let got = service
        .get_api_key(issuer.as_admin(pb::GetApiKeyRequest {
            key_id: key_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.state.as_str(), got.expiring), ("expired", false));
    let actions: Vec<String> = audit_actions(&issuer)
        .await
        .into_iter()
        .map(|(action, ..)| action)
        .filter(|action| action.starts_with("apikey."))
        .collect();
    assert_eq!(
        actions,
        ["apikey.create", "apikey.expiring", "apikey.expire"]
    );
    assert_eq!(
        refusal(&issuer, &created.key).await,
        pb::ApiKeyRefusal::Expired
    );
}

/// Uses are counted in memory; a graceful stop writes the pending batch, so after a
/// restart on the same data the count and last use are there (the flush interval is set
/// far beyond the test, so only the shutdown flush can have written them).
#[tokio::test]
async fn usage_counted_before_a_graceful_stop_survives_the_restart() {
    let data = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = IssuerConfig::development(data.path());
        config.api_key_usage_flush = Duration::from_secs(300);
        config
    };
    let issuer = TestIssuer::start_in(
        config(),
        tempfile::tempdir().unwrap(),
        Arc::new(SystemClock),
    )
    .await;
    let created = create(&issuer, HOME, "counted").await;
    let key_id = created.api_key.unwrap().key_id;
    for _ in 0..3 {
        assert_eq!(
            refusal(&issuer, &created.key).await,
            pb::ApiKeyRefusal::Unspecified
        );
    }
    let before = issuer.app.api_keys.get(&key_id, |_| true).await.unwrap();
    assert_eq!(before.usage_count, 0, "no write per request");
    issuer.stop().await;

    let restarted = TestIssuer::start_in(
        config(),
        tempfile::tempdir().unwrap(),
        Arc::new(SystemClock),
    )
    .await;
    let got = api_keys(&restarted)
        .await
        .get_api_key(restarted.as_admin(pb::GetApiKeyRequest { key_id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.usage_count, 3);
    assert!(got.last_used_at.is_some());
    restarted.stop().await;
}

/// A revocation appends its `CredentialChanged` event to the log, and the stream pushes it
/// to bundle readers that asked for credential changes (verifiers that cache API-key
/// answers drop them by id): the key id, tenant and state, never a secret. A reader that
/// did not ask (a verifier built before the change kind existed) and a reader confined to
/// another tenant get an empty delta at the same revision instead.
#[tokio::test]
async fn api_key_revocation_is_pushed_on_the_stream_with_public_fields_only() {
    let issuer = TestIssuer::start().await;
    let created = create(&issuer, HOME, "streamed").await;
    let key_id = created.api_key.unwrap().key_id;
    let reader = client(&issuer, &["bundle:read"], &[]).await;
    let other_tenant_reader = client(&issuer, &["bundle:read"], &["globex"]).await;
    let mut informed = watch(&issuer, &reader, true).await;
    let mut legacy = watch(&issuer, &reader, false).await;
    let mut other_tenant = watch(&issuer, &other_tenant_reader, true).await;
    api_keys(&issuer)
        .await
        .revoke_api_key(issuer.as_admin(pb::RevokeApiKeyRequest {
            key_id: key_id.clone(),
            reason: String::new(),
        }))
        .await
        .unwrap();
    let (revision, delta) = next_delta(&mut informed).await;
    let logged = issuer
        .app
        .store
        .events_after(tessera_common::bundle::Revision(revision - 1), 10)
        .await
        .unwrap();
    assert_eq!(logged.len(), 1);
    let tessera_common::bundle::BundleChange::CredentialChanged { change } = &logged[0].change
    else {
        panic!("{logged:?}")
    };
    assert_eq!(
        (change.credential_id.as_str(), change.state.as_str()),
        (key_id.as_str(), "revoked")
    );
    assert_eq!(revision, logged[0].revision.0, "the delta is at the event");
    let [sent] = delta.changes.as_slice() else {
        panic!("one change: {delta:?}")
    };
    let Some(pb::bundle_change::Change::CredentialChanged(sent)) = &sent.change else {
        panic!("a credential change: {sent:?}")
    };
    assert_eq!(
        (
            sent.kind,
            sent.credential_id.as_str(),
            sent.tenant_id.as_str(),
            sent.state.as_str()
        ),
        (
            pb::CredentialKind::ApiKey as i32,
            key_id.as_str(),
            HOME,
            "revoked"
        )
    );
    for (name, stream) in [("legacy", &mut legacy), ("other tenant", &mut other_tenant)] {
        let (skipped_to, delta) = next_delta(stream).await;
        assert_eq!(
            skipped_to, revision,
            "{name}: the revision moves past the event"
        );
        assert!(delta.changes.is_empty(), "{name}: {delta:?}");
    }
}

/// Subscribes with `credential` and reads the first message (a snapshot).
async fn watch(
    issuer: &TestIssuer,
    credential: &str,
    credential_changes: bool,
) -> tonic::Streaming<pb::TrustBundleUpdate> {
    let mut stream = issuer
        .bundle()
        .await
        .watch_trust_bundle(with_credential(
            pb::WatchTrustBundleRequest {
                credential_changes,
                ..Default::default()
            },
            credential,
        ))
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

/// Returns the next delta (skipping heartbeats) and its revision.
async fn next_delta(
    stream: &mut tonic::Streaming<pb::TrustBundleUpdate>,
) -> (u64, pb::TrustBundleDelta) {
    loop {
        let update = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("delta in time")
            .unwrap()
            .unwrap();
        if let Some(pb::trust_bundle_update::Kind::Delta(delta)) = update.kind {
            return (update.revision, delta);
        }
    }
}
