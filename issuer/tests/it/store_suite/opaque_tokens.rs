//! Service identities and opaque tokens (`tbs_`, `tbw_`): round trips, the checks made
//! inside the issuing transaction, conditional revocation (of 50 concurrent confirmations
//! across two store instances exactly one revokes), disabling an identity, the expiry
//! sweep, and an emergency tenant revocation deactivating exactly one tenant's API keys
//! and tokens — the same on both backends.

use std::sync::Arc;

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, CredentialChange, StandingKind};
use tessera_common::credential::PepperVersion;
use tessera_common::ids::{ClientId, TenantId};
use tessera_common::revocation::{RevocationEntry, RevocationKind};
use tessera_issuer::api_keys::ratelimit::RateLimits;
use tessera_issuer::audit::{Actor, AuditAction};
use tessera_issuer::store::{
    ApiKeyRecord, ApiKeyState, AuditEntry, DeactivatedCredentials, EmergencyCommit,
    EmergencyCommitted, IncidentRecord, OpaqueTokenKind, OpaqueTokenRecord, OpaqueTokenState,
    Revocation, RevocationEffect, RevocationRecords, ServiceIdentityRecord, ServiceTokenInsert,
    StoreError,
};

use super::fixture::Fixture;

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3600 * 1000;

fn identity(tenant: &str, name: &str) -> ServiceIdentityRecord {
    ServiceIdentityRecord {
        tenant_id: TenantId::new(tenant).unwrap(),
        name: name.to_owned(),
        permissions: vec!["invoices:read".into()],
        role: "worker".into(),
        token_ttl_seconds: 86_400,
        created_at: UnixMillis(T0),
        disabled_at: None,
    }
}

fn token(
    token_id: &str,
    kind: OpaqueTokenKind,
    tenant: &str,
    subject: &str,
    replaces: Option<&str>,
) -> OpaqueTokenRecord {
    OpaqueTokenRecord {
        token_id: token_id.to_owned(),
        kind,
        tenant_id: TenantId::new(tenant).unwrap(),
        subject: subject.to_owned(),
        permissions: vec!["invoices:read".into()],
        role: "worker".into(),
        secret_hash: vec![9; 32],
        pepper_version: PepperVersion::FIRST,
        issued_at: UnixMillis(T0),
        expires_at: UnixMillis(T0 + 24 * HOUR),
        state: OpaqueTokenState::Active,
        state_at: None,
        replaces: replaces.map(str::to_owned),
        holder: "pod-1".into(),
    }
}

fn audit(action: AuditAction, target: &str) -> AuditEntry {
    Actor::client(ClientId::new("ops").unwrap(), "req".into(), String::new()).entry(
        UnixMillis(T0),
        action,
        target,
    )
}

fn change(record: &OpaqueTokenRecord) -> CredentialChange {
    CredentialChange {
        kind: StandingKind::ServiceToken,
        credential_id: record.token_id.clone(),
        tenant_id: record.tenant_id.as_str().to_owned(),
        state: "revoked".into(),
        grace_until: None,
        expires_at: record.expires_at,
    }
}

async fn issue(fixture: &Fixture, record: OpaqueTokenRecord) -> ServiceTokenInsert {
    fixture
        .opaque_tokens
        .insert_service_token(record, audit(AuditAction::ServiceTokenIssue, "t"))
        .await
        .unwrap()
}

async fn state_of(fixture: &Fixture, token_id: &str) -> OpaqueTokenState {
    fixture
        .opaque_tokens
        .opaque_token(token_id)
        .await
        .unwrap()
        .expect("token exists")
        .state
}

