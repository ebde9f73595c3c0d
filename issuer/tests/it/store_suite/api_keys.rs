//! API keys (`tbk_`): records round-trip, listing by tenant, conditional rotation,
//! revocation, the `expiring` mark and expiry (each once), batched usage — the same on
//! both backends, and on PostgreSQL across two replicas.

use std::sync::Arc;

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, CredentialChange, Revision, StandingKind};
use tessera_common::credential::PepperVersion;
use tessera_common::ids::{ClientId, TenantId};
use tessera_issuer::api_keys::ratelimit::RateLimits;
use tessera_issuer::audit::{Actor, AuditAction};
use tessera_issuer::store::{
    ApiKeyRecord, ApiKeyState, ApiKeyStore, ApiKeyUsage, AuditEntry, StoreError,
};

use super::fixture::Fixture;

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 24 * 3600 * 1000;

pub(super) fn key(key_id: &str, tenant: &str, created_at: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: key_id.to_owned(),
        tenant_id: TenantId::new(tenant).unwrap(),
        name: format!("{key_id} name"),
        permissions: vec!["invoices:read".into(), "invoices:write".into()],
        role: "billing".into(),
        secret_hash: vec![7; 32],
        pepper_version: PepperVersion::FIRST,
        created_at: UnixMillis(created_at),
        expires_at: UnixMillis(created_at + 90 * DAY),
        state: ApiKeyState::Active,
        state_at: None,
        predecessor_id: None,
        successor_id: None,
        grace_until: None,
        expiring_at: None,
        last_used_at: None,
        usage_count: 0,
        rate_limits: RateLimits {
            per_minute: 7,
            per_hour: 70,
            per_day: 700,
        },
    }
}

pub(super) fn audit(action: AuditAction, target: &str) -> AuditEntry {
    Actor::client(ClientId::new("ops").unwrap(), "req".into(), String::new()).entry(
        UnixMillis(T0),
        action,
        target,
    )
}

pub(super) fn change(key_id: &str, state: &str) -> CredentialChange {
    CredentialChange {
        kind: StandingKind::ApiKey,
        credential_id: key_id.to_owned(),
        tenant_id: "acme".into(),
        state: state.to_owned(),
        grace_until: None,
        expires_at: UnixMillis(T0 + 90 * DAY),
    }
}

/// The API-key events in the log, as (key id, state).
async fn api_key_events(fixture: &Fixture) -> Vec<(String, String)> {
    fixture
        .store
        .events_after(Revision(0), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|event| match event.change {
            BundleChange::CredentialChanged { change } => {
                Some((change.credential_id, change.state))
            }
            _ => None,
        })
        .collect()
}

async fn audit_actions(fixture: &Fixture) -> Vec<String> {
    let mut page = fixture.store.audit_page(None, 1000).await.unwrap();
    page.reverse();
    page.into_iter().map(|record| record.entry.action).collect()
}

/// Every field survives; list is per tenant (or all), oldest first; a duplicate id is
/// `AlreadyExists`; each insert writes its audit entry.
pub async fn api_keys_round_trip_and_list_by_tenant(fixture: &Fixture) {
    let store = &fixture.api_keys;
    let mut first = key("KeyA1", "acme", T0);
    first.predecessor_id = Some("Older".into());
    first.expiring_at = Some(UnixMillis(T0 + 5));
    store
        .insert_api_key(first.clone(), audit(AuditAction::ApiKeyCreate, "a1"))
        .await
        .unwrap();
    store
        .insert_api_key(
            key("KeyA2", "acme", T0 + 1),
            audit(AuditAction::ApiKeyCreate, "a2"),
        )
        .await
        .unwrap();
    store
        .insert_api_key(
            key("KeyB1", "globex", T0 + 2),
            audit(AuditAction::ApiKeyCreate, "b1"),
        )
        .await
        .unwrap();
    assert_eq!(store.api_key("KeyA1").await.unwrap(), Some(first));
    assert_eq!(store.api_key("nope").await.unwrap(), None);
    let acme = TenantId::new("acme").unwrap();
    let ids = |records: Vec<ApiKeyRecord>| -> Vec<String> {
        records.into_iter().map(|record| record.key_id).collect()
    };
    assert_eq!(
        ids(store.list_api_keys(Some(&acme)).await.unwrap()),
        ["KeyA1", "KeyA2"]
    );
    assert_eq!(
        ids(store.list_api_keys(None).await.unwrap()),
        ["KeyA1", "KeyA2", "KeyB1"]
    );
    let duplicate = store
        .insert_api_key(
            key("KeyA1", "globex", T0),
            audit(AuditAction::ApiKeyCreate, "dup"),
        )
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists)),
        "{duplicate:?}"
    );
    assert_eq!(audit_actions(fixture).await, ["apikey.create"; 3]);
}

