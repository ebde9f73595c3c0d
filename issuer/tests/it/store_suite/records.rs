//! The audit, client, metadata and reopening cases every backend runs. Each case takes a fresh fixture.

use std::collections::BTreeSet;
use std::sync::Arc;

use tessera_common::UnixMillis;
use tessera_common::ids::ClientId;
use tessera_common::keys::KeySetName;
use tessera_issuer::store::{KeyWrite, Store, StoreError};

use tessera_issuer::audit::ChainVerifier;

use super::fixture::{Fixture, assert_chain, audit_entry, client, commit, full_key, tagged_change};
use crate::legacy_audit::{Dialect, LEGACY_AUDIT_ROWS};

/// Every appended audit event links to the previous one through `chain_hash`, whatever
/// wrote it (a plain append, a client write).
pub async fn audit_entries_chain_their_hashes(fixture: &Fixture) {
    let store = &fixture.store;
    let mut returned = Vec::new();
    for n in 1..=3 {
        returned.push(store.append_audit(audit_entry(n)).await.unwrap());
    }
    assert_eq!(returned[0].prev_hash, tessera_issuer::audit::GENESIS_HASH);
    assert_chain(&returned);
    store
        .insert_client(client("svc-a", 1_000), audit_entry(4))
        .await
        .unwrap();
    let stored = store.audit_after(0, 100).await.unwrap();
    assert_eq!(
        stored[..3],
        returned[..],
        "the store returns what it stored"
    );
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[3].entry, audit_entry(4).stored());
    assert_chain(&stored);
}

