//! An emergency revocation on PostgreSQL: the incident record, the key sets' emergency
//! rotations and the revocation in one transaction.

use deadpool_postgres::Transaction;

use super::PostgresStore;
use super::error::PgFailure;
use super::queries::{commit_keys, execute};
use super::sessions::revoke;
use crate::store::{EmergencyCommit, EmergencyCommitted, IncidentRecord, StoreError};

// === impl PostgresStore ===

impl PostgresStore {
    /// See [`crate::store::SessionStore::commit_emergency`].
    pub(super) async fn commit_emergency_now(
        &self,
        commit: EmergencyCommit,
    ) -> Result<EmergencyCommitted, StoreError> {
        let appends_events = commit.appends_events();
        let committed = self.write(|tx| Box::pin(apply(tx, commit.clone()))).await?;
        if appends_events && committed != EmergencyCommitted::AlreadyRecorded {
            self.signal_change();
        }
        Ok(committed)
    }
}

async fn apply(
    tx: &Transaction<'_>,
    commit: EmergencyCommit,
) -> Result<EmergencyCommitted, PgFailure> {
    if !record_incident(tx, &commit.incident).await? {
        return Ok(EmergencyCommitted::AlreadyRecorded);
    }
    for key_commit in commit.key_commits {
        commit_keys(tx, key_commit).await?;
    }
    let (revision, n_sessions) =
        revoke(tx, commit.entries, commit.effects, commit.at, commit.audit).await?;
    Ok(EmergencyCommitted::Applied {
        revision,
        n_sessions,
    })
}

/// Inserts the incident's record; false (nothing written) when it is already there. A
/// concurrent insert of the same name makes this one wait for its commit: then it
/// inserts nothing, or, if that transaction rolled back, inserts.
async fn record_incident(
    tx: &Transaction<'_>,
    incident: &IncidentRecord,
) -> Result<bool, PgFailure> {
    let n_inserted = execute(
        tx,
        "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&incident.name, &incident.value],
    )
    .await?;
    Ok(n_inserted == 1)
}
