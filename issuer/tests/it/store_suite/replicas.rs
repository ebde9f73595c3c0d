//! PostgreSQL-only cases: several issuer replicas on one database, fanning events out
//! through LISTEN/NOTIFY and appending to one gap-free log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::keys::KeySetName;
use tessera_issuer::store::postgres::{PostgresOptions, PostgresStore};
use tessera_issuer::store::{KeyWrite, Store, StoreError};

use super::fixture::{
    Fixture, UNRELATED_CA_PEM, bare_key, commit, connect_postgres, drain, fresh_schema,
    notified_within, postgres_url, tag_of, tagged_change,
};

/// A commit on replica A wakes replica B within 2 s, and B reads the event; a store on
/// another schema of the same database is not woken.
pub async fn a_commit_on_one_replica_wakes_the_other(fixture: &Fixture) {
    let replica_a = &fixture.store;
    let replica_b = fixture.open_replica().await;
    let schema = fixture.postgres_schema().expect("postgres fixture");
    let url = postgres_url().expect("postgres fixture has a url");
    let elsewhere_schema = fresh_schema(&url).await;
    let elsewhere = connect_postgres(&elsewhere_schema).await;

    let signal_b = replica_b.change_signal();
    let signal_elsewhere = elsewhere.change_signal();
    assert!(!notified_within(&signal_b, Duration::from_millis(200)).await);
    let revision = replica_a
        .append_events(vec![tagged_change("from a")], UnixMillis(1))
        .await
        .unwrap();
    assert!(
        notified_within(&signal_b, Duration::from_secs(2)).await,
        "replica B must hear replica A's event (schema {})",
        schema.options().schema.unwrap_or_default()
    );
    let seen = replica_b.events_after(Revision(0), 10).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].revision, tag_of(&seen[0].change)),
        (revision, "from a")
    );
    assert!(
        !notified_within(&signal_elsewhere, Duration::from_millis(500)).await,
        "a store on another schema must not wake"
    );

    drain(&signal_b, Duration::from_millis(300)).await;
    let key = bare_key("k1", KeySetName::Access, 1);
    let revision = replica_a
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
        notified_within(&signal_b, Duration::from_secs(2)).await,
        "commit_keys"
    );
    assert_eq!(replica_b.latest_revision().await.unwrap(), revision);
}

