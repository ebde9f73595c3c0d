//! API-key rate-limit windows and leases: the arithmetic of a lease as stored, windows
//! restarting, concurrent leases through two stores (two connections to the SQLite file;
//! two replicas' pools on PostgreSQL) never charging past a limit, and limits replaced
//! only on a key that still works — the same on both backends.

use std::sync::Arc;

use tessera_common::UnixMillis;
use tessera_issuer::api_keys::ratelimit::{RateLimits, Window};
use tessera_issuer::audit::AuditAction;
use tessera_issuer::store::ApiKeyStore;

use super::api_keys::{audit, change, key};
use super::fixture::Fixture;

/// A minute boundary (2023-11-14T22:14:00Z), 10 s into its hour.
const T0: i64 = 1_700_000_040_000;
const MINUTE: i64 = 60_000;

const fn limits(per_minute: u32, per_hour: u32, per_day: u32) -> RateLimits {
    RateLimits {
        per_minute,
        per_hour,
        per_day,
    }
}

/// A lease grants what every window has left and charges all three; the minute restarts
/// in the next minute while the hour keeps its count; `granted = 0` names the spent
/// window that ends last; keys are counted apart.
pub async fn leases_charge_every_window_and_a_new_window_restarts(fixture: &Fixture) {
    let store = &fixture.api_keys;
    let rules = limits(10, 12, 100);
    let now = UnixMillis(T0 + 1_500);
    let first = store.lease("K1", rules, 7, now).await.unwrap();
    assert_eq!(first.granted, 7);
    assert_eq!(first.valid_until, UnixMillis(T0 + MINUTE));
    assert_eq!(first.exhausted, None);
    let second = store.lease("K1", rules, 7, now).await.unwrap();
    assert_eq!(second.granted, 3, "the minute had 3 left");
    let refused = store.lease("K1", rules, 1, now).await.unwrap();
    assert_eq!(refused.granted, 0);
    let exhausted = refused.exhausted.expect("the minute is spent");
    assert_eq!(exhausted.window, Window::Minute);
    assert_eq!(exhausted.until, UnixMillis(T0 + MINUTE));
    assert_eq!(exhausted.retry_after_seconds(now), 59);
    // Another key has its own windows.
    assert_eq!(store.lease("K2", rules, 7, now).await.unwrap().granted, 7);

    // Exactly at the next minute: the minute restarts, the hour has 2 left.
    let next = UnixMillis(T0 + MINUTE);
    let third = store.lease("K1", rules, 7, next).await.unwrap();
    assert_eq!(third.granted, 2);
    assert_eq!(third.valid_until, UnixMillis(T0 + 2 * MINUTE));
    let refused = store.lease("K1", rules, 1, next).await.unwrap();
    let exhausted = refused.exhausted.expect("the hour is spent");
    assert_eq!(exhausted.window, Window::Hour);
    assert_eq!(exhausted.until, Window::Hour.end(next));
    // Wider limits apply to the counts already charged.
    let wider = store
        .lease("K1", limits(10, 20, 100), 7, next)
        .await
        .unwrap();
    assert_eq!(wider.granted, 7);
    // The next day starts every window afresh.
    let tomorrow = Window::Day.end(next);
    assert_eq!(
        store
            .lease("K1", rules, 10, tomorrow)
            .await
            .unwrap()
            .granted,
        10
    );
}

/// 60 concurrent leases of 5 admissions of one 100/min key, half through a second store:
/// exactly 100 are granted in all, and the next lease is refused.
pub async fn concurrent_leases_from_two_stores_never_charge_past_the_limit(fixture: &Fixture) {
    let replica = fixture.open_api_key_replica().await;
    let stores: [Arc<dyn ApiKeyStore>; 2] = [Arc::clone(&fixture.api_keys), replica];
    let barrier = Arc::new(tokio::sync::Barrier::new(60));
    let rules = RateLimits::default();
    let now = UnixMillis(T0 + 30_000);
    let mut tasks = Vec::new();
    for attempt in 0..60 {
        let store = Arc::clone(&stores[attempt % 2]);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.lease("Hot", rules, 5, now).await
        }));
    }
    let mut granted = 0;
    for task in tasks {
        let lease = task.await.unwrap().expect("lease answers");
        assert!(lease.granted <= 5);
        granted += lease.granted;
    }
    assert_eq!(granted, 100, "the whole minute and not one admission more");
    let after = stores[1].lease("Hot", rules, 1, now).await.unwrap();
    assert_eq!(after.granted, 0);
}

