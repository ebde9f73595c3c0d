//! The audit log across versions: rows written before audit actions were typed and rows
//! written now form one chain that `VerifyAuditLog` accepts.

use std::sync::Arc;

use tessera_common::SystemClock;
use tessera_issuer::config::IssuerConfig;
use tessera_issuer::store::sqlite::SqliteStore;
use tessera_proto::v1 as pb;

use crate::harness::TestIssuer;
use crate::legacy_audit::{Dialect, LEGACY_AUDIT_ROWS};

/// An issuer started on a database an earlier version wrote audit rows to keeps
/// appending to the same chain: `VerifyAuditLog` finds every row, old and new, intact,
/// and the old rows read back with their stored actions.
#[tokio::test]
async fn verify_audit_log_accepts_rows_written_before_and_after_typed_actions() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let path = data_dir.path().join("tessera.db");
    drop(SqliteStore::open(&path).expect("migrated database"));
    let connection = rusqlite::Connection::open(&path).expect("open database");
    for row in &LEGACY_AUDIT_ROWS {
        connection
            .execute(&row.insert_sql(Dialect::Sqlite), [])
            .expect("legacy row");
    }
    drop(connection);
    let config = IssuerConfig::development(data_dir.path());
    let issuer = TestIssuer::start_in(config, data_dir, Arc::new(SystemClock)).await;
    issuer
        .keys()
        .await
        .rotate_keys(issuer.as_admin(pb::RotateKeysRequest {
            key_set: "access".into(),
            reason: "after the upgrade".into(),
            ..Default::default()
        }))
        .await
        .expect("rotate");

    let verified = issuer
        .admin()
        .await
        .verify_audit_log(issuer.as_admin(pb::VerifyAuditLogRequest {}))
        .await
        .expect("verify")
        .into_inner();
    let events = issuer
        .admin()
        .await
        .list_audit_events(issuer.as_admin(pb::ListAuditEventsRequest {
            limit: 1000,
            ..Default::default()
        }))
        .await
        .expect("audit")
        .into_inner()
        .events;
    assert!(
        verified.intact,
        "broken at seq {}",
        verified.first_broken_seq
    );
    assert_eq!(verified.n_events, events.len() as u64);
    let n_new = events.len() - LEGACY_AUDIT_ROWS.len();
    assert!(
        n_new >= 3,
        "bootstrap, key creation and rotation rows: {n_new}"
    );
    for row in &LEGACY_AUDIT_ROWS {
        let event = events
            .iter()
            .find(|event| event.seq == row.seq)
            .expect("legacy row listed");
        assert_eq!(
            (
                event.actor.as_str(),
                event.action.as_str(),
                event.outcome.as_str()
            ),
            (row.actor, row.action, row.outcome)
        );
    }
    let rotation = events
        .iter()
        .find(|event| event.action == "key.rotate")
        .expect("rotation audited");
    assert!(rotation.seq > LEGACY_AUDIT_ROWS.len() as u64);
    assert_eq!(rotation.reason, "after the upgrade");
}
