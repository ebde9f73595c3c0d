//! OTP and magic-link challenges, provider states and one-time rate windows: a record
//! reads back as written and only for its tenant; attempts are counted up to the limit
//! and no further, exactly once under concurrency through two stores (two connections to
//! the SQLite file; two replicas' pools on PostgreSQL); one verification wins; windows
//! are charged exactly once per call across two stores and restart when they end;
//! emergency invalidation per tenant and globally; pruning — the same on both backends.

use std::collections::BTreeSet;
use std::sync::Arc;

use tessera_common::UnixMillis;
use tessera_common::credential::PepperVersion;
use tessera_common::ids::TenantId;
use tessera_issuer::audit::AuditAction;
use tessera_issuer::challenges::{ChallengeId, ChallengeMethod};
use tessera_issuer::store::challenges::{
    AttemptCount, ChallengeRecord, ChallengeStore, WindowCharge,
};

use super::api_keys::audit;
use super::fixture::Fixture;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("tenant id")
}

fn record(tenant_id: &str, expires_in: i64) -> ChallengeRecord {
    ChallengeRecord {
        challenge_id: ChallengeId::generate(),
        tenant_id: tenant(tenant_id),
        user_id: "user-1".into(),
        method: ChallengeMethod::OtpSms,
        code_hash: vec![0x5A; 32],
        pepper_version: PepperVersion::new(2).unwrap(),
        attempts: 0,
        max_attempts: 5,
        created_at: UnixMillis(T0),
        expires_at: UnixMillis(T0 + expires_in),
        verified_at: None,
        invalidated_at: None,
    }
}

async fn insert(store: &Arc<dyn ChallengeStore>, record: &ChallengeRecord) {
    store
        .insert_challenge(
            record.clone(),
            audit(AuditAction::ChallengeStart, record.challenge_id.as_str()),
        )
        .await
        .expect("insert challenge");
}

/// Round trip (another tenant sees nothing), five attempts counted then none, one
/// verification, expiry, and the audit entries of the writes.
pub async fn challenges_round_trip_count_attempts_and_verify_once(fixture: &Fixture) {
    let store = fixture.open_challenge_replica().await;
    let written = record("acme", 5 * MINUTE);
    insert(&store, &written).await;
    let id = &written.challenge_id;
    assert_eq!(
        store.challenge(&tenant("acme"), id).await.unwrap(),
        Some(written.clone())
    );
    assert_eq!(store.challenge(&tenant("globex"), id).await.unwrap(), None);
    assert_eq!(
        store
            .count_attempt(&tenant("globex"), id, UnixMillis(T0))
            .await
            .unwrap(),
        AttemptCount::NotFound,
        "another tenant's attempt finds nothing and counts nothing"
    );
    for n in 1..=5 {
        match store
            .count_attempt(&tenant("acme"), id, UnixMillis(T0 + n))
            .await
            .unwrap()
        {
            AttemptCount::Counted(counted) => assert_eq!(counted.attempts, n as u32),
            other => panic!("attempt {n}: {other:?}"),
        }
    }
    match store
        .count_attempt(&tenant("acme"), id, UnixMillis(T0 + 6))
        .await
        .unwrap()
    {
        AttemptCount::NotLive(dead) => assert_eq!(dead.attempts, 5),
        other => panic!("a sixth attempt: {other:?}"),
    }
    // Verification is independent of the count (the fifth attempt may be the right one)
    // and happens once.
    let verified = |n| Some(audit(AuditAction::ChallengeVerified, &format!("{id}-{n}")));
    assert!(
        store
            .mark_verified(&tenant("acme"), id, UnixMillis(T0 + 7), verified(1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_verified(&tenant("acme"), id, UnixMillis(T0 + 8), verified(2))
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_verified(&tenant("globex"), id, UnixMillis(T0 + 8), verified(3))
            .await
            .unwrap()
    );
    let after = store.challenge(&tenant("acme"), id).await.unwrap().unwrap();
    assert_eq!(after.verified_at, Some(UnixMillis(T0 + 7)));

    // An expired challenge counts nothing.
    let short = record("acme", 10);
    insert(&store, &short).await;
    assert!(matches!(
        store
            .count_attempt(&tenant("acme"), &short.challenge_id, UnixMillis(T0 + 10))
            .await
            .unwrap(),
        AttemptCount::NotLive(_)
    ));

    let mut page = fixture.store.audit_page(None, 100).await.unwrap();
    page.reverse();
    let actions: Vec<String> = page.into_iter().map(|r| r.entry.action).collect();
    assert_eq!(
        actions,
        ["challenge.start", "challenge.verified", "challenge.start"],
        "refused verifications write no audit entry"
    );
}

/// 40 concurrent attempts on one challenge, half through a second store: exactly 5 are
/// counted; then 20 concurrent right answers: exactly one verifies.
pub async fn concurrent_attempts_from_two_stores_count_exactly_the_limit(fixture: &Fixture) {
    let first = fixture.open_challenge_replica().await;
    let second = fixture.open_challenge_replica().await;
    let written = record("acme", 5 * MINUTE);
    insert(&first, &written).await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let id = written.challenge_id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .count_attempt(&tenant("acme"), &id, UnixMillis(T0 + 1))
                .await
                .unwrap()
        }));
    }
    let mut counted = BTreeSet::new();
    for task in tasks {
        if let AttemptCount::Counted(record) = task.await.unwrap() {
            assert!(
                counted.insert(record.attempts),
                "an attempt number counted twice"
            );
        }
    }
    assert_eq!(counted, (1..=5).collect::<BTreeSet<u32>>());

    let other = record("acme", 5 * MINUTE);
    insert(&first, &other).await;
    let mut tasks = Vec::new();
    for n in 0..20 {
        let store = if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let id = other.challenge_id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .mark_verified(
                    &tenant("acme"),
                    &id,
                    UnixMillis(T0 + 2),
                    Some(audit(AuditAction::ChallengeVerified, id.as_str())),
                )
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one verification wins");
}

