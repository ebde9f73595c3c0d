//! The session-aggregate cases every backend runs: sessions and refresh tokens, rotation
//! (once, refused, raced from several store handles), revocation effects, entries,
//! events and audit, pruning and the change signal. Each case takes a fresh fixture.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::ids::{SessionId, Subject, TenantId};
use tessera_common::revocation::{RevocationEntry, RevocationKind};
use tessera_issuer::store::{
    RefreshState, RefreshTokenRecord, RevocationEffect, SessionRecord, SessionStore, StoreError,
};

use super::fixture::{
    Fixture, assert_chain, audit_entry, notified_within, revocation, tagged_change,
};

pub(super) const T0: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 86_400_000;

/// Returns a session `id` of `subject` in `tenant`, with family `fam-<id>`.
pub(super) fn session(id: &str, tenant: &str, subject: &str) -> SessionRecord {
    SessionRecord {
        session_id: SessionId::new(id).unwrap(),
        tenant_id: TenantId::new(tenant).unwrap(),
        subject: Subject::new(subject).unwrap(),
        family_id: format!("fam-{id}"),
        created_at: UnixMillis(T0),
        expires_at: Some(UnixMillis(T0 + 30 * DAY_MS)),
        revoked_at: None,
        claims_template: format!(r#"{{"role":"staff","of":"{id}"}}"#),
    }
}

/// Returns an active refresh token `id` of `session`, child of `parent`.
pub(super) fn token(
    id: &str,
    session: &SessionRecord,
    parent: Option<&str>,
    issued_at: i64,
) -> RefreshTokenRecord {
    RefreshTokenRecord {
        token_id: id.to_owned(),
        family_id: session.family_id.clone(),
        session_id: session.session_id.clone(),
        tenant_id: session.tenant_id.clone(),
        parent_id: parent.map(str::to_owned),
        secret_hash: format!("hash-of-{id}").into_bytes(),
        pepper_version: tessera_common::credential::PepperVersion::new(7).unwrap(),
        issued_at: UnixMillis(issued_at),
        expires_at: UnixMillis(issued_at + 30 * DAY_MS),
        state: RefreshState::Active,
    }
}

/// Returns a revocation entry of `kind` for `value`.
fn entry(
    kind: RevocationKind,
    value: &str,
    tenant: Option<&str>,
    revoked_at: i64,
) -> RevocationEntry {
    RevocationEntry {
        kind,
        value: value.to_owned(),
        tenant_id: tenant.map(str::to_owned),
        revoked_at: UnixMillis(revoked_at),
        drop_after: UnixMillis(revoked_at + 960_000),
    }
}

/// Creates `session` with its first token `<session id>-t0`; returns the token.
pub(super) async fn create(
    store: &Arc<dyn SessionStore>,
    session: &SessionRecord,
    n: u64,
) -> RefreshTokenRecord {
    let first = token(&format!("{}-t0", session.session_id), session, None, T0);
    store
        .create_session(session.clone(), first.clone(), audit_entry(n))
        .await
        .unwrap();
    first
}

async fn state_of(store: &Arc<dyn SessionStore>, token_id: &str) -> RefreshState {
    store
        .refresh_token(token_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("token {token_id} must exist"))
        .state
}

pub(super) async fn revoked_at_of(
    store: &Arc<dyn SessionStore>,
    session_id: &str,
) -> Option<UnixMillis> {
    store
        .session(&SessionId::new(session_id).unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("session {session_id} must exist"))
        .revoked_at
}

/// A session and its tokens come back with every field; unknown ids are `None`; a
/// duplicate session is `AlreadyExists` and writes nothing (not its token, not its audit).
pub async fn session_and_token_round_trip_keeps_every_field(fixture: &Fixture) {
    let store = &fixture.sessions;
    let full = session("s-full", "acme", "alice");
    let first = token("tok-1", &full, None, T0);
    store
        .create_session(full.clone(), first.clone(), audit_entry(1))
        .await
        .unwrap();
    assert_eq!(
        store.session(&full.session_id).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(store.refresh_token("tok-1").await.unwrap(), Some(first));

    let bare = SessionRecord {
        expires_at: None,
        revoked_at: Some(UnixMillis(T0 + 5)),
        claims_template: "{}".to_owned(),
        ..session("s-bare", "globex", "bob")
    };
    let child = RefreshTokenRecord {
        state: RefreshState::Rotated {
            at: UnixMillis(T0 + 3),
            successor_id: "tok-3".into(),
        },
        ..token("tok-2", &bare, Some("tok-0"), T0 + 1)
    };
    store
        .create_session(bare.clone(), child.clone(), audit_entry(2))
        .await
        .unwrap();
    assert_eq!(
        store.session(&bare.session_id).await.unwrap(),
        Some(bare.clone())
    );
    assert_eq!(store.refresh_token("tok-2").await.unwrap(), Some(child));

    assert_eq!(
        store
            .session(&SessionId::new("s-none").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.refresh_token("tok-none").await.unwrap(), None);

    let duplicate = store
        .create_session(
            full.clone(),
            token("tok-dup", &full, None, T0),
            audit_entry(3),
        )
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists)),
        "a duplicate session already exists: {duplicate:?}"
    );
    assert_eq!(store.refresh_token("tok-dup").await.unwrap(), None);
    let audit = fixture.store.audit_after(0, 100).await.unwrap();
    assert_eq!(audit.len(), 2, "the refused session wrote no audit entry");
    assert_eq!(audit[0].entry, audit_entry(1).stored());
    assert_chain(&audit);
}

