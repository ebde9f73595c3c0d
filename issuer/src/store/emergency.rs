//! The storage contract of an emergency revocation: the incident record, the emergency
//! rotation of key sets and the revocation entry, written as one transaction
//! ([`super::SessionStore::commit_emergency`]), so an incident is recorded exactly when its
//! effects are.

use tessera_common::bundle::Revision;

use super::{KeyCommit, Revocation};

/// The name an incident is recorded under in the metadata table, chosen by the domain
/// (`emergency::incident_record_name`). Recording it is what makes a repeat a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentRecord {
    pub name: String,
    /// Who recorded it and when; never a secret.
    pub value: Vec<u8>,
}

/// Everything one emergency writes.
#[derive(Clone, Debug)]
pub struct EmergencyCommit {
    pub incident: IncidentRecord,
    /// Emergency rotations, each guarded by its set's generation like
    /// [`super::Store::commit_keys`]; a stale one fails the whole commit with
    /// [`super::StoreError::Conflict`].
    pub key_commits: Vec<KeyCommit>,
    /// The revocation entry and the sessions it ends, written as
    /// [`super::SessionStore::revoke`] writes them, after the key changes.
    pub revocation: Revocation,
}

impl EmergencyCommit {
    /// Returns true when the commit deletes a wrapped private key (a revoked key's), so
    /// a backend that keeps deleted bytes around (SQLite's WAL) must scrub them.
    pub fn drops_material(&self) -> bool {
        self.key_commits.iter().any(KeyCommit::drops_material)
    }

    /// Returns true when the commit appends events (then subscribers must be woken).
    pub fn appends_events(&self) -> bool {
        self.revocation.appends_events() || self.key_commits.iter().any(KeyCommit::appends_events)
    }
}

/// What [`super::SessionStore::commit_emergency`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmergencyCommitted {
    /// Everything was written: the last event's revision and the sessions newly ended.
    Applied { revision: Revision, n_sessions: u64 },
    /// The incident was already recorded; nothing was written.
    AlreadyRecorded,
}
