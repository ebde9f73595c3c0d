//! Emergency commits and refused writes, on every backend: an incident is recorded in
//! the same transaction as its key rotations and revocation (all or nothing, once), and
//! each kind of refused write comes back as its own `StoreError`.

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::keys::KeySetName;
use tessera_common::revocation::{RevocationEntry, RevocationKind};
use tessera_issuer::store::{
    DeactivatedCredentials, EmergencyCommit, EmergencyCommitted, IncidentRecord, KeyWrite,
    Revocation, RevocationEffect, StoreError, StoredKey,
};

use super::fixture::{Fixture, audit_entry, commit, full_key};
use super::sessions::{T0, create, revoked_at_of, session, token};

const INCIDENT: &str = "incident/global/inc-1";

/// Seeds one signing key in each of access and action (generation 1 each) and one
/// session; returns the keys.
async fn seed(fixture: &Fixture) -> [StoredKey; 2] {
    let mut keys = Vec::new();
    for (kid, key_set) in [
        ("k-access", KeySetName::Access),
        ("k-action", KeySetName::Action),
    ] {
        let mut key = full_key(kid, key_set, T0);
        key.schedule.revoked_at = None;
        fixture
            .store
            .commit_keys(commit(
                key_set,
                0,
                vec![KeyWrite::Insert(key.clone())],
                vec![],
                vec![],
            ))
            .await
            .unwrap();
        keys.push(key);
    }
    create(&fixture.sessions, &session("s1", "acme", "alice"), 1).await;
    [keys[0].clone(), keys[1].clone()]
}

/// Revokes `key` (drops its private part) in a commit expecting `generation`.
fn revoking(key: &StoredKey, generation: i64) -> tessera_issuer::store::KeyCommit {
    let mut revoked = key.clone();
    revoked.schedule.revoked_at = Some(UnixMillis(T0 + 10));
    revoked.wrapped_private = None;
    commit(
        revoked.schedule.key_set,
        generation,
        vec![KeyWrite::Update(revoked.clone())],
        vec![BundleChange::KeyRevoked {
            key: revoked.schedule,
        }],
        vec![audit_entry(10)],
    )
}

fn emergency(key_commits: Vec<tessera_issuer::store::KeyCommit>) -> EmergencyCommit {
    EmergencyCommit {
        incident: IncidentRecord {
            name: INCIDENT.to_owned(),
            value: b"root req-1".to_vec(),
        },
        key_commits,
        revocation: Revocation {
            entries: vec![RevocationEntry {
                kind: RevocationKind::All,
                value: String::new(),
                tenant_id: None,
                revoked_at: UnixMillis(T0 + 10),
                drop_after: UnixMillis(T0 + 960_000),
            }],
            effects: vec![RevocationEffect::All],
            audit: vec![audit_entry(11)],
            at: UnixMillis(T0 + 10),
        },
    }
}

/// The incident record, both key sets' revocations, the `all` entry, the ended session,
/// their events and audit entries land together; the same incident again writes nothing.
pub async fn an_emergency_commit_records_its_incident_with_its_effects_once(fixture: &Fixture) {
    let [access, action] = seed(fixture).await;
    let before = fixture.store.latest_revision().await.unwrap();
    let committed = fixture
        .sessions
        .commit_emergency(emergency(vec![revoking(&access, 1), revoking(&action, 1)]))
        .await
        .unwrap();
    assert_eq!(
        committed,
        EmergencyCommitted::Applied {
            revision: Revision(before.0 + 3),
            n_sessions: 1,
            deactivated: DeactivatedCredentials::default(),
        }
    );
    assert_eq!(
        fixture.store.meta(INCIDENT).await.unwrap(),
        Some(b"root req-1".to_vec())
    );
    for key_set in [KeySetName::Access, KeySetName::Action] {
        let state = fixture.store.key_set(key_set).await.unwrap();
        assert_eq!(state.generation, 2, "{key_set}");
        assert!(state.keys[0].schedule.revoked_at.is_some(), "{key_set}");
        assert!(state.keys[0].wrapped_private.is_none(), "{key_set}");
    }
    assert!(revoked_at_of(&fixture.sessions, "s1").await.is_some());
    let events = fixture.store.events_after(before, 10).await.unwrap();
    assert_eq!(events.len(), 3, "two key revocations and the entry");
    assert!(matches!(
        events[2].change,
        BundleChange::RevocationAdded { .. }
    ));
    let n_audit = fixture.store.audit_after(0, 100).await.unwrap().len();

    // A repeat of the incident (even one planned on the new generations) is refused whole.
    let replay = fixture
        .sessions
        .commit_emergency(emergency(vec![revoking(&access, 2), revoking(&action, 2)]))
        .await
        .unwrap();
    assert_eq!(replay, EmergencyCommitted::AlreadyRecorded);
    assert_eq!(
        fixture.store.latest_revision().await.unwrap(),
        Revision(before.0 + 3)
    );
    assert_eq!(
        fixture.store.audit_after(0, 100).await.unwrap().len(),
        n_audit
    );
    let state = fixture.store.key_set(KeySetName::Access).await.unwrap();
    assert_eq!(state.generation, 2, "the replay bumped no generation");
}