/// A window counts each call once, restarts when it ends, keeps buckets apart, and 100
/// concurrent charges of one bucket through two stores count 1..=100 exactly once.
pub async fn rate_windows_charge_each_call_once_and_restart(fixture: &Fixture) {
    let first = fixture.open_challenge_replica().await;
    let second = fixture.open_challenge_replica().await;
    let charge = |bucket: &str, start: i64| WindowCharge {
        bucket: bucket.to_owned(),
        window_start: UnixMillis(start),
        window_end: UnixMillis(start + MINUTE),
    };
    let both = [
        charge("a\u{1f}ip\u{1f}x", T0),
        charge("a\u{1f}user\u{1f}t\u{1f}u", T0),
    ];
    for n in 1..=3u64 {
        let counts = first.charge_windows(&both).await.unwrap();
        assert_eq!(counts.len(), 2);
        assert!(counts.iter().all(|count| count.used == n));
        assert_eq!(counts[0].bucket, both[0].bucket);
        assert_eq!(counts[0].window_end, UnixMillis(T0 + MINUTE));
    }
    // The next window restarts at 1; an older window's charge (a replica whose clock is
    // behind) still counts in the current one.
    let next = first
        .charge_windows(&[charge("a\u{1f}ip\u{1f}x", T0 + MINUTE)])
        .await
        .unwrap();
    assert_eq!(
        (next[0].used, next[0].window_end),
        (1, UnixMillis(T0 + 2 * MINUTE))
    );
    let late = second
        .charge_windows(&[charge("a\u{1f}ip\u{1f}x", T0)])
        .await
        .unwrap();
    assert_eq!(
        (late[0].used, late[0].window_end),
        (2, UnixMillis(T0 + 2 * MINUTE))
    );

    let mut tasks = Vec::new();
    for n in 0..100 {
        let store = if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            store.charge_windows(&[charge("hot", T0)]).await.unwrap()[0].used
        }));
    }
    let mut seen = BTreeSet::new();
    for task in tasks {
        assert!(
            seen.insert(task.await.unwrap()),
            "a count was handed out twice"
        );
    }
    assert_eq!(seen, (1..=100).collect::<BTreeSet<u64>>());
}