pub async fn opaque_tokens_round_trip_and_identities_by_tenant(fixture: &Fixture) {
    let tokens = &fixture.opaque_tokens;
    for (tenant, name) in [
        ("acme", "mailer"),
        ("acme", "billing"),
        ("globex", "billing"),
    ] {
        tokens
            .insert_service_identity(
                identity(tenant, name),
                audit(AuditAction::ServiceIdentityCreate, name),
            )
            .await
            .unwrap();
    }
    let duplicate = tokens
        .insert_service_identity(
            identity("acme", "billing"),
            audit(AuditAction::ServiceIdentityCreate, "billing"),
        )
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists)),
        "{duplicate:?}"
    );
    let acme = TenantId::new("acme").unwrap();
    let names: Vec<String> = tokens
        .list_service_identities(Some(&acme))
        .await
        .unwrap()
        .into_iter()
        .map(|identity| identity.name)
        .collect();
    assert_eq!(names, ["billing", "mailer"]);
    assert_eq!(tokens.list_service_identities(None).await.unwrap().len(), 3);
    assert_eq!(
        tokens.service_identity(&acme, "billing").await.unwrap(),
        Some(identity("acme", "billing"))
    );

    let service = token("s1", OpaqueTokenKind::Service, "acme", "billing", None);
    assert_eq!(
        issue(fixture, service.clone()).await,
        ServiceTokenInsert::Inserted
    );
    let mut webhook = token(
        "w1",
        OpaqueTokenKind::Webhook,
        "acme",
        "orders-callback",
        None,
    );
    webhook.role = String::new();
    webhook.holder = String::new();
    tokens
        .insert_webhook_token(webhook.clone(), audit(AuditAction::WebhookTokenIssue, "w1"))
        .await
        .unwrap();
    assert_eq!(tokens.opaque_token("s1").await.unwrap(), Some(service));
    assert_eq!(tokens.opaque_token("w1").await.unwrap(), Some(webhook));
    assert_eq!(tokens.opaque_token("nope").await.unwrap(), None);
}

pub async fn service_token_insert_checks_identity_and_predecessor(fixture: &Fixture) {
    let tokens = &fixture.opaque_tokens;
    for (tenant, name) in [
        ("acme", "billing"),
        ("acme", "mailer"),
        ("globex", "billing"),
    ] {
        tokens
            .insert_service_identity(
                identity(tenant, name),
                audit(AuditAction::ServiceIdentityCreate, name),
            )
            .await
            .unwrap();
    }
    let kind = OpaqueTokenKind::Service;
    assert_eq!(
        issue(fixture, token("x", kind, "acme", "nobody", None)).await,
        ServiceTokenInsert::NoIdentity
    );
    assert_eq!(
        issue(fixture, token("a1", kind, "acme", "billing", None)).await,
        ServiceTokenInsert::Inserted
    );
    assert_eq!(
        issue(fixture, token("m1", kind, "acme", "mailer", None)).await,
        ServiceTokenInsert::Inserted
    );
    assert_eq!(
        issue(fixture, token("g1", kind, "globex", "billing", None)).await,
        ServiceTokenInsert::Inserted
    );
    // `replaces` must name a live token of the same identity: not another identity's,
    // not another tenant's same-named identity's, not an unknown one.
    for (id, replaces) in [("r1", "m1"), ("r2", "g1"), ("r3", "unknown")] {
        assert_eq!(
            issue(fixture, token(id, kind, "acme", "billing", Some(replaces))).await,
            ServiceTokenInsert::ReplacesNotLive,
            "{replaces}"
        );
        assert_eq!(
            tokens.opaque_token(id).await.unwrap(),
            None,
            "nothing written"
        );
    }
    assert_eq!(
        issue(fixture, token("a2", kind, "acme", "billing", Some("a1"))).await,
        ServiceTokenInsert::Inserted
    );
    // An expired predecessor is not live either.
    let mut late = token("a3", kind, "acme", "billing", Some("a1"));
    late.issued_at = UnixMillis(T0 + 24 * HOUR);
    assert_eq!(
        issue(fixture, late).await,
        ServiceTokenInsert::ReplacesNotLive
    );

    let records: RevocationRecords = Arc::new(|record: &OpaqueTokenRecord| {
        (
            change(record),
            audit(AuditAction::ServiceTokenRevoke, &record.token_id),
        )
    });
    let acme = TenantId::new("acme").unwrap();
    let before = fixture.store.latest_revision().await.unwrap();
    let n_audit = fixture.store.audit_after(0, 1000).await.unwrap().len();
    let mut revoked = fixture
        .opaque_tokens
        .disable_service_identity(
            &acme,
            "billing",
            UnixMillis(T0 + 1),
            audit(AuditAction::ServiceIdentityDisable, "billing"),
            records.clone(),
        )
        .await
        .unwrap()
        .expect("disabled now");
    revoked.sort();
    assert_eq!(revoked, ["a1", "a2"]);
    for (id, state) in [
        ("a1", OpaqueTokenState::Revoked),
        ("a2", OpaqueTokenState::Revoked),
        ("m1", OpaqueTokenState::Active),
        ("g1", OpaqueTokenState::Active),
    ] {
        assert_eq!(state_of(fixture, id).await, state, "{id}");
    }
    let events = fixture.store.events_after(before, 10).await.unwrap();
    let mut ids: Vec<String> = events
        .iter()
        .map(|event| match &event.change {
            BundleChange::CredentialChanged { change } => change.credential_id.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["a1", "a2"]);
    let audit_rows = fixture.store.audit_after(0, 1000).await.unwrap();
    assert_eq!(
        audit_rows.len(),
        n_audit + 3,
        "the disabling and one per token"
    );
    assert_eq!(
        audit_rows[n_audit].entry.action,
        "service.identity.disabled"
    );

    // Disabled: no more tokens; disabling again writes nothing.
    assert_eq!(
        issue(fixture, token("a4", kind, "acme", "billing", None)).await,
        ServiceTokenInsert::Disabled
    );
    let again = fixture
        .opaque_tokens
        .disable_service_identity(
            &acme,
            "billing",
            UnixMillis(T0 + 2),
            audit(AuditAction::ServiceIdentityDisable, "billing"),
            records,
        )
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(
        fixture.store.audit_after(0, 1000).await.unwrap().len(),
        n_audit + 3
    );
}

/// Fifty confirmations of one successor, half through a second store instance (another
/// replica on PostgreSQL): exactly one revokes the predecessor, with one event and one
/// audit entry.
pub async fn concurrent_confirmations_revoke_the_predecessor_exactly_once(fixture: &Fixture) {
    fixture
        .opaque_tokens
        .insert_service_identity(
            identity("acme", "billing"),
            audit(AuditAction::ServiceIdentityCreate, "b"),
        )
        .await
        .unwrap();
    let old = token("old", OpaqueTokenKind::Service, "acme", "billing", None);
    assert_eq!(
        issue(fixture, old.clone()).await,
        ServiceTokenInsert::Inserted
    );
    let new = token(
        "new",
        OpaqueTokenKind::Service,
        "acme",
        "billing",
        Some("old"),
    );
    assert_eq!(issue(fixture, new).await, ServiceTokenInsert::Inserted);
    let replica = fixture.open_opaque_token_replica().await;
    let before = fixture.store.latest_revision().await.unwrap();
    let n_audit = fixture.store.audit_after(0, 1000).await.unwrap().len();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = if i % 2 == 0 {
            fixture.opaque_tokens.clone()
        } else {
            replica.clone()
        };
        let old = old.clone();
        tasks.push(tokio::spawn(async move {
            store
                .revoke_opaque_token(
                    "old",
                    UnixMillis(T0 + 10),
                    audit(AuditAction::ServiceTokenRotate, "old"),
                    change(&old),
                )
                .await
        }));
    }
    let mut n_won = 0;
    for task in tasks {
        if task.await.unwrap().expect("no store error") {
            n_won += 1;
        }
    }
    assert_eq!(n_won, 1);
    assert_eq!(state_of(fixture, "old").await, OpaqueTokenState::Revoked);
    assert_eq!(state_of(fixture, "new").await, OpaqueTokenState::Active);
    assert_eq!(
        fixture.store.events_after(before, 100).await.unwrap().len(),
        1
    );
    assert_eq!(
        fixture.store.audit_after(0, 1000).await.unwrap().len(),
        n_audit + 1
    );
}