/// A commit whose second key set changed since it was planned fails as a whole: the
/// first set is not rotated, no session ends, nothing is published and — what makes a
/// retry possible — the incident is not recorded. The retry, planned again, applies.
pub async fn a_failed_emergency_commit_leaves_nothing_and_its_retry_applies(fixture: &Fixture) {
    let [access, action] = seed(fixture).await;
    let before = fixture.store.latest_revision().await.unwrap();
    let n_audit = fixture.store.audit_after(0, 100).await.unwrap().len();

    let stale = fixture
        .sessions
        .commit_emergency(emergency(vec![revoking(&access, 1), revoking(&action, 0)]))
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    assert_eq!(fixture.store.meta(INCIDENT).await.unwrap(), None);
    let state = fixture.store.key_set(KeySetName::Access).await.unwrap();
    assert_eq!(
        state.generation, 1,
        "the first set's rotation was rolled back"
    );
    assert_eq!(state.keys, vec![access.clone()]);
    assert_eq!(revoked_at_of(&fixture.sessions, "s1").await, None);
    assert_eq!(fixture.store.latest_revision().await.unwrap(), before);
    assert!(
        fixture
            .sessions
            .live_revocations(UnixMillis(T0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        fixture.store.audit_after(0, 100).await.unwrap().len(),
        n_audit
    );

    let retried = fixture
        .sessions
        .commit_emergency(emergency(vec![revoking(&access, 1), revoking(&action, 1)]))
        .await
        .unwrap();
    assert!(
        matches!(retried, EmergencyCommitted::Applied { n_sessions: 1, .. }),
        "{retried:?}"
    );
    assert!(fixture.store.meta(INCIDENT).await.unwrap().is_some());
}

/// Each kind of refused write has its own error, so the caller learns whether running
/// it again can help: a duplicate is `AlreadyExists`, a reference to a missing record
/// `ConstraintViolated` (and writes nothing), a stale generation `Conflict`.
pub async fn each_kind_of_refused_write_has_its_own_error(fixture: &Fixture) {
    let alice = session("s1", "acme", "alice");
    create(&fixture.sessions, &alice, 1).await;

    let duplicate = fixture
        .sessions
        .create_session(
            alice.clone(),
            token("s1-t9", &alice, None, T0),
            audit_entry(2),
        )
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists)),
        "{duplicate:?}"
    );

    // A first token that names a session that does not exist.
    let bob = session("s2", "acme", "bob");
    let orphan = token("s2-t0", &session("s-ghost", "acme", "bob"), None, T0);
    let dangling = fixture
        .sessions
        .create_session(bob.clone(), orphan, audit_entry(3))
        .await;
    assert!(
        matches!(dangling, Err(StoreError::ConstraintViolated(_))),
        "{dangling:?}"
    );
    assert_eq!(
        fixture.sessions.session(&bob.session_id).await.unwrap(),
        None
    );
    assert_eq!(fixture.sessions.refresh_token("s2-t0").await.unwrap(), None);

    let key = full_key("k1", KeySetName::Access, T0);
    let stale = fixture
        .store
        .commit_keys(commit(
            KeySetName::Access,
            7,
            vec![KeyWrite::Insert(key)],
            vec![],
            vec![],
        ))
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
}

/// Two replicas committing the same incident at once: exactly one applies it, the other
/// is told it is recorded, and the entry is published once.
pub async fn concurrent_commits_of_one_incident_apply_exactly_once(fixture: &Fixture) {
    create(&fixture.sessions, &session("s1", "acme", "alice"), 1).await;
    let (_, other_replica) = fixture.open_session_replica().await;
    let before = fixture.store.latest_revision().await.unwrap();
    let (first, second) = tokio::join!(
        fixture.sessions.commit_emergency(emergency(vec![])),
        other_replica.commit_emergency(emergency(vec![])),
    );
    let mut outcomes = [first.unwrap(), second.unwrap()];
    outcomes.sort_by_key(|outcome| *outcome == EmergencyCommitted::AlreadyRecorded);
    assert!(
        matches!(
            outcomes,
            [
                EmergencyCommitted::Applied { n_sessions: 1, .. },
                EmergencyCommitted::AlreadyRecorded
            ]
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        fixture.store.latest_revision().await.unwrap(),
        Revision(before.0 + 1),
        "the entry is published once"
    );
}