/// Audit appends racing from two handles all succeed and form one linear chain.
pub async fn concurrent_audit_appends_form_one_chain(fixture: &Fixture) {
    const N_WRITERS: u64 = 4;
    const N_ENTRIES: u64 = 10;
    let handles: [Arc<dyn Store>; 2] = [Arc::clone(&fixture.store), fixture.open_replica().await];
    let mut writers = Vec::new();
    for writer in 0..N_WRITERS {
        let store = Arc::clone(&handles[(writer % 2) as usize]);
        writers.push(tokio::spawn(async move {
            for n in 0..N_ENTRIES {
                store
                    .append_audit(audit_entry(writer * 100 + n))
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let audit = fixture.store.audit_after(0, 1_000).await.unwrap();
    assert_eq!(audit.len() as u64, N_WRITERS * N_ENTRIES);
    assert_chain(&audit);
}

/// `audit_page` runs newest first below `before_seq`; `audit_after` oldest first.
pub async fn audit_pages_run_newest_first_and_after_runs_oldest_first(fixture: &Fixture) {
    let store = &fixture.store;
    for n in 1..=5 {
        store.append_audit(audit_entry(n)).await.unwrap();
    }
    let seqs = |records: Vec<tessera_issuer::store::AuditRecord>| {
        records
            .into_iter()
            .map(|record| record.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(store.audit_page(None, 2).await.unwrap()), vec![5, 4]);
    assert_eq!(
        seqs(store.audit_page(Some(4), 2).await.unwrap()),
        vec![3, 2]
    );
    assert_eq!(seqs(store.audit_page(Some(2), 10).await.unwrap()), vec![1]);
    assert!(store.audit_page(Some(1), 10).await.unwrap().is_empty());
    assert_eq!(
        seqs(store.audit_page(Some(u64::MAX), 1).await.unwrap()),
        vec![5]
    );
    assert_eq!(seqs(store.audit_after(0, 2).await.unwrap()), vec![1, 2]);
    assert_eq!(seqs(store.audit_after(2, 10).await.unwrap()), vec![3, 4, 5]);
    assert!(store.audit_after(5, 10).await.unwrap().is_empty());
    let page = store.audit_page(None, 1).await.unwrap();
    assert_eq!(page[0].entry, audit_entry(5).stored());
}

/// The database itself refuses to update or delete audit rows, whoever asks.
pub async fn audit_log_rejects_update_and_delete(fixture: &Fixture) {
    let store = &fixture.store;
    store.append_audit(audit_entry(1)).await.unwrap();
    store.append_audit(audit_entry(2)).await.unwrap();
    // The raw path works (so the refusals below come from the audit triggers).
    store.put_meta_if_absent("probe", vec![1]).await.unwrap();
    assert_eq!(
        fixture.execute_raw("UPDATE meta SET value = value").await,
        Ok(1)
    );

    for sql in [
        "UPDATE audit_log SET reason = 'tampered'",
        "UPDATE audit_log SET hash = prev_hash WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_log",
    ] {
        let refused = fixture.execute_raw(sql).await;
        let message = refused.expect_err(sql);
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
    if fixture.backend() == "postgres" {
        let message = fixture.execute_raw("TRUNCATE audit_log").await.unwrap_err();
        assert!(message.contains("append-only"), "{message}");
    }
    let audit = store.audit_after(0, 10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].entry, audit_entry(1).stored());
    assert_chain(&audit);
}

/// Clients round-trip, list oldest first, refuse a duplicate id, disable idempotently,
/// and disabling an unknown client is `NotFound`.
pub async fn clients_insert_get_list_disable(fixture: &Fixture) {
    let store = &fixture.store;
    let id = |value: &str| ClientId::new(value).unwrap();
    assert_eq!(store.client(&id("svc-a")).await.unwrap(), None);
    assert!(store.list_clients().await.unwrap().is_empty());

    let older = client("svc-b", 1_000);
    let mut newer = client("svc-a", 2_000);
    newer.tenants = vec![];
    newer.secret_hash = vec![1, 2, 3];
    store
        .insert_client(newer.clone(), audit_entry(1))
        .await
        .unwrap();
    store
        .insert_client(older.clone(), audit_entry(2))
        .await
        .unwrap();
    assert_eq!(
        store.client(&id("svc-a")).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        store.list_clients().await.unwrap(),
        vec![older.clone(), newer.clone()]
    );

    let mut duplicate = client("svc-a", 3_000);
    duplicate.name = "impostor".into();
    let result = store.insert_client(duplicate, audit_entry(3)).await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists)),
        "{result:?}"
    );
    assert_eq!(
        store.client(&id("svc-a")).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        store.audit_after(0, 10).await.unwrap().len(),
        2,
        "no audit for a refused insert"
    );

    store
        .disable_client(&id("svc-a"), UnixMillis(5_000), audit_entry(4))
        .await
        .unwrap();
    store
        .disable_client(&id("svc-a"), UnixMillis(6_000), audit_entry(5))
        .await
        .unwrap();
    let disabled = store.client(&id("svc-a")).await.unwrap().unwrap();
    assert_eq!(
        disabled.disabled_at,
        Some(UnixMillis(5_000)),
        "the first disable sticks"
    );
    assert_eq!(
        store
            .client(&id("svc-b"))
            .await
            .unwrap()
            .unwrap()
            .disabled_at,
        None
    );

    let result = store
        .disable_client(&id("svc-nobody"), UnixMillis(7_000), audit_entry(6))
        .await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    let audit = store.audit_after(0, 10).await.unwrap();
    assert_eq!(audit.len(), 4, "no audit for a refused disable");
    assert_chain(&audit);
}

/// `put_meta_if_absent` keeps the first value, also against a concurrent writer.
pub async fn meta_put_if_absent_keeps_the_first_value(fixture: &Fixture) {
    let store = &fixture.store;
    assert_eq!(store.meta("kek.check").await.unwrap(), None);
    let first = store
        .put_meta_if_absent("kek.check", b"first".to_vec())
        .await
        .unwrap();
    assert_eq!(first, b"first");
    let second = store
        .put_meta_if_absent("kek.check", b"second".to_vec())
        .await
        .unwrap();
    assert_eq!(second, b"first");
    assert_eq!(
        store.meta("kek.check").await.unwrap(),
        Some(b"first".to_vec())
    );
    assert_eq!(store.meta("pepper").await.unwrap(), None);

    let replica = fixture.open_replica().await;
    let (left, right) = tokio::join!(
        store.put_meta_if_absent("pepper", vec![1; 32]),
        replica.put_meta_if_absent("pepper", vec![2; 32]),
    );
    let (left, right) = (left.unwrap(), right.unwrap());
    assert_eq!(left, right, "both writers see the one stored value");
    assert_eq!(store.meta("pepper").await.unwrap(), Some(left));
}

/// A second handle on the same database sees everything and does not migrate again.
pub async fn a_reopened_store_sees_the_same_state(fixture: &Fixture) {
    let store = &fixture.store;
    let key = full_key("k1", KeySetName::Access, 1_000);
    let revision = store
        .commit_keys(commit(
            KeySetName::Access,
            0,
            vec![KeyWrite::Insert(key.clone())],
            vec![tagged_change("reopen")],
            vec![audit_entry(1)],
        ))
        .await
        .unwrap();
    store
        .put_meta_if_absent("kek.check", vec![7])
        .await
        .unwrap();

    let replica = fixture.open_replica().await;
    let state = replica.key_set(KeySetName::Access).await.unwrap();
    assert_eq!((state.generation, state.keys), (1, vec![key]));
    assert_eq!(replica.latest_revision().await.unwrap(), revision);
    assert_eq!(replica.meta("kek.check").await.unwrap(), Some(vec![7]));
    let audit = replica.audit_after(0, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_chain(&audit);

    // Writes through either handle continue one log and one chain.
    let next = replica
        .append_events(vec![tagged_change("from replica")], UnixMillis(2))
        .await
        .unwrap();
    assert_eq!(next.0, revision.0 + 1);
    replica.append_audit(audit_entry(2)).await.unwrap();
    store.append_audit(audit_entry(3)).await.unwrap();
    let audit = store.audit_after(0, 10).await.unwrap();
    let seqs: BTreeSet<u64> = audit.iter().map(|record| record.seq).collect();
    assert_eq!(seqs, BTreeSet::from([1, 2, 3]));
    assert_chain(&audit);
}

/// Rows an earlier version wrote (actions as string literals) and rows appended now
/// through typed entries form one chain: the store links the first new row to the last
/// old one, and the verifier `VerifyAuditLog` runs accepts every row.
pub async fn audit_rows_written_before_typed_actions_chain_with_new_ones(fixture: &Fixture) {
    let dialect = Dialect::of_backend(fixture.backend());
    for row in &LEGACY_AUDIT_ROWS {
        fixture
            .execute_raw(&row.insert_sql(dialect))
            .await
            .expect("legacy row");
    }
    let store = &fixture.store;
    let appended = store.append_audit(audit_entry(5)).await.unwrap();
    assert_eq!(appended.seq, 5);
    assert_eq!(hex(&appended.prev_hash), LEGACY_AUDIT_ROWS[3].hash);
    store
        .insert_client(client("svc-a", 1_000), audit_entry(6))
        .await
        .unwrap();

    let records = store.audit_after(0, 100).await.unwrap();
    assert_eq!(records.len(), 6);
    let mut verifier = ChainVerifier::default();
    for record in &records {
        assert!(
            verifier.check(record),
            "seq {} breaks the chain",
            record.seq
        );
    }
    for (record, row) in records.iter().zip(&LEGACY_AUDIT_ROWS) {
        assert_eq!(hex(&record.hash), row.hash);
        assert_eq!(record.entry.action, row.action);
        assert!(
            record.entry.action().is_some(),
            "{} is a known action",
            row.action
        );
    }
    assert_eq!(records[5].entry, audit_entry(6).stored());
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