/// Limits are replaced (with their audit entry) on an active key and on a rotated key in
/// its grace; not on a revoked, expired or unknown key, nor a rotated one past its grace
/// (`false`, nothing written).
pub async fn rate_limits_are_replaced_only_on_a_working_key(fixture: &Fixture) {
    let store = &fixture.api_keys;
    let created_at = T0;
    store
        .insert_api_key(
            key("Live", "acme", created_at),
            audit(AuditAction::ApiKeyCreate, "live"),
        )
        .await
        .unwrap();
    let at = UnixMillis(created_at + 1_000);
    let new_limits = limits(3, 30, 300);
    assert!(
        store
            .set_api_key_rate_limits(
                "Live",
                new_limits,
                at,
                audit(AuditAction::ApiKeyLimits, "l")
            )
            .await
            .unwrap()
    );
    let stored = store.api_key("Live").await.unwrap().unwrap();
    assert_eq!(stored.rate_limits, new_limits);
    let audits = fixture.store.audit_page(None, 100).await.unwrap();
    assert_eq!(audits[0].entry.action, "apikey.limits");
    assert!(
        !store
            .set_api_key_rate_limits(
                "Nope",
                new_limits,
                at,
                audit(AuditAction::ApiKeyLimits, "n")
            )
            .await
            .unwrap()
    );

    // Rotated: changeable during its grace, not after.
    let mut successor = key("Next", "acme", created_at + 2_000);
    successor.predecessor_id = Some("Live".into());
    let grace_until = UnixMillis(created_at + 10_000);
    assert!(
        store
            .rotate_api_key(
                "Live",
                successor,
                grace_until,
                audit(AuditAction::ApiKeyRotate, "r"),
                change("Live", "rotated"),
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_api_key_rate_limits(
                "Live",
                limits(4, 40, 400),
                UnixMillis(created_at + 9_999),
                audit(AuditAction::ApiKeyLimits, "g")
            )
            .await
            .unwrap()
    );
    let n_audits = fixture.store.audit_page(None, 100).await.unwrap().len();
    assert!(
        !store
            .set_api_key_rate_limits(
                "Live",
                limits(5, 50, 500),
                grace_until,
                audit(AuditAction::ApiKeyLimits, "late")
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.api_key("Live").await.unwrap().unwrap().rate_limits,
        limits(4, 40, 400)
    );
    assert_eq!(
        fixture.store.audit_page(None, 100).await.unwrap().len(),
        n_audits,
        "a refused change writes no audit entry"
    );

    // Revoked, and past its expiry: refused.
    assert!(
        store
            .revoke_api_key(
                "Next",
                at,
                audit(AuditAction::ApiKeyRevoke, "v"),
                change("Next", "revoked")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_api_key_rate_limits(
                "Next",
                new_limits,
                at,
                audit(AuditAction::ApiKeyLimits, "x")
            )
            .await
            .unwrap()
    );
    store
        .insert_api_key(
            key("Old", "acme", created_at),
            audit(AuditAction::ApiKeyCreate, "old"),
        )
        .await
        .unwrap();
    let past_expiry = store.api_key("Old").await.unwrap().unwrap().expires_at;
    assert!(
        !store
            .set_api_key_rate_limits(
                "Old",
                new_limits,
                past_expiry,
                audit(AuditAction::ApiKeyLimits, "e")
            )
            .await
            .unwrap()
    );
}

/// A key row written before migration 5 (no limit columns given) reads back with the
/// seed's defaults, 100/min, 1,000/h, 10,000/day.
pub async fn a_key_written_without_limits_has_the_default_limits(fixture: &Fixture) {
    let hash = match fixture.backend() {
        "sqlite" => "x'07'",
        _ => "'\\x07'::bytea",
    };
    fixture
        .execute_raw(&format!(
            "INSERT INTO api_keys (key_id, tenant_id, name, permissions, role, secret_hash, \
             pepper_version, created_at, expires_at, state) VALUES \
             ('Legacy', 'acme', 'old key', '[]', '', {hash}, 1, {T0}, {}, 'active')",
            T0 + 90 * 24 * 3_600_000
        ))
        .await
        .expect("raw insert");
    let legacy = fixture.api_keys.api_key("Legacy").await.unwrap().unwrap();
    assert_eq!(legacy.rate_limits, RateLimits::default());
    assert_eq!(legacy.rate_limits, limits(100, 1_000, 10_000));
}