/// Rotating once marks the old token `Rotated` with its successor and stores the
/// successor `Active`; rotating the same token again is refused and writes nothing, as
/// is a rotation whose successor id already exists.
pub async fn refresh_context_reads_token_session_and_successor(fixture: &Fixture) {
    let store = &fixture.sessions;
    let alice = session("s1", "acme", "alice");
    let first = create(store, &alice, 1).await;
    assert!(store.refresh_context("nobody").await.unwrap().is_none());

    let context = store
        .refresh_context(&first.token_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.token, first);
    assert_eq!(context.session, alice);
    assert_eq!(context.successor, None);

    let successor = token("s1-t1", &alice, Some("s1-t0"), T0 + 10);
    assert!(
        store
            .rotate_refresh_token(&first.token_id, successor.clone(), UnixMillis(T0 + 10))
            .await
            .unwrap()
    );
    let context = store
        .refresh_context(&first.token_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        context.token.state,
        RefreshState::Rotated {
            at: UnixMillis(T0 + 10),
            successor_id: "s1-t1".into()
        }
    );
    assert_eq!(context.successor, Some(successor.clone()));
    let context = store.refresh_context("s1-t1").await.unwrap().unwrap();
    assert_eq!(context.token, successor);
    assert_eq!(context.successor, None);
}

pub async fn rotation_marks_the_old_token_and_inserts_the_successor(fixture: &Fixture) {
    let store = &fixture.sessions;
    let alice = session("s1", "acme", "alice");
    let first = create(store, &alice, 1).await;

    let successor = token("s1-t1", &alice, Some("s1-t0"), T0 + 10);
    assert!(
        store
            .rotate_refresh_token(&first.token_id, successor.clone(), UnixMillis(T0 + 10))
            .await
            .unwrap()
    );
    assert_eq!(
        state_of(store, "s1-t0").await,
        RefreshState::Rotated {
            at: UnixMillis(T0 + 10),
            successor_id: "s1-t1".into()
        }
    );
    assert_eq!(store.refresh_token("s1-t1").await.unwrap(), Some(successor));

    let again = token("s1-t1b", &alice, Some("s1-t0"), T0 + 20);
    assert!(
        !store
            .rotate_refresh_token("s1-t0", again, UnixMillis(T0 + 20))
            .await
            .unwrap(),
        "a rotated token cannot be rotated again"
    );
    assert_eq!(store.refresh_token("s1-t1b").await.unwrap(), None);
    assert_eq!(
        state_of(store, "s1-t0").await,
        RefreshState::Rotated {
            at: UnixMillis(T0 + 10),
            successor_id: "s1-t1".into()
        },
        "a refused rotation changes nothing"
    );

    // A successor id that is taken: refused, and the active token stays active.
    let clash = token("s1-t0", &alice, Some("s1-t1"), T0 + 30);
    assert!(
        !store
            .rotate_refresh_token("s1-t1", clash, UnixMillis(T0 + 30))
            .await
            .unwrap(),
        "a successor that already exists means another rotation won"
    );
    assert_eq!(state_of(store, "s1-t1").await, RefreshState::Active);
    assert_eq!(
        store
            .refresh_token("s1-t0")
            .await
            .unwrap()
            .unwrap()
            .issued_at,
        UnixMillis(T0)
    );

    assert!(
        !store
            .rotate_refresh_token("nowhere", token("s1-t9", &alice, None, T0), UnixMillis(T0))
            .await
            .unwrap(),
        "an unknown token is not rotated"
    );
    assert_eq!(store.refresh_token("s1-t9").await.unwrap(), None);
}