/// Two replicas (two writers each) appending at once produce one log with no gaps: every batch gets
/// consecutive revisions, and a reader following the log never sees revision n + 1
/// before revision n.
pub async fn concurrent_appends_from_two_replicas_leave_no_gaps(fixture: &Fixture) {
    const N_WRITERS: usize = 4;
    const N_BATCHES: usize = 30;
    let replicas: [Arc<dyn Store>; 2] = [Arc::clone(&fixture.store), fixture.open_replica().await];

    let done = Arc::new(AtomicBool::new(false));
    let follower = tokio::spawn({
        let store = Arc::clone(&replicas[1]);
        let done = Arc::clone(&done);
        async move {
            let mut last = Revision(0);
            loop {
                let finished = done.load(Ordering::SeqCst);
                for event in store.events_after(last, 1_000).await.unwrap() {
                    assert_eq!(event.revision.0, last.0 + 1, "the follower saw a gap");
                    last = event.revision;
                }
                if finished {
                    return last;
                }
                tokio::task::yield_now().await;
            }
        }
    });

    let mut writers = Vec::new();
    for index in 0..N_WRITERS {
        let store = Arc::clone(&replicas[index % 2]);
        writers.push(tokio::spawn(async move {
            let mut batches = Vec::new();
            for batch in 0..N_BATCHES {
                let size = 1 + batch % 3;
                let changes = (0..size)
                    .map(|n| tagged_change(&format!("{index}-{batch}-{n}")))
                    .collect();
                let last = store.append_events(changes, UnixMillis(0)).await.unwrap();
                batches.push((format!("{index}-{batch}"), size, last));
            }
            batches
        }));
    }
    let mut batches = Vec::new();
    for writer in writers {
        batches.extend(writer.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let followed_to = follower.await.unwrap();

    let events = replicas[0].events_after(Revision(0), 10_000).await.unwrap();
    let n_expected: usize = batches.iter().map(|(_, size, _)| size).sum();
    assert_eq!(events.len(), n_expected);
    for (position, event) in events.iter().enumerate() {
        assert_eq!(
            event.revision.0,
            position as u64 + 1,
            "revisions run 1, 2, 3… with no gap"
        );
    }
    assert_eq!(followed_to, events[n_expected - 1].revision);

    let revision_of: BTreeMap<&str, u64> = events
        .iter()
        .map(|event| (tag_of(&event.change), event.revision.0))
        .collect();
    for (batch, size, last) in &batches {
        for n in 0..*size {
            let revision = revision_of[format!("{batch}-{n}").as_str()];
            assert_eq!(
                revision,
                last.0 - (*size - 1 - n) as u64,
                "batch {batch} is consecutive"
            );
        }
    }
}

/// Replicas starting together on an empty schema all succeed, and the migration runs once.
pub async fn replicas_starting_together_migrate_once(fixture: &Fixture) {
    let url = postgres_url().expect("postgres fixture has a url");
    drop(fixture.open_replica().await);
    let schema = fresh_schema(&url).await;
    let (first, second, third) = tokio::join!(
        connect_postgres(&schema),
        connect_postgres(&schema),
        connect_postgres(&schema),
    );
    let revision = first
        .append_events(vec![tagged_change("after start")], UnixMillis(0))
        .await
        .unwrap();
    assert_eq!(second.latest_revision().await.unwrap(), revision);
    assert_eq!(third.latest_revision().await.unwrap(), revision);
    let raw = schema.raw_client().await;
    let n_migrations: i64 = raw
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n_migrations, 9);
}

/// With a CA file, TLS is required and the server certificate verified: a server whose
/// certificate that CA did not sign is refused (and the store never falls back to
/// plain text).
pub async fn tls_refuses_a_server_the_ca_did_not_sign(fixture: &Fixture) {
    let schema = fixture.postgres_schema().expect("postgres fixture");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, UNRELATED_CA_PEM).unwrap();
    let options = PostgresOptions {
        ca_file: Some(ca_file),
        ..schema.options()
    };
    let refused = PostgresStore::connect(&options).await;
    let Err(StoreError::Unavailable(message)) = refused else {
        panic!("an unverifiable server must be refused");
    };
    assert!(
        message.contains("TLS") && message.contains("certificate"),
        "the refusal names the TLS certificate problem: {message}"
    );
}

/// When its LISTEN connection is killed, a replica reconnects, wakes its subscribers
/// (events may have been missed meanwhile) and hears the other replicas again.
pub async fn the_listener_reconnects_after_its_connection_drops(fixture: &Fixture) {
    let schema = fixture.postgres_schema().expect("postgres fixture");
    let application_name = format!("tessera_listener_{}", uuid::Uuid::new_v4().simple());
    let mut options = schema.options();
    let separator = if options.url.contains('?') { '&' } else { '?' };
    options.url = format!(
        "{}{separator}application_name={application_name}",
        options.url
    );
    let listening = PostgresStore::connect(&options).await.unwrap();
    let signal = listening.change_signal();
    let writer = &fixture.store;

    let raw = schema.raw_client().await;
    let n_terminated: i64 = raw
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            &[&application_name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n_terminated, 1,
        "exactly the listening connection is killed"
    );
    assert!(
        notified_within(&signal, Duration::from_secs(5)).await,
        "a reconnected listener wakes its subscribers"
    );

    drain(&signal, Duration::from_millis(300)).await;
    let revision = writer
        .append_events(vec![tagged_change("after reconnect")], UnixMillis(0))
        .await
        .unwrap();
    assert!(
        notified_within(&signal, Duration::from_secs(2)).await,
        "the reconnected listener hears other replicas"
    );
    assert_eq!(listening.latest_revision().await.unwrap(), revision);
}
