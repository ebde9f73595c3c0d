//! The trust bundle: what a verifier holds (published keys, live revocations, policy) and
//! the changes the issuer streams to keep it current.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::ids::KeyId;
use crate::keys::KeySchedule;
use crate::revocation::{RevocationEntry, RevocationSet};

/// A position in the issuer's event log. Revisions only grow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

/// The rules verifiers apply to every token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationPolicy {
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Clock leeway for `exp` and `nbf`, seconds.
    pub leeway_seconds: u32,
    /// Longest access-token lifetime the issuer signs, seconds.
    pub max_token_ttl_seconds: u32,
}

/// One committed change of the bundle, as recorded in the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BundleChange {
    /// A key was published, or its schedule changed.
    KeyUpserted { key: KeySchedule },
    /// A key passed its overlap window and is no longer published.
    KeyUnpublished { kid: KeyId },
    /// A key was revoked: its tokens are rejected from now on.
    KeyRevoked { key: KeySchedule },
    /// A revocation entry was added.
    RevocationAdded { entry: RevocationEntry },
    /// The validation policy changed.
    PolicyChanged { policy: ValidationPolicy },
}

/// A change together with the revision it committed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvent {
    pub revision: Revision,
    pub at: UnixMillis,
    pub change: BundleChange,
}

/// Everything a verifier needs, at one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    pub revision: Revision,
    /// Published keys, and revoked keys until their tokens have all expired.
    pub keys: BTreeMap<KeyId, KeySchedule>,
    pub revocations: RevocationSet,
    pub policy: ValidationPolicy,
}

impl TrustBundle {
    /// Returns an empty bundle at revision 0 with `policy`.
    pub fn empty(policy: ValidationPolicy) -> Self {
        TrustBundle {
            revision: Revision(0),
            keys: BTreeMap::new(),
            revocations: RevocationSet::default(),
            policy,
        }
    }

    /// Applies `event` if it is newer than the bundle; returns whether it was applied.
    pub fn apply(&mut self, event: &BundleEvent) -> bool {
        if event.revision <= self.revision {
            return false;
        }
        match &event.change {
            BundleChange::KeyUpserted { key } | BundleChange::KeyRevoked { key } => {
                self.keys.insert(key.kid.clone(), key.clone());
            }
            BundleChange::KeyUnpublished { kid } => {
                self.keys.remove(kid);
            }
            BundleChange::RevocationAdded { entry } => self.revocations.insert(entry.clone()),
            BundleChange::PolicyChanged { policy } => self.policy = policy.clone(),
        }
        self.revision = event.revision;
        true
    }

    /// Forgets revoked keys and revocation entries that can no longer match a live token.
    pub fn prune(&mut self, now: UnixMillis) {
        let horizon = now.minus(std::time::Duration::from_secs(
            u64::from(self.policy.max_token_ttl_seconds) + u64::from(self.policy.leeway_seconds),
        ));
        self.keys.retain(|_, key| {
            key.revoked_at
                .is_none_or(|revoked_at| revoked_at >= horizon)
        });
        self.revocations.prune(now);
    }
}