/// 50 concurrent rotations of one token through three store handles (three replicas on
/// PostgreSQL; three connections to the file on SQLite), some racing with the same
/// derived successor id and some with their own: exactly one wins and exactly one
/// successor exists.
pub async fn concurrent_rotations_let_exactly_one_win(fixture: &Fixture) {
    const N_RACERS: usize = 50;
    const N_SUCCESSOR_IDS: usize = 5;
    let (_, replica_b) = fixture.open_session_replica().await;
    let (_, replica_c) = fixture.open_session_replica().await;
    let handles = [Arc::clone(&fixture.sessions), replica_b, replica_c];
    let alice = session("s1", "acme", "alice");
    create(&handles[0], &alice, 1).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(N_RACERS));
    let mut racers = Vec::new();
    for racer in 0..N_RACERS {
        let store = Arc::clone(&handles[racer % handles.len()]);
        let barrier = Arc::clone(&barrier);
        let successor = token(
            &format!("succ-{}", racer % N_SUCCESSOR_IDS),
            &alice,
            Some("s1-t0"),
            T0 + 100,
        );
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .rotate_refresh_token("s1-t0", successor, UnixMillis(T0 + 100))
                .await
        }));
    }
    let mut n_won = 0;
    for racer in racers {
        if racer
            .await
            .unwrap()
            .expect("a rotation never fails outright")
        {
            n_won += 1;
        }
    }
    assert_eq!(n_won, 1, "exactly one concurrent rotation wins");

    let RefreshState::Rotated { successor_id, .. } = state_of(&handles[0], "s1-t0").await else {
        panic!("the token must be rotated");
    };
    let mut existing = Vec::new();
    for n in 0..N_SUCCESSOR_IDS {
        let id = format!("succ-{n}");
        if let Some(record) = handles[0].refresh_token(&id).await.unwrap() {
            assert_eq!(record.state, RefreshState::Active);
            existing.push(id);
        }
    }
    assert_eq!(existing, vec![successor_id], "exactly one successor row");
}

/// A token of a revoked session is not rotated, even while the token itself is still
/// marked active.
pub async fn rotation_is_refused_when_the_session_is_revoked(fixture: &Fixture) {
    let store = &fixture.sessions;
    let alice = session("s1", "acme", "alice");
    create(store, &alice, 1).await;
    fixture
        .execute_raw("UPDATE sessions SET revoked_at = 5 WHERE session_id = 's1'")
        .await
        .unwrap();
    assert_eq!(state_of(store, "s1-t0").await, RefreshState::Active);
    assert!(
        !store
            .rotate_refresh_token(
                "s1-t0",
                token("s1-t1", &alice, Some("s1-t0"), T0),
                UnixMillis(T0)
            )
            .await
            .unwrap()
    );
    assert_eq!(state_of(store, "s1-t0").await, RefreshState::Active);
    assert_eq!(store.refresh_token("s1-t1").await.unwrap(), None);
}

