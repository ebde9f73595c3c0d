//! The key cases every backend runs: round trips, generations and racing commits. Each case takes a fresh fixture.

use std::sync::Arc;

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::keys::KeySetName;
use tessera_issuer::store::{KeyWrite, Store, StoreError};

use super::fixture::{
    Fixture, assert_chain, audit_entry, bare_key, commit, full_key, tagged_change,
};

/// Keys come back exactly as written: every schedule field, the wrapped key or its
/// absence; updates replace them; unknown updates and duplicate inserts are refused.
pub async fn key_round_trip_keeps_every_field(fixture: &Fixture) {
    let store = &fixture.store;
    let empty = store.key_set(KeySetName::Access).await.unwrap();
    assert_eq!((empty.generation, empty.keys.len()), (0, 0));

    let full = full_key("k-full", KeySetName::Access, 1_000);
    let bare = bare_key("k-bare", KeySetName::Access, 2_000);
    store
        .commit_keys(commit(
            KeySetName::Access,
            0,
            vec![
                KeyWrite::Insert(bare.clone()),
                KeyWrite::Insert(full.clone()),
            ],
            vec![],
            vec![],
        ))
        .await
        .unwrap();
    let state = store.key_set(KeySetName::Access).await.unwrap();
    assert_eq!(state.generation, 1);
    assert_eq!(
        state.keys,
        vec![full.clone(), bare.clone()],
        "oldest first, every field"
    );
    let other_set = store.key_set(KeySetName::Action).await.unwrap();
    assert_eq!((other_set.generation, other_set.keys.len()), (0, 0));

    // A retiring key drops its private key and gains a schedule end.
    let mut retired = full.clone();
    retired.wrapped_private = None;
    retired.schedule.revoked_at = None;
    retired.schedule.verify_until = Some(UnixMillis(99_999_999));
    let mut activated = bare.clone();
    activated.schedule.deactivates_at = Some(UnixMillis(5_000));
    activated.schedule.verify_until = Some(UnixMillis(6_000));
    store
        .commit_keys(commit(
            KeySetName::Access,
            1,
            vec![
                KeyWrite::Update(retired.clone()),
                KeyWrite::Update(activated.clone()),
            ],
            vec![],
            vec![],
        ))
        .await
        .unwrap();
    let state = store.key_set(KeySetName::Access).await.unwrap();
    assert_eq!(state.generation, 2);
    assert_eq!(state.keys, vec![retired.clone(), activated.clone()]);

    let unknown = bare_key("k-unknown", KeySetName::Access, 3_000);
    let result = store
        .commit_keys(commit(
            KeySetName::Access,
            2,
            vec![KeyWrite::Update(unknown)],
            vec![],
            vec![],
        ))
        .await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    let duplicate = full_key("k-full", KeySetName::Access, 4_000);
    let result = store
        .commit_keys(commit(
            KeySetName::Access,
            2,
            vec![KeyWrite::Insert(duplicate)],
            vec![],
            vec![],
        ))
        .await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists)),
        "{result:?}"
    );
    let state = store.key_set(KeySetName::Access).await.unwrap();
    assert_eq!(
        state.generation, 2,
        "failed commits do not bump the generation"
    );
    assert_eq!(state.keys, vec![retired, activated]);
}