pub async fn the_sweep_marks_expired_tokens_and_deletes_old_rows(fixture: &Fixture) {
    let tokens = &fixture.opaque_tokens;
    let mut long_gone = token("gone", OpaqueTokenKind::Webhook, "acme", "cb", None);
    long_gone.expires_at = UnixMillis(T0 - 8 * 24 * HOUR);
    let mut just_expired = token("late", OpaqueTokenKind::Webhook, "acme", "cb", None);
    just_expired.expires_at = UnixMillis(T0 - HOUR);
    let live = token("live", OpaqueTokenKind::Webhook, "acme", "cb", None);
    for record in [long_gone, just_expired, live] {
        tokens
            .insert_webhook_token(record, audit(AuditAction::WebhookTokenIssue, "w"))
            .await
            .unwrap();
    }
    let swept = tokens
        .sweep_opaque_tokens(UnixMillis(T0), UnixMillis(T0 - 7 * 24 * HOUR))
        .await
        .unwrap();
    assert_eq!(swept, (2, 1), "two marked expired, one deleted");
    assert_eq!(tokens.opaque_token("gone").await.unwrap(), None);
    assert_eq!(state_of(fixture, "late").await, OpaqueTokenState::Expired);
    assert_eq!(state_of(fixture, "live").await, OpaqueTokenState::Active);
}