/// A rotation marks the old key (successor, grace end, state instant) and inserts the
/// successor with its audit entry; a second rotation of the same key writes nothing.
pub async fn api_key_rotation_is_conditional(fixture: &Fixture) {
    let store = &fixture.api_keys;
    store
        .insert_api_key(
            key("Old", "acme", T0),
            audit(AuditAction::ApiKeyCreate, "old"),
        )
        .await
        .unwrap();
    let mut successor = key("New", "acme", T0 + DAY);
    successor.predecessor_id = Some("Old".into());
    let grace_until = UnixMillis(T0 + 2 * DAY);
    assert!(
        store
            .rotate_api_key(
                "Old",
                successor.clone(),
                grace_until,
                audit(AuditAction::ApiKeyRotate, "old"),
                change("old", "rotated")
            )
            .await
            .unwrap()
    );
    let old = store.api_key("Old").await.unwrap().unwrap();
    assert_eq!(old.state, ApiKeyState::Rotated);
    assert_eq!(old.successor_id.as_deref(), Some("New"));
    assert_eq!(old.grace_until, Some(grace_until));
    assert_eq!(old.state_at, Some(UnixMillis(T0 + DAY)));
    assert_eq!(store.api_key("New").await.unwrap(), Some(successor));

    let again = key("Newer", "acme", T0 + DAY);
    assert!(
        !store
            .rotate_api_key(
                "Old",
                again,
                grace_until,
                audit(AuditAction::ApiKeyRotate, "old"),
                change("old", "rotated")
            )
            .await
            .unwrap()
    );
    assert_eq!(store.api_key("Newer").await.unwrap(), None);
    assert_eq!(
        audit_actions(fixture).await,
        ["apikey.create", "apikey.rotate"]
    );
    assert_eq!(
        api_key_events(fixture).await,
        [("old".to_owned(), "rotated".to_owned())],
        "one event, with the state change"
    );
}

/// 50 concurrent rotations of one key, half through a second store (a second
/// connection to the SQLite file; a second replica on PostgreSQL): exactly one returns
/// true and exactly one successor exists.
pub async fn concurrent_api_key_rotations_make_exactly_one_successor(fixture: &Fixture) {
    fixture
        .api_keys
        .insert_api_key(
            key("Contested", "acme", T0),
            audit(AuditAction::ApiKeyCreate, "c"),
        )
        .await
        .unwrap();
    let replica = fixture.open_api_key_replica().await;
    let stores: [Arc<dyn ApiKeyStore>; 2] = [Arc::clone(&fixture.api_keys), replica];
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for attempt in 0..50 {
        let store = Arc::clone(&stores[attempt % 2]);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let mut successor = key(&format!("Successor{attempt}"), "acme", T0 + DAY);
            successor.predecessor_id = Some("Contested".into());
            barrier.wait().await;
            store
                .rotate_api_key(
                    "Contested",
                    successor,
                    UnixMillis(T0 + 2 * DAY),
                    audit(AuditAction::ApiKeyRotate, "c"),
                    change("c", "rotated"),
                )
                .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().expect("rotation answers") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one rotation wins");
    let successors: Vec<ApiKeyRecord> = fixture
        .api_keys
        .list_api_keys(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.predecessor_id.as_deref() == Some("Contested"))
        .collect();
    assert_eq!(successors.len(), 1, "{successors:?}");
    let old = fixture
        .api_keys
        .api_key("Contested")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.successor_id, Some(successors[0].key_id.clone()));
    let rotations = audit_actions(fixture)
        .await
        .into_iter()
        .filter(|action| action == "apikey.rotate")
        .count();
    assert_eq!(rotations, 1);
    assert_eq!(api_key_events(fixture).await.len(), 1);
}