/// Each effect kind ends exactly the sessions it selects (across two tenants and two
/// users), revokes their active and rotated tokens, counts only sessions it ended, and
/// leaves everything else alone.
pub async fn revoke_effects_end_exactly_the_selected_sessions(fixture: &Fixture) {
    let store = &fixture.sessions;
    let sessions = [
        session("s1", "acme", "alice"),
        session("s2", "acme", "alice"),
        session("s3", "acme", "bob"),
        session("s4", "globex", "alice"),
        session("s5", "globex", "bob"),
        session("s6", "globex", "carol"),
        session("s7", "initech", "dave"),
    ];
    for (n, record) in sessions.iter().enumerate() {
        create(store, record, n as u64 + 1).await;
    }
    // s1's first token is rotated, its successor active: both go with the session.
    assert!(
        store
            .rotate_refresh_token(
                "s1-t0",
                token("s1-t1", &sessions[0], Some("s1-t0"), T0 + 1),
                UnixMillis(T0 + 1)
            )
            .await
            .unwrap()
    );

    let steps: Vec<(RevocationEffect, u64, &[&str])> = vec![
        (
            RevocationEffect::Session {
                tenant_id: TenantId::new("acme").unwrap(),
                session_id: SessionId::new("s3").unwrap(),
            },
            1,
            &["s3"],
        ),
        (
            RevocationEffect::Family {
                tenant_id: TenantId::new("globex").unwrap(),
                family_id: "fam-s5".into(),
            },
            1,
            &["s5"],
        ),
        (
            RevocationEffect::User {
                tenant_id: Some(TenantId::new("acme").unwrap()),
                subject: Subject::new("alice").unwrap(),
            },
            2,
            &["s1", "s2"],
        ),
        (
            RevocationEffect::User {
                tenant_id: None,
                subject: Subject::new("alice").unwrap(),
            },
            1,
            &["s4"],
        ),
        (
            RevocationEffect::Tenant(TenantId::new("globex").unwrap()),
            1,
            &["s6"],
        ),
        (RevocationEffect::All, 1, &["s7"]),
        (RevocationEffect::All, 0, &[]),
    ];
    let mut ended_at: Vec<(&str, i64)> = Vec::new();
    for (step, (effect, n_expected, newly_ended)) in steps.into_iter().enumerate() {
        let at = T0 + 1_000 * (step as i64 + 1);
        let (_, n_ended) = store
            .revoke(revocation(
                vec![],
                vec![effect.clone()],
                UnixMillis(at),
                vec![],
            ))
            .await
            .unwrap();
        assert_eq!(n_ended, n_expected, "{effect:?} ends {n_expected} sessions");
        ended_at.extend(newly_ended.iter().map(|id| (*id, at)));
        for record in &sessions {
            let id = record.session_id.as_str();
            let expected = ended_at
                .iter()
                .find(|(ended, _)| *ended == id)
                .map(|(_, at)| UnixMillis(*at));
            assert_eq!(
                revoked_at_of(store, id).await,
                expected,
                "session {id} after {effect:?}"
            );
            let first_state = state_of(store, &format!("{id}-t0")).await;
            match expected {
                Some(at) => assert_eq!(first_state, RefreshState::Revoked { at }, "{id}-t0"),
                None if id == "s1" => assert!(matches!(first_state, RefreshState::Rotated { .. })),
                None => assert_eq!(first_state, RefreshState::Active, "{id}-t0"),
            }
        }
    }
    let s1_ended = UnixMillis(T0 + 3_000);
    assert_eq!(
        state_of(store, "s1-t1").await,
        RefreshState::Revoked { at: s1_ended }
    );
}

