//! The storage contract of an emergency revocation: the incident record, the emergency
//! rotation of key sets and the revocation entry, written as one transaction
//! ([`super::SessionStore::commit_emergency`]), so an incident is recorded exactly when its
//! effects are.

use tessera_common::bundle::Revision;

use super::{KeyCommit, Revocation, RevocationEffect};

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

    /// Returns the tenants whose standing credentials (API keys, service and webhook
    /// tokens) the commit deactivates: those of its tenant-wide effects. A global
    /// emergency ends sessions and keys but leaves standing credentials alone.
    pub fn deactivated_tenants(&self) -> impl Iterator<Item = &tessera_common::ids::TenantId> {
        self.revocation
            .effects
            .iter()
            .filter_map(|effect| match effect {
                RevocationEffect::Tenant(tenant) => Some(tenant),
                _ => None,
            })
    }
}

/// How many standing credentials of a tenant an emergency deactivated, in its
/// transaction. Each one is refused from then on; verifiers learn it from the tenant
/// revocation entry published by the same commit, not from one event per credential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeactivatedCredentials {
    /// API keys revoked (active or in their grace period).
    pub api_keys: u64,
    /// Active service tokens revoked.
    pub service_tokens: u64,
    /// Active webhook tokens revoked.
    pub webhook_tokens: u64,
}

impl DeactivatedCredentials {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: DeactivatedCredentials) {
        self.api_keys += other.api_keys;
        self.service_tokens += other.service_tokens;
        self.webhook_tokens += other.webhook_tokens;
    }
}

impl std::fmt::Display for DeactivatedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "deactivated {} api keys, {} service tokens, {} webhook tokens",
            self.api_keys, self.service_tokens, self.webhook_tokens
        )
    }
}

/// What [`super::SessionStore::commit_emergency`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmergencyCommitted {
    /// Everything was written: the last event's revision, the sessions newly ended and
    /// the standing credentials deactivated.
    Applied {
        revision: Revision,
        n_sessions: u64,
        deactivated: DeactivatedCredentials,
    },
    /// The incident was already recorded; nothing was written.
    AlreadyRecorded,
}