/// A commit bumps the generation and writes keys, events and audit entries together; a
/// stale generation is a conflict that writes nothing at all.
pub async fn commit_keys_bumps_generation_and_refuses_a_stale_one(fixture: &Fixture) {
    let store = &fixture.store;
    let first = full_key("k1", KeySetName::Action, 1_000);
    let revision = store
        .commit_keys(commit(
            KeySetName::Action,
            0,
            vec![KeyWrite::Insert(first.clone())],
            vec![
                BundleChange::KeyUpserted {
                    key: first.schedule.clone(),
                },
                tagged_change("policy-1"),
            ],
            vec![audit_entry(1), audit_entry(2)],
        ))
        .await
        .unwrap();
    assert_eq!(store.latest_revision().await.unwrap(), revision);
    let events = store.events_after(Revision(0), 100).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].revision, revision,
        "returns the last event's revision"
    );
    assert_eq!(events[0].revision.0 + 1, revision.0);
    assert_eq!(
        events[0].change,
        BundleChange::KeyUpserted {
            key: first.schedule.clone()
        }
    );
    assert_eq!(events[0].at, UnixMillis(1_700_000_000_000));

    for stale_generation in [0, 5] {
        let second = bare_key("k2", KeySetName::Action, 2_000);
        let result = store
            .commit_keys(commit(
                KeySetName::Action,
                stale_generation,
                vec![KeyWrite::Insert(second.clone())],
                vec![BundleChange::KeyUpserted {
                    key: second.schedule.clone(),
                }],
                vec![audit_entry(3)],
            ))
            .await;
        assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    }
    let state = store.key_set(KeySetName::Action).await.unwrap();
    assert_eq!(state.generation, 1);
    assert_eq!(state.keys, vec![first]);
    assert_eq!(
        store.latest_revision().await.unwrap(),
        revision,
        "no event written"
    );
    let audit = store.audit_after(0, 100).await.unwrap();
    assert_eq!(audit.len(), 2, "no audit entry written");
    assert_eq!(audit[0].entry, audit_entry(1).stored());
    assert_eq!(audit[1].entry, audit_entry(2).stored());
    assert_chain(&audit);

    // A commit without changes still bumps the generation and reports the current revision.
    let unchanged = store
        .commit_keys(commit(
            KeySetName::Action,
            1,
            vec![],
            vec![],
            vec![audit_entry(4)],
        ))
        .await
        .unwrap();
    assert_eq!(unchanged, revision);
    assert_eq!(
        store.key_set(KeySetName::Action).await.unwrap().generation,
        2
    );
    assert_chain(&store.audit_after(0, 100).await.unwrap());
}

/// Of several commits expecting one generation, from two handles at once, exactly one
/// succeeds; the others conflict and leave nothing behind.
pub async fn concurrent_commits_with_one_generation_let_exactly_one_win(fixture: &Fixture) {
    let replica = fixture.open_replica().await;
    let handles: [Arc<dyn Store>; 2] = [Arc::clone(&fixture.store), replica];
    // Round 0 races on a key set with no row yet; round 1 on an existing row.
    for (round, generation) in [(0_usize, 0_i64), (1, 1)] {
        let mut tasks = Vec::new();
        for contender in 0..4_usize {
            let store = Arc::clone(&handles[contender % 2]);
            let key = bare_key(&format!("k-{round}-{contender}"), KeySetName::Access, 1_000);
            tasks.push(tokio::spawn(async move {
                let outcome = store
                    .commit_keys(commit(
                        KeySetName::Access,
                        generation,
                        vec![KeyWrite::Insert(key.clone())],
                        vec![BundleChange::KeyUpserted {
                            key: key.schedule.clone(),
                        }],
                        vec![audit_entry(contender as u64)],
                    ))
                    .await;
                (key.schedule.kid, outcome)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (kid, outcome) = task.await.unwrap();
            match outcome {
                Ok(_) => winners.push(kid),
                Err(StoreError::Conflict) => {}
                Err(other) => panic!("a losing commit must conflict, got {other:?}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one commit wins: {winners:?}"
        );
        let state = fixture.store.key_set(KeySetName::Access).await.unwrap();
        assert_eq!(state.generation, generation + 1);
        assert_eq!(state.keys.len(), round + 1);
        assert!(state.keys.iter().any(|key| key.schedule.kid == winners[0]));
        let n_events = fixture
            .store
            .events_after(Revision(0), 100)
            .await
            .unwrap()
            .len();
        assert_eq!(n_events, round + 1, "only the winner's event");
        let audit = fixture.store.audit_after(0, 100).await.unwrap();
        assert_eq!(audit.len(), round + 1, "only the winner's audit entry");
        assert_chain(&audit);
    }
}
