//! The secrets inventory (issue 12): a secret, its versions and its history round-trip;
//! every commit is checked against the generation its writer read, and of concurrent
//! commits with one generation from two stores exactly one wins — with its history,
//! its `SecretRotated` event and its audit entry, and the losers write nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision, SecretRotation};
use tessera_issuer::audit::AuditAction;
use tessera_issuer::kek::KekVersion;
use tessera_issuer::store::{
    SecretCommit, SecretHistoryRecord, SecretRecord, SecretStage, SecretStore, SecretVersionRecord,
    StoreError, WrappedKey,
};

use super::api_keys::audit;
use super::fixture::Fixture;

const T0: i64 = 1_700_000_000_000;

fn record(name: &str) -> SecretRecord {
    SecretRecord {
        name: name.to_owned(),
        kind: "random".into(),
        tier: 1,
        cadence_days: 90,
        owner: "platform".into(),
        description: "a test secret".into(),
        tags: BTreeMap::from([("env".to_owned(), "test".to_owned())]),
        rotator: r#"{"random":{"length":32,"alphabet":"hex"}}"#.into(),
        created_at: UnixMillis(T0),
        last_rotated_at: None,
        warned_at: None,
        generation: 0,
        rotation: None,
    }
}

fn version(name: &str, version: u64, stage: SecretStage) -> SecretVersionRecord {
    SecretVersionRecord {
        name: name.to_owned(),
        version,
        stage,
        data_key: WrappedKey {
            kek_version: KekVersion::new(1).unwrap(),
            sealed: vec![version as u8; 60],
        },
        sealed_value: vec![9; 44],
        label: format!("label-{version}"),
        created_at: UnixMillis(T0 + version as i64),
        activated_at: (stage == SecretStage::Current).then_some(UnixMillis(T0 + 10)),
        retired_at: None,
    }
}

fn history(name: &str, step: &str, version: u64) -> SecretHistoryRecord {
    SecretHistoryRecord {
        name: name.to_owned(),
        at: UnixMillis(T0),
        step: step.to_owned(),
        version,
        outcome: "ok".into(),
        actor: "ops".into(),
        request_id: "req".into(),
        detail: String::new(),
    }
}

fn commit(
    expected_generation: Option<i64>,
    record: SecretRecord,
    versions: Vec<SecretVersionRecord>,
    step: &str,
    current: u64,
) -> SecretCommit {
    let name = record.name.clone();
    SecretCommit {
        expected_generation,
        versions,
        history: vec![history(&name, step, current)],
        changes: vec![BundleChange::SecretRotated {
            change: SecretRotation {
                name: name.clone(),
                current_version: current,
                previous_version: current.checked_sub(1).filter(|v| *v > 0),
            },
        }],
        audit: vec![audit(AuditAction::SecretRotate, &name)],
        record,
        at: UnixMillis(T0),
    }
}

async fn rotations(fixture: &Fixture, name: &str) -> Vec<u64> {
    fixture
        .store
        .events_after(Revision(0), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|event| match event.change {
            BundleChange::SecretRotated { change } if change.name == name => {
                Some(change.current_version)
            }
            _ => None,
        })
        .collect()
}

pub async fn secrets_round_trip_and_commits_check_the_generation(fixture: &Fixture) {
    let store = fixture.open_secret_replica().await;
    let name = "payments/db";
    let first = commit(
        None,
        record(name),
        vec![version(name, 1, SecretStage::Current)],
        "put",
        1,
    );
    assert!(store.commit_secret(first.clone()).await.unwrap());
    assert!(matches!(
        store.commit_secret(first).await,
        Err(StoreError::AlreadyExists)
    ));
    let state = store.secret(name).await.unwrap().expect("stored");
    assert_eq!(state.record.generation, 1);
    assert_eq!(
        state.record,
        SecretRecord {
            generation: 1,
            ..record(name)
        }
    );
    assert_eq!(state.versions, [version(name, 1, SecretStage::Current)]);
    // A rotation's commit: v2 current, v1 previous; the stale generation is refused.
    let mut rotated = state.record.clone();
    rotated.last_rotated_at = Some(UnixMillis(T0 + 5));
    rotated.rotation = Some(r#"{"step":"created"}"#.into());
    let versions = vec![
        version(name, 2, SecretStage::Current),
        SecretVersionRecord {
            stage: SecretStage::Previous,
            ..version(name, 1, SecretStage::Current)
        },
    ];
    assert!(
        store
            .commit_secret(commit(
                Some(1),
                rotated.clone(),
                versions.clone(),
                "finish",
                2
            ))
            .await
            .unwrap()
    );
    assert!(
        !store
            .commit_secret(commit(Some(1), rotated.clone(), versions, "finish", 3))
            .await
            .unwrap(),
        "a stale generation committed"
    );
    let state = store.secret(name).await.unwrap().unwrap();
    assert_eq!(state.record.generation, 2);
    assert_eq!(state.record.rotation, rotated.rotation);
    assert_eq!(
        state
            .versions
            .iter()
            .map(|version| (version.version, version.stage))
            .collect::<Vec<_>>(),
        [(2, SecretStage::Current), (1, SecretStage::Previous)]
    );
    // The sealed bytes of an existing version never change, only its stage.
    assert_eq!(state.versions[1].sealed_value, vec![9; 44]);
    let steps: Vec<String> = store
        .secret_history(name, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.step)
        .collect();
    assert_eq!(steps, ["finish", "put"]);
    assert_eq!(rotations(fixture, name).await, [1, 2]);
    assert!(store.secret("other").await.unwrap().is_none());
    let listed = store.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].versions.len(), 2);
}

pub async fn concurrent_secret_commits_from_two_stores_let_exactly_one_win(fixture: &Fixture) {
    let name = "race/secret";
    let first = fixture.open_secret_replica().await;
    let second = fixture.open_secret_replica().await;
    assert!(
        first
            .commit_secret(commit(
                None,
                record(name),
                vec![version(name, 1, SecretStage::Current)],
                "put",
                1
            ))
            .await
            .unwrap()
    );
    let mut tasks = Vec::new();
    for attempt in 0..10u64 {
        let store: Arc<dyn SecretStore> = if attempt % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut next = record(name);
            next.warned_at = Some(UnixMillis(T0 + attempt as i64));
            loop {
                match store
                    .commit_secret(commit(
                        Some(1),
                        next.clone(),
                        vec![version(name, 2, SecretStage::Pending)],
                        "create",
                        2,
                    ))
                    .await
                {
                    Ok(won) => return won,
                    // SQLite's busy timeout or PostgreSQL's serialization: try again.
                    Err(StoreError::Conflict | StoreError::Unavailable(_)) => continue,
                    Err(error) => panic!("{error}"),
                }
            }
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);
    let history = first.secret_history(name, 100).await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|entry| entry.step == "create")
            .count(),
        1
    );
    assert_eq!(rotations(fixture, name).await, [1, 2]);
    let audit_rows = fixture.store.audit_page(None, 100).await.unwrap();
    assert_eq!(
        audit_rows
            .iter()
            .filter(|row| row.entry.action == "secret.rotate")
            .count(),
        2
    );
}
