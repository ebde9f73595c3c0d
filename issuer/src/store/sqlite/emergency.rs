//! An emergency revocation on SQLite: the incident record, the key sets' emergency
//! rotations and the revocation in one `BEGIN IMMEDIATE` transaction.

use rusqlite::{Transaction, params};

use super::SqliteStore;
use super::error::SqliteFailure;
use super::queries::commit_keys;
use super::sessions::revoke;
use crate::store::{EmergencyCommit, EmergencyCommitted, IncidentRecord, StoreError};

// === impl SqliteStore ===

impl SqliteStore {
    /// See [`crate::store::SessionStore::commit_emergency`].
    pub(super) async fn commit_emergency_now(
        &self,
        commit: EmergencyCommit,
    ) -> Result<EmergencyCommitted, StoreError> {
        let appends_events = commit.appends_events();
        let drops_material = commit.drops_material();
        let committed = self.write(move |tx| apply(tx, commit)).await?;
        if committed != EmergencyCommitted::AlreadyRecorded {
            if appends_events {
                self.signal_change();
            }
            if drops_material {
                self.truncate_wal().await;
            }
        }
        Ok(committed)
    }
}

fn apply(
    tx: &Transaction<'_>,
    commit: EmergencyCommit,
) -> Result<EmergencyCommitted, SqliteFailure> {
    if !record_incident(tx, &commit.incident)? {
        return Ok(EmergencyCommitted::AlreadyRecorded);
    }
    for key_commit in &commit.key_commits {
        commit_keys(tx, key_commit)?;
    }
    let (revision, n_sessions) = revoke(
        tx,
        commit.entries,
        &commit.effects,
        commit.at,
        &commit.audit,
    )?;
    Ok(EmergencyCommitted::Applied {
        revision,
        n_sessions,
    })
}

/// Inserts the incident's record; false (nothing written) when it is already there.
fn record_incident(tx: &Transaction<'_>, incident: &IncidentRecord) -> Result<bool, SqliteFailure> {
    let n_inserted = tx
        .prepare_cached(
            "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![incident.name, incident.value])?;
    Ok(n_inserted == 1)
}