/// Emergency invalidation of one tenant, then of all; pruning by expiry (challenges and
/// ended windows); provider states persisted and read back.
pub async fn invalidation_pruning_and_provider_states(fixture: &Fixture) {
    let store = fixture.open_challenge_replica().await;
    let acme = record("acme", 5 * MINUTE);
    let acme_done = record("acme", 5 * MINUTE);
    let globex = record("globex", 5 * MINUTE);
    for written in [&acme, &acme_done, &globex] {
        insert(&store, written).await;
    }
    assert!(
        store
            .mark_verified(
                &tenant("acme"),
                &acme_done.challenge_id,
                UnixMillis(T0 + 1),
                None,
            )
            .await
            .unwrap()
    );
    let invalidate = |at| audit(AuditAction::ChallengeEmergencyInvalidate, at);
    assert_eq!(
        store
            .invalidate_challenges(
                Some(&tenant("acme")),
                UnixMillis(T0 + 2),
                invalidate("acme")
            )
            .await
            .unwrap(),
        1,
        "only the live challenge of acme"
    );
    match store
        .count_attempt(&tenant("acme"), &acme.challenge_id, UnixMillis(T0 + 3))
        .await
        .unwrap()
    {
        AttemptCount::NotLive(dead) => assert_eq!(dead.invalidated_at, Some(UnixMillis(T0 + 2))),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .invalidate_challenges(None, UnixMillis(T0 + 4), invalidate("*"))
            .await
            .unwrap(),
        1,
        "globex's"
    );

    store
        .charge_windows(&[WindowCharge {
            bucket: "old".into(),
            window_start: UnixMillis(T0),
            window_end: UnixMillis(T0 + MINUTE),
        }])
        .await
        .unwrap();
    assert_eq!(
        store
            .prune_challenges(UnixMillis(T0 + 5 * MINUTE), UnixMillis(T0 + 2 * MINUTE))
            .await
            .unwrap(),
        0,
        "nothing expired before the cut"
    );
    let fresh = record("acme", 10 * MINUTE);
    insert(&store, &fresh).await;
    assert_eq!(
        store
            .prune_challenges(UnixMillis(T0 + 5 * MINUTE + 1), UnixMillis(T0 + 2 * MINUTE))
            .await
            .unwrap(),
        3
    );
    assert!(
        store
            .challenge(&tenant("acme"), &fresh.challenge_id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .challenge(&tenant("acme"), &acme.challenge_id)
            .await
            .unwrap()
            .is_none()
    );
    let restarted = store
        .charge_windows(&[WindowCharge {
            bucket: "old".into(),
            window_start: UnixMillis(T0),
            window_end: UnixMillis(T0 + MINUTE),
        }])
        .await
        .unwrap();
    assert_eq!(restarted[0].used, 1, "the ended window's row was deleted");

    assert!(store.provider_states().await.unwrap().is_empty());
    store
        .set_provider_enabled(
            "sms",
            false,
            UnixMillis(T0),
            audit(AuditAction::ProviderDisable, "sms"),
        )
        .await
        .unwrap();
    store
        .set_provider_enabled(
            "mail",
            false,
            UnixMillis(T0),
            audit(AuditAction::ProviderDisable, "mail"),
        )
        .await
        .unwrap();
    store
        .set_provider_enabled(
            "mail",
            true,
            UnixMillis(T0 + 1),
            audit(AuditAction::ProviderEnable, "mail"),
        )
        .await
        .unwrap();
    let states: Vec<(String, bool, i64)> = fixture
        .open_challenge_replica()
        .await
        .provider_states()
        .await
        .unwrap()
        .into_iter()
        .map(|state| (state.name, state.enabled, state.changed_at.0))
        .collect();
    assert_eq!(
        states,
        [
            ("mail".to_owned(), true, T0 + 1),
            ("sms".to_owned(), false, T0)
        ]
    );
}