fn api_key(key_id: &str, tenant: &str, state: ApiKeyState) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: key_id.to_owned(),
        tenant_id: TenantId::new(tenant).unwrap(),
        name: key_id.to_owned(),
        permissions: Vec::new(),
        role: String::new(),
        secret_hash: vec![7; 32],
        pepper_version: PepperVersion::FIRST,
        created_at: UnixMillis(T0),
        expires_at: UnixMillis(T0 + 90 * 24 * HOUR),
        state,
        state_at: None,
        predecessor_id: None,
        successor_id: None,
        grace_until: None,
        expiring_at: None,
        last_used_at: None,
        usage_count: 0,
        rate_limits: RateLimits {
            per_minute: 100,
            per_hour: 1000,
            per_day: 10_000,
        },
    }
}

/// An emergency tenant revocation deactivates, in its one transaction, every live API
/// key (active or rotated), service token and webhook token of that tenant, and nothing
/// of another tenant; the counts join the revocation's audit entry.
pub async fn an_emergency_deactivates_one_tenants_standing_credentials(fixture: &Fixture) {
    for (key_id, tenant, state) in [
        ("k-active", "acme", ApiKeyState::Active),
        ("k-rotated", "acme", ApiKeyState::Rotated),
        ("k-expired", "acme", ApiKeyState::Expired),
        ("k-other", "globex", ApiKeyState::Active),
    ] {
        fixture
            .api_keys
            .insert_api_key(
                api_key(key_id, tenant, state),
                audit(AuditAction::ApiKeyCreate, key_id),
            )
            .await
            .unwrap();
    }
    for (tenant, name) in [("acme", "billing"), ("globex", "billing")] {
        fixture
            .opaque_tokens
            .insert_service_identity(
                identity(tenant, name),
                audit(AuditAction::ServiceIdentityCreate, name),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        issue(
            fixture,
            token("s-acme", OpaqueTokenKind::Service, "acme", "billing", None)
        )
        .await,
        ServiceTokenInsert::Inserted
    );
    assert_eq!(
        issue(
            fixture,
            token(
                "s-globex",
                OpaqueTokenKind::Service,
                "globex",
                "billing",
                None
            )
        )
        .await,
        ServiceTokenInsert::Inserted
    );
    for (id, tenant) in [("w-acme", "acme"), ("w-globex", "globex")] {
        fixture
            .opaque_tokens
            .insert_webhook_token(
                token(id, OpaqueTokenKind::Webhook, tenant, "cb", None),
                audit(AuditAction::WebhookTokenIssue, id),
            )
            .await
            .unwrap();
    }
    let at = UnixMillis(T0 + 5);
    let committed = fixture
        .sessions
        .commit_emergency(EmergencyCommit {
            incident: IncidentRecord {
                name: "incident/tenant/4/acme/inc-9".into(),
                value: b"ops".to_vec(),
            },
            key_commits: Vec::new(),
            revocation: Revocation {
                entries: vec![RevocationEntry {
                    kind: RevocationKind::Tenant,
                    value: "acme".into(),
                    tenant_id: Some("acme".into()),
                    revoked_at: at,
                    drop_after: UnixMillis(T0 + 24 * HOUR),
                }],
                effects: vec![RevocationEffect::Tenant(TenantId::new("acme").unwrap())],
                audit: vec![audit(AuditAction::RevokeTenant, "acme")],
                at,
            },
        })
        .await
        .unwrap();
    let EmergencyCommitted::Applied { deactivated, .. } = committed else {
        panic!("applied: {committed:?}");
    };
    assert_eq!(
        deactivated,
        DeactivatedCredentials {
            api_keys: 2,
            service_tokens: 1,
            webhook_tokens: 1,
        }
    );
    for (key_id, state) in [
        ("k-active", ApiKeyState::Revoked),
        ("k-rotated", ApiKeyState::Revoked),
        ("k-expired", ApiKeyState::Expired),
        ("k-other", ApiKeyState::Active),
    ] {
        let record = fixture.api_keys.api_key(key_id).await.unwrap().unwrap();
        assert_eq!(record.state, state, "{key_id}");
    }
    for (id, state) in [
        ("s-acme", OpaqueTokenState::Revoked),
        ("w-acme", OpaqueTokenState::Revoked),
        ("s-globex", OpaqueTokenState::Active),
        ("w-globex", OpaqueTokenState::Active),
    ] {
        assert_eq!(state_of(fixture, id).await, state, "{id}");
    }
    let newest = fixture.store.audit_page(None, 1).await.unwrap();
    assert_eq!(newest[0].entry.action, "revoke.tenant");
    assert!(
        newest[0]
            .entry
            .reason
            .ends_with("deactivated 2 api keys, 1 service tokens, 1 webhook tokens"),
        "{:?}",
        newest[0].entry.reason
    );
}