/// Revocation applies to an active or rotated key once; a second revocation (or one of
/// an unknown id) writes nothing.
pub async fn api_key_revocation_is_conditional(fixture: &Fixture) {
    let store = &fixture.api_keys;
    store
        .insert_api_key(
            key("Live", "acme", T0),
            audit(AuditAction::ApiKeyCreate, "l"),
        )
        .await
        .unwrap();
    let at = UnixMillis(T0 + 10);
    assert!(
        store
            .revoke_api_key(
                "Live",
                at,
                audit(AuditAction::ApiKeyRevoke, "l"),
                change("l", "revoked")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_api_key(
                "Live",
                at,
                audit(AuditAction::ApiKeyRevoke, "l"),
                change("l", "revoked")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_api_key(
                "Ghost",
                at,
                audit(AuditAction::ApiKeyRevoke, "g"),
                change("g", "revoked")
            )
            .await
            .unwrap()
    );
    let live = store.api_key("Live").await.unwrap().unwrap();
    assert_eq!(
        (live.state, live.state_at),
        (ApiKeyState::Revoked, Some(at))
    );
    // A revoked key can be neither rotated, marked expiring nor expired.
    assert!(
        !store
            .rotate_api_key(
                "Live",
                key("S", "acme", T0),
                at,
                audit(AuditAction::ApiKeyRotate, "l"),
                change("l", "rotated")
            )
            .await
            .unwrap()
    );
    let late = UnixMillis(T0 + 100 * DAY);
    assert!(
        !store
            .expire_api_key(
                "Live",
                late,
                audit(AuditAction::ApiKeyExpire, "l"),
                change("l", "expired")
            )
            .await
            .unwrap()
    );
    assert_eq!(
        audit_actions(fixture).await,
        ["apikey.create", "apikey.revoke"]
    );
    assert_eq!(
        api_key_events(fixture).await,
        [("l".to_owned(), "revoked".to_owned())]
    );
}

/// The scheduler's candidates are the active keys expiring by a horizon; the `expiring`
/// mark and the expiry each apply once, expiry only once the key is due.
pub async fn api_key_expiring_and_expiry_happen_once(fixture: &Fixture) {
    let store = &fixture.api_keys;
    // Expires at T0 + 90 days.
    store
        .insert_api_key(
            key("Soon", "acme", T0),
            audit(AuditAction::ApiKeyCreate, "s"),
        )
        .await
        .unwrap();
    store
        .insert_api_key(
            key("Later", "acme", T0 + 30 * DAY),
            audit(AuditAction::ApiKeyCreate, "l"),
        )
        .await
        .unwrap();
    let week_before = UnixMillis(T0 + 83 * DAY);
    let due: Vec<String> = store
        .api_keys_expiring_by(week_before.plus(std::time::Duration::from_secs(7 * 24 * 3600)))
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.key_id)
        .collect();
    assert_eq!(due, ["Soon"]);
    let mark = || audit(AuditAction::ApiKeyExpiring, "s");
    assert!(
        store
            .mark_api_key_expiring("Soon", week_before, mark(), change("Soon", "expiring"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_api_key_expiring("Soon", week_before, mark(), change("Soon", "expiring"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.api_key("Soon").await.unwrap().unwrap().expiring_at,
        Some(week_before)
    );
    let expire = || audit(AuditAction::ApiKeyExpire, "s");
    assert!(
        !store
            .expire_api_key("Soon", week_before, expire(), change("Soon", "expired"))
            .await
            .unwrap(),
        "not due yet"
    );
    let after = UnixMillis(T0 + 90 * DAY);
    assert!(
        store
            .expire_api_key("Soon", after, expire(), change("Soon", "expired"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .expire_api_key("Soon", after, expire(), change("Soon", "expired"))
            .await
            .unwrap()
    );
    let soon = store.api_key("Soon").await.unwrap().unwrap();
    assert_eq!(
        (soon.state, soon.state_at),
        (ApiKeyState::Expired, Some(after))
    );
    assert!(store.api_keys_expiring_by(after).await.unwrap().is_empty());
    assert_eq!(
        audit_actions(fixture).await,
        [
            "apikey.create",
            "apikey.create",
            "apikey.expiring",
            "apikey.expire"
        ]
    );
}

/// A usage batch adds to the counts and keeps the latest use, in one call; unknown ids
/// are ignored.
pub async fn api_key_usage_batches_add_up(fixture: &Fixture) {
    let store = &fixture.api_keys;
    for id in ["U1", "U2"] {
        store
            .insert_api_key(key(id, "acme", T0), audit(AuditAction::ApiKeyCreate, id))
            .await
            .unwrap();
    }
    let use_ = |key_id: &str, count, at| ApiKeyUsage {
        key_id: key_id.to_owned(),
        count,
        last_used_at: UnixMillis(at),
    };
    store
        .record_api_key_usage(vec![
            use_("U1", 3, T0 + 50),
            use_("U2", 1, T0 + 10),
            use_("Ghost", 9, T0),
        ])
        .await
        .unwrap();
    store
        .record_api_key_usage(vec![use_("U1", 2, T0 + 20)])
        .await
        .unwrap();
    store.record_api_key_usage(Vec::new()).await.unwrap();
    let u1 = store.api_key("U1").await.unwrap().unwrap();
    let u2 = store.api_key("U2").await.unwrap().unwrap();
    assert_eq!(
        (u1.usage_count, u1.last_used_at),
        (5, Some(UnixMillis(T0 + 50)))
    );
    assert_eq!(
        (u2.usage_count, u2.last_used_at),
        (1, Some(UnixMillis(T0 + 10)))
    );
    assert_eq!(store.api_key("Ghost").await.unwrap(), None);

    // A batch larger than one SQLite statement's parameters holds still adds up.
    let mut large: Vec<ApiKeyUsage> = (0..12_000)
        .map(|i| use_(&format!("Ghost{i}"), 1, T0))
        .collect();
    large.push(use_("U2", 4, T0 + 99));
    store.record_api_key_usage(large).await.unwrap();
    let u2 = store.api_key("U2").await.unwrap().unwrap();
    assert_eq!(
        (u2.usage_count, u2.last_used_at),
        (5, Some(UnixMillis(T0 + 99)))
    );
}
