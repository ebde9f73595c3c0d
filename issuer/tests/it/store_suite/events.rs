//! The event-log cases every backend runs: revisions, paging, pruning and the change signal. Each case takes a fresh fixture.

use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::ids::KeyId;
use tessera_common::keys::KeySetName;
use tessera_issuer::store::KeyWrite;

use super::fixture::{
    Fixture, bare_key, commit, drain, full_key, notified_within, revocation_change, tagged_change,
};

/// Appended changes get consecutive, increasing revisions and come back in order with
/// their payloads; `limit` and `after` page through them.
pub async fn events_get_consecutive_revisions_in_order(fixture: &Fixture) {
    let store = &fixture.store;
    assert_eq!(store.latest_revision().await.unwrap(), Revision(0));
    assert!(
        store
            .events_after(Revision(0), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let key = full_key("k1", KeySetName::Access, 1_000);
    let first_batch = vec![
        BundleChange::KeyUpserted {
            key: key.schedule.clone(),
        },
        revocation_change("session-1", 5_000),
        BundleChange::KeyUnpublished {
            kid: KeyId::new("k0").unwrap(),
        },
        BundleChange::KeyRevoked {
            key: key.schedule.clone(),
        },
    ];
    let last = store
        .append_events(first_batch.clone(), UnixMillis(42))
        .await
        .unwrap();
    assert!(last.0 >= first_batch.len() as u64);
    let events = store.events_after(Revision(0), 100).await.unwrap();
    assert_eq!(events.len(), first_batch.len());
    for (index, (event, change)) in events.iter().zip(&first_batch).enumerate() {
        assert_eq!(
            event.revision.0,
            last.0 - (first_batch.len() - 1 - index) as u64
        );
        assert_eq!(&event.change, change);
        assert_eq!(event.at, UnixMillis(42));
    }

    let next = store
        .append_events(vec![tagged_change("second")], UnixMillis(43))
        .await
        .unwrap();
    assert_eq!(next.0, last.0 + 1);
    let after_last = store.events_after(last, 100).await.unwrap();
    assert_eq!(after_last.len(), 1);
    assert_eq!(after_last[0].revision, next);
    assert_eq!(after_last[0].change, tagged_change("second"));

    let limited = store.events_after(Revision(0), 2).await.unwrap();
    assert_eq!(
        limited
            .iter()
            .map(|event| event.revision)
            .collect::<Vec<_>>(),
        vec![events[0].revision, events[1].revision]
    );
    assert!(store.events_after(next, 10).await.unwrap().is_empty());
    assert!(
        store
            .events_after(Revision(u64::MAX), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let nothing = store.append_events(vec![], UnixMillis(44)).await.unwrap();
    assert_eq!(
        nothing, next,
        "an empty append reports the current revision"
    );
    assert_eq!(store.latest_revision().await.unwrap(), next);
}

/// The newest and oldest revisions follow appends and pruning, and pruning never lets a
/// revision be handed out twice.
pub async fn latest_and_oldest_revisions_follow_appends_and_pruning(fixture: &Fixture) {
    let store = &fixture.store;
    assert_eq!(store.oldest_revision().await.unwrap(), Revision(0));
    let mut revisions = Vec::new();
    for n in 0..5 {
        let change = tagged_change(&format!("e{n}"));
        revisions.push(
            store
                .append_events(vec![change], UnixMillis(n))
                .await
                .unwrap(),
        );
    }
    assert_eq!(store.oldest_revision().await.unwrap(), revisions[0]);
    assert_eq!(store.latest_revision().await.unwrap(), revisions[4]);

    assert_eq!(store.prune_events(revisions[2]).await.unwrap(), 2);
    assert_eq!(store.oldest_revision().await.unwrap(), revisions[2]);
    assert_eq!(store.latest_revision().await.unwrap(), revisions[4]);
    let kept: Vec<_> = store
        .events_after(Revision(0), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.revision)
        .collect();
    assert_eq!(kept, revisions[2..].to_vec());
    assert_eq!(store.prune_events(revisions[2]).await.unwrap(), 0);

    assert_eq!(
        store
            .prune_events(Revision(revisions[4].0 + 1))
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.oldest_revision().await.unwrap(), Revision(0));
    let after_empty = store
        .append_events(vec![tagged_change("after")], UnixMillis(9))
        .await
        .unwrap();
    assert!(
        after_empty > revisions[4],
        "revisions are never reused: {after_empty:?}"
    );
}

/// The change signal fires after a local commit that appended events.
pub async fn change_signal_fires_after_a_local_commit(fixture: &Fixture) {
    let store = &fixture.store;
    let signal = store.change_signal();
    assert!(
        !notified_within(&signal, Duration::from_millis(200)).await,
        "no wake-up before any commit"
    );
    store
        .append_events(vec![tagged_change("one")], UnixMillis(1))
        .await
        .unwrap();
    assert!(
        notified_within(&signal, Duration::from_secs(2)).await,
        "append_events"
    );

    // A backend may wake twice for one commit (PostgreSQL: directly and via NOTIFY).
    drain(&signal, Duration::from_millis(300)).await;
    let key = bare_key("k1", KeySetName::Access, 1);
    store
        .commit_keys(commit(
            KeySetName::Access,
            0,
            vec![KeyWrite::Insert(key.clone())],
            vec![BundleChange::KeyUpserted { key: key.schedule }],
            vec![],
        ))
        .await
        .unwrap();
    assert!(
        notified_within(&signal, Duration::from_secs(2)).await,
        "commit_keys"
    );
}