/// A session or family revocation names its tenant, and the tenant is part of the
/// selector: naming another tenant's session or family id ends nothing and revokes none of
/// its refresh tokens; naming the right tenant ends it. `session_of_family` finds the
/// family's session (the lookup a revocation without a tenant uses).
pub async fn session_and_family_revocations_stay_in_their_tenant(fixture: &Fixture) {
    let store = &fixture.sessions;
    let victim = session("b1", "globex", "alice");
    let victim_family = session("b2", "globex", "alice");
    create(store, &victim, 1).await;
    create(store, &victim_family, 2).await;
    let acme = TenantId::new("acme").unwrap();
    let attacks = [
        RevocationEffect::Session {
            tenant_id: acme.clone(),
            session_id: victim.session_id.clone(),
        },
        RevocationEffect::Family {
            tenant_id: acme.clone(),
            family_id: victim_family.family_id.clone(),
        },
    ];
    for (step, effect) in attacks.into_iter().enumerate() {
        let (_, n_ended) = store
            .revoke(revocation(
                vec![],
                vec![effect.clone()],
                UnixMillis(T0 + step as i64 + 1),
                vec![],
            ))
            .await
            .unwrap();
        assert_eq!(n_ended, 0, "{effect:?} must end nothing of globex");
    }
    for id in ["b1", "b2"] {
        assert_eq!(revoked_at_of(store, id).await, None, "session {id}");
        assert_eq!(
            state_of(store, &format!("{id}-t0")).await,
            RefreshState::Active,
            "{id}-t0"
        );
    }

    assert_eq!(
        store.session_of_family("fam-b2").await.unwrap(),
        Some(victim_family.clone())
    );
    assert_eq!(store.session_of_family("fam-nope").await.unwrap(), None);

    let globex = TenantId::new("globex").unwrap();
    let owner_revocations = [
        RevocationEffect::Session {
            tenant_id: globex.clone(),
            session_id: victim.session_id.clone(),
        },
        RevocationEffect::Family {
            tenant_id: globex,
            family_id: victim_family.family_id.clone(),
        },
    ];
    let at = UnixMillis(T0 + 10);
    let (_, n_ended) = store
        .revoke(revocation(vec![], owner_revocations.to_vec(), at, vec![]))
        .await
        .unwrap();
    assert_eq!(n_ended, 2, "the owning tenant ends both");
    for id in ["b1", "b2"] {
        assert_eq!(revoked_at_of(store, id).await, Some(at), "session {id}");
        assert_eq!(
            state_of(store, &format!("{id}-t0")).await,
            RefreshState::Revoked { at },
            "{id}-t0"
        );
    }
}

/// Revocation entries come back from `live_revocations` and as `RevocationAdded` events
/// with consecutive revisions; the audit entries join the hash chain; a revocation with
/// no entry returns the current revision and appends nothing.
pub async fn revoke_publishes_entries_events_and_audit(fixture: &Fixture) {
    let store = &fixture.sessions;
    let alice = session("s1", "acme", "alice");
    create(store, &alice, 1).await;
    let before = fixture
        .store
        .append_events(vec![tagged_change("before")], UnixMillis(T0))
        .await
        .unwrap();

    let at = T0 + 500;
    let entries = vec![
        entry(RevocationKind::Session, "s1", Some("acme"), at),
        entry(RevocationKind::User, "alice", None, at),
        entry(RevocationKind::Jti, "jti-1", Some("acme"), at),
        entry(RevocationKind::All, "", None, at),
    ];
    let (last, n_ended) = store
        .revoke(revocation(
            entries.clone(),
            vec![RevocationEffect::Session {
                tenant_id: alice.tenant_id.clone(),
                session_id: alice.session_id.clone(),
            }],
            UnixMillis(at),
            vec![audit_entry(2), audit_entry(3)],
        ))
        .await
        .unwrap();
    assert_eq!(n_ended, 1);
    assert_eq!(last, Revision(before.0 + entries.len() as u64));
    let events = fixture.store.events_after(before, 100).await.unwrap();
    assert_eq!(events.len(), entries.len());
    for (index, (event, entry)) in events.iter().zip(&entries).enumerate() {
        assert_eq!(event.revision, Revision(before.0 + 1 + index as u64));
        assert_eq!(event.at, UnixMillis(at));
        assert_eq!(
            event.change,
            BundleChange::RevocationAdded {
                entry: entry.clone()
            }
        );
    }
    assert_eq!(
        store.live_revocations(UnixMillis(at)).await.unwrap(),
        entries
    );

    let audit = fixture.store.audit_after(0, 100).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|record| record.entry.clone())
            .collect::<Vec<_>>(),
        vec![
            audit_entry(1).stored(),
            audit_entry(2).stored(),
            audit_entry(3).stored()
        ]
    );
    assert_chain(&audit);

    let (unchanged, n_ended) = store
        .revoke(revocation(vec![], vec![], UnixMillis(at + 1), vec![]))
        .await
        .unwrap();
    assert_eq!((unchanged, n_ended), (last, 0));
    assert_eq!(fixture.store.latest_revision().await.unwrap(), last);
}

/// `live_revocations` returns entries whose `drop_after` is still ahead; pruning deletes
/// only the others (and refresh tokens expired over a day ago) and counts the entries.
pub async fn prune_revocations_drops_only_expired_entries(fixture: &Fixture) {
    let store = &fixture.sessions;
    let with_drop_after = |value: &str, drop_after: i64| RevocationEntry {
        drop_after: UnixMillis(drop_after),
        ..entry(RevocationKind::Jti, value, Some("acme"), 50)
    };
    let entries = vec![
        with_drop_after("j100", 100),
        with_drop_after("j200", 200),
        with_drop_after("j300", 300),
    ];
    store
        .revoke(revocation(entries.clone(), vec![], UnixMillis(50), vec![]))
        .await
        .unwrap();
    assert_eq!(
        store.live_revocations(UnixMillis(99)).await.unwrap(),
        entries
    );
    assert_eq!(
        store.live_revocations(UnixMillis(150)).await.unwrap(),
        entries[1..].to_vec()
    );
    assert_eq!(
        store.live_revocations(UnixMillis(200)).await.unwrap(),
        entries[2..].to_vec()
    );

    let alice = session("s1", "acme", "alice");
    let now = T0 + 100 * DAY_MS;
    let long_expired = RefreshTokenRecord {
        expires_at: UnixMillis(now - DAY_MS - 1),
        ..token("old", &alice, None, T0)
    };
    store
        .create_session(alice.clone(), long_expired, audit_entry(1))
        .await
        .unwrap();
    let recently_expired = RefreshTokenRecord {
        expires_at: UnixMillis(now - 3_600_000),
        ..token("recent", &alice, Some("old"), T0)
    };
    assert!(
        store
            .rotate_refresh_token("old", recently_expired, UnixMillis(T0 + 1))
            .await
            .unwrap()
    );

    assert_eq!(store.prune_revocations(UnixMillis(200)).await.unwrap(), 2);
    assert_eq!(
        store.live_revocations(UnixMillis(0)).await.unwrap(),
        entries[2..].to_vec()
    );
    assert_eq!(store.prune_revocations(UnixMillis(200)).await.unwrap(), 0);

    assert_eq!(store.prune_revocations(UnixMillis(now)).await.unwrap(), 1);
    assert!(
        store
            .live_revocations(UnixMillis(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.refresh_token("old").await.unwrap(), None);
    assert!(store.refresh_token("recent").await.unwrap().is_some());
    assert!(store.session(&alice.session_id).await.unwrap().is_some());
}

/// The change signal fires after a revocation that stored entries; on PostgreSQL
/// another replica's signal fires too (the NOTIFY rides in the same transaction).
pub async fn change_signal_fires_after_revoke(fixture: &Fixture) {
    let signal = fixture.store.change_signal();
    // The replica is kept alive: dropping it stops its LISTEN task.
    let other_replica = match fixture.postgres_schema() {
        Some(_) => Some(fixture.open_session_replica().await.0),
        None => None,
    };
    let other_signal = other_replica
        .as_ref()
        .map(|replica| replica.change_signal());
    let alice = session("s1", "acme", "alice");
    create(&fixture.sessions, &alice, 1).await;
    assert!(
        !notified_within(&signal, Duration::from_millis(200)).await,
        "creating a session appends no event"
    );
    fixture
        .sessions
        .revoke(revocation(
            vec![entry(RevocationKind::Session, "s1", Some("acme"), T0)],
            vec![RevocationEffect::Session {
                tenant_id: alice.tenant_id.clone(),
                session_id: alice.session_id.clone(),
            }],
            UnixMillis(T0),
            vec![audit_entry(2)],
        ))
        .await
        .unwrap();
    assert!(
        notified_within(&signal, Duration::from_secs(2)).await,
        "revoke"
    );
    if let Some(other_signal) = other_signal {
        assert!(
            notified_within(&other_signal, Duration::from_secs(2)).await,
            "another replica hears the revocation"
        );
    }
}
