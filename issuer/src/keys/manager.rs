//! The key manager: turns rotation plans into store commits (retrying on optimistic
//! concurrency conflicts, so with several replicas exactly one performs each scheduled
//! rotation) and keeps the signers of the current keys parsed in memory.
//!
//! Every set, JWS or HMAC, goes through the same planner and commit. What differs is
//! publication: a commit to a set that is not published (`webhook`) appends no bundle
//! event, so its keys never reach the event log, the hub or a sidecar. Its MAC keys are
//! therefore looked up in the store on use (`mac_key`, `mac_key_by_kid`) rather than
//! reloaded on events, which keeps every replica current without any event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use tessera_common::bundle::{BundleChange, Revision};
use tessera_common::ids::KeyId;
use tessera_common::keys::{KeySchedule, KeySetName, KeySetPolicy, KeyState, PolicyError};
use tessera_common::{Clock, UnixMillis};
use tracing::{info, warn};

use super::mac::MacKey;
use super::material::{self, KeyMaterialError};
use super::rotation::{self, KeyView, Plan, PlanError, Trigger};
use super::signer::Signer;
use crate::audit::{Actor, AuditAction};
use crate::kek::KekError;
use crate::keyring::Keyring;
use crate::store::{KeyCommit, KeyWrite, Store, StoreError, StoredKey};

/// Attempts at a commit before giving up on repeated conflicts.
const MAX_COMMIT_ATTEMPTS: usize = 5;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error(transparent)]
    Material(#[from] KeyMaterialError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("key set `{0}` has no active signing key")]
    NoSigner(KeySetName),
    #[error("key `{0}` not found")]
    UnknownKey(KeyId),
    #[error("too many concurrent changes to key set `{0}`; retry")]
    Busy(KeySetName),
}

/// The result of a committed plan.
#[derive(Clone, Debug)]
pub struct RotationOutcome {
    pub key_set: KeySetName,
    pub new_kid: Option<KeyId>,
    pub previous_kid: Option<KeyId>,
    pub activates_at: Option<UnixMillis>,
    pub previous_verify_until: Option<UnixMillis>,
    /// Every key this change revoked (an emergency rotation revokes the signer, retiring
    /// and pending keys alike), so callers can name them to the operator.
    pub revoked_kids: Vec<KeyId>,
    pub revision: Revision,
}

#[derive(Default)]
struct KeyRing {
    schedules: BTreeMap<KeySetName, Vec<KeyView>>,
    signers: HashMap<KeyId, Arc<Signer>>,
    /// Parsed MAC keys of each HMAC set by kid, so a secret is unwrapped once, not on
    /// every MAC; only keys whose tags still verify are kept.
    macs: BTreeMap<KeySetName, HashMap<KeyId, Arc<MacKey>>>,
}

/// A change planned and built by [`KeyManager::prepare`], not yet committed.
#[derive(Debug)]
pub struct PreparedChange {
    pub commit: KeyCommit,
    plan: Plan,
}

impl PreparedChange {
    /// Returns what the change did once committed at `revision`.
    pub fn outcome(&self, revision: Revision) -> RotationOutcome {
        outcome_of(self.commit.key_set, &self.plan, revision)
    }
}

/// Owns the key sets' lifecycle.
pub struct KeyManager {
    store: Arc<dyn Store>,
    /// The keyring: wraps new private keys under the current KEK version and unwraps
    /// each stored one with the version it records.
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    policies: BTreeMap<KeySetName, KeySetPolicy>,
    ring: RwLock<KeyRing>,
}

impl KeyManager {
    /// Builds a manager, refusing any policy under which a token could outlive its key.
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        policies: BTreeMap<KeySetName, KeySetPolicy>,
    ) -> Result<Self, KeyError> {
        for (key_set, policy) in &policies {
            policy.validate(*key_set)?;
        }
        Ok(KeyManager {
            store,
            keyring,
            clock,
            policies,
            ring: RwLock::new(KeyRing::default()),
        })
    }

    /// Returns the policy of `key_set`.
    pub fn policy(&self, key_set: KeySetName) -> KeySetPolicy {
        self.policies
            .get(&key_set)
            .copied()
            .unwrap_or_else(|| KeySetPolicy::default_for(key_set))
    }

    /// Returns the signer of `key_set` at `now`.
    pub fn signer(&self, key_set: KeySetName, now: UnixMillis) -> Result<Arc<Signer>, KeyError> {
        let ring = self
            .ring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let views = ring
            .schedules
            .get(&key_set)
            .ok_or(KeyError::NoSigner(key_set))?;
        let schedule = rotation::signer_at(views, now).ok_or(KeyError::NoSigner(key_set))?;
        ring.signers
            .get(&schedule.kid)
            .cloned()
            .ok_or(KeyError::NoSigner(key_set))
    }

    /// Returns every key of every set (or of one set), from the store.
    pub async fn list(&self, key_set: Option<KeySetName>) -> Result<Vec<KeySchedule>, KeyError> {
        let mut out = Vec::new();
        for set in KeySetName::ALL {
            if key_set.is_some_and(|wanted| wanted != set) {
                continue;
            }
            out.extend(
                self.store
                    .key_set(set)
                    .await?
                    .keys
                    .into_iter()
                    .map(|key| key.schedule),
            );
        }
        out.sort_by(|a, b| {
            b.activates_at
                .cmp(&a.activates_at)
                .then(b.created_at.cmp(&a.created_at))
        });
        Ok(out)
    }

    /// Reloads schedules from the store and parses the signers of keys that may sign.
    /// Called at start and whenever the bundle pump sees a key change from any replica.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let now = self.clock.now();
        let mut loaded = BTreeMap::new();
        let mut wanted: Vec<(KeySetName, StoredKey)> = Vec::new();
        for key_set in KeySetName::ALL {
            let state = self.store.key_set(key_set).await?;
            loaded.insert(key_set, key_views(&state.keys));
            for key in state.keys {
                let may_sign = matches!(
                    key.schedule.state_at(now),
                    KeyState::Pending { .. } | KeyState::Active { .. }
                );
                // MAC keys are not JWS signers; `mac_key` parses them when used.
                if may_sign && key.wrapped_private.is_some() && key_set.is_published() {
                    wanted.push((key_set, key));
                }
            }
        }
        let existing = {
            let ring = self
                .ring
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            ring.signers.clone()
        };
        let mut signers = HashMap::new();
        for (key_set, key) in wanted {
            let kid = key.schedule.kid.clone();
            if let Some(signer) = existing.get(&kid) {
                signers.insert(kid, signer.clone());
                continue;
            }
            let Some(wrapped) = &key.wrapped_private else {
                continue;
            };
            let pkcs8 = self.keyring.unwrap(key_set, kid.as_str(), wrapped)?;
            let signer = Signer::from_pkcs8(kid.clone(), key.schedule.algorithm, &pkcs8)?;
            signers.insert(kid, Arc::new(signer));
        }
        let mut ring = self
            .ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ring.schedules = loaded;
        ring.signers = signers;
        Ok(())
    }

    /// Returns the MAC key of HMAC set `key_set` that signs at `now`. Read from the store:
    /// a rotation on another replica appends no event to learn it from.
    pub async fn mac_key(
        &self,
        key_set: KeySetName,
        now: UnixMillis,
    ) -> Result<Arc<MacKey>, KeyError> {
        let state = self.store.key_set(key_set).await?;
        let views = key_views(&state.keys);
        let kid = rotation::signer_at(&views, now)
            .map(|schedule| schedule.kid.clone())
            .ok_or(KeyError::NoSigner(key_set))?;
        self.parsed_mac(key_set, &state.keys, &kid, now)
    }

    /// Returns MAC key `kid` of HMAC set `key_set` while its tags verify at `now`
    /// (pending, active or retiring): a receiver may hold a tag of the predecessor
    /// during the overlap.
    pub async fn mac_key_by_kid(
        &self,
        key_set: KeySetName,
        kid: &KeyId,
        now: UnixMillis,
    ) -> Result<Arc<MacKey>, KeyError> {
        let state = self.store.key_set(key_set).await?;
        self.parsed_mac(key_set, &state.keys, kid, now)
    }

    /// Returns every MAC key of HMAC set `key_set` whose tags verify at `now` (pending,
    /// active or retiring), each with its schedule, newest activation first. Read from the
    /// store like `mac_key`, so every replica sees a rotation made on another one.
    pub async fn mac_keys(
        &self,
        key_set: KeySetName,
        now: UnixMillis,
    ) -> Result<Vec<(KeySchedule, Arc<MacKey>)>, KeyError> {
        let state = self.store.key_set(key_set).await?;
        let mut live: Vec<&StoredKey> = state
            .keys
            .iter()
            .filter(|key| {
                key.schedule.state_at(now).is_published() && key.wrapped_private.is_some()
            })
            .collect();
        live.sort_by(|a, b| {
            b.schedule
                .activates_at
                .cmp(&a.schedule.activates_at)
                .then(b.schedule.created_at.cmp(&a.schedule.created_at))
        });
        let mut out = Vec::with_capacity(live.len());
        for key in live {
            let mac = self.parsed_mac(key_set, &state.keys, &key.schedule.kid, now)?;
            out.push((key.schedule.clone(), mac));
        }
        Ok(out)
    }

    /// Returns the parsed MAC key `kid` among `stored` (the set as just read) if its tags
    /// verify at `now`, unwrapping it on first use. Forgets cached keys that no longer
    /// verify, so a retired or revoked secret does not linger in memory.
    fn parsed_mac(
        &self,
        key_set: KeySetName,
        stored: &[StoredKey],
        kid: &KeyId,
        now: UnixMillis,
    ) -> Result<Arc<MacKey>, KeyError> {
        let verifying: Vec<&StoredKey> = stored
            .iter()
            .filter(|key| {
                key.schedule.state_at(now).is_published() && key.wrapped_private.is_some()
            })
            .collect();
        let cached = {
            let mut ring = self
                .ring
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let macs = ring.macs.entry(key_set).or_default();
            macs.retain(|cached_kid, _| {
                verifying.iter().any(|key| &key.schedule.kid == cached_kid)
            });
            macs.get(kid).cloned()
        };
        if let Some(mac) = cached {
            return Ok(mac);
        }
        let key = verifying
            .iter()
            .find(|key| &key.schedule.kid == kid)
            .ok_or_else(|| KeyError::UnknownKey(kid.clone()))?;
        let Some(wrapped) = &key.wrapped_private else {
            return Err(KeyError::UnknownKey(kid.clone()));
        };
        let secret = self.keyring.unwrap(key_set, kid.as_str(), wrapped)?;
        let mac = Arc::new(MacKey::from_secret(
            kid.clone(),
            key.schedule.algorithm,
            &secret,
        )?);
        self.ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .macs
            .entry(key_set)
            .or_default()
            .insert(kid.clone(), mac.clone());
        Ok(mac)
    }

    /// Runs the scheduler's check on every set: bootstrap, due rotations, retirements.
    pub async fn run_scheduled(&self) -> Result<Vec<RotationOutcome>, KeyError> {
        let mut outcomes = Vec::new();
        for key_set in KeySetName::ALL {
            let context = Actor::system(uuid::Uuid::now_v7().to_string(), "scheduled rotation");
            if let Some(outcome) = self.apply(key_set, Trigger::Scheduled, &context).await? {
                outcomes.push(outcome);
            }
        }
        if !outcomes.is_empty() {
            self.reload().await?;
        }
        Ok(outcomes)
    }

    /// Rotates `key_set` now (manual or emergency).
    pub async fn rotate(
        &self,
        key_set: KeySetName,
        trigger: Trigger,
        context: &Actor,
    ) -> Result<RotationOutcome, KeyError> {
        let outcome = self
            .apply(key_set, trigger, context)
            .await?
            .ok_or(KeyError::NoSigner(key_set))?;
        self.reload().await?;
        Ok(outcome)
    }

    /// Revokes one key (in whichever set holds it).
    pub async fn revoke(&self, kid: &KeyId, context: &Actor) -> Result<RotationOutcome, KeyError> {
        for key_set in KeySetName::ALL {
            let state = self.store.key_set(key_set).await?;
            if state.keys.iter().any(|key| &key.schedule.kid == kid) {
                let trigger = Trigger::Revoke { kid: kid.clone() };
                let outcome = self
                    .apply(key_set, trigger, context)
                    .await?
                    .ok_or_else(|| KeyError::UnknownKey(kid.clone()))?;
                self.reload().await?;
                return Ok(outcome);
            }
        }
        Err(KeyError::UnknownKey(kid.clone()))
    }

    /// Plans and commits one change, re-planning on conflicts. `None` when nothing was due.
    async fn apply(
        &self,
        key_set: KeySetName,
        trigger: Trigger,
        context: &Actor,
    ) -> Result<Option<RotationOutcome>, KeyError> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let Some(PreparedChange { commit, plan }) =
                self.prepare(key_set, &trigger, context).await?
            else {
                return Ok(None);
            };
            match self.store.commit_keys(commit).await {
                Ok(revision) => {
                    let outcome = outcome_of(key_set, &plan, revision);
                    info!(
                        key_set = %key_set,
                        new_kid = ?outcome.new_kid.as_ref().map(KeyId::as_str),
                        previous_kid = ?outcome.previous_kid.as_ref().map(KeyId::as_str),
                        revoked = plan.revoked.len(),
                        retired = plan.retired.len(),
                        revision = revision.0,
                        actor = %context.principal,
                        "key set changed"
                    );
                    return Ok(Some(outcome));
                }
                Err(StoreError::Conflict) => {
                    warn!(key_set = %key_set, "concurrent key change; re-planning");
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(KeyError::Busy(key_set))
    }

    /// Plans one change of `key_set` on its stored state and builds its commit without
    /// writing it; `None` when nothing is due. The commit carries the generation it was
    /// planned on, so once someone else changes the set it fails with `Conflict`: plan
    /// again. Used by [`Self::apply`] and by an emergency, which commits the changes of
    /// every set together with its revocation.
    pub async fn prepare(
        &self,
        key_set: KeySetName,
        trigger: &Trigger,
        context: &Actor,
    ) -> Result<Option<PreparedChange>, KeyError> {
        let policy = self.policy(key_set);
        let now = self.clock.now();
        let state = self.store.key_set(key_set).await?;
        let views = key_views(&state.keys);
        let new_kid =
            KeyId::new(material::new_kid(key_set)).map_err(|_| KeyError::NoSigner(key_set))?;
        let plan = rotation::plan(&views, &policy, trigger, now, new_kid)?;
        if plan.is_empty() {
            return Ok(None);
        }
        let commit = self.build_commit(
            key_set,
            trigger,
            &plan,
            &state.keys,
            state.generation,
            now,
            context,
        )?;
        Ok(Some(PreparedChange { commit, plan }))
    }

    /// Turns `plan` into one store commit: the key writes, the bundle events and the audit
    /// rows, guarded by the set's `generation`.
    ///
    /// Long on purpose: each part of the plan (created, rescheduled or revoked, retired or
    /// stripped of its material) adds its write, its event and its audit row together, so
    /// the three lists cannot drift apart; split up, each part would need all three lists.
    #[allow(clippy::too_many_arguments)]
    fn build_commit(
        &self,
        key_set: KeySetName,
        trigger: &Trigger,
        plan: &Plan,
        stored: &[StoredKey],
        generation: i64,
        now: UnixMillis,
        context: &Actor,
    ) -> Result<KeyCommit, KeyError> {
        let mut writes = Vec::new();
        let mut changes = Vec::new();
        let mut audit = Vec::new();
        let audit_entry = |action: AuditAction, target: &str| context.entry(now, action, target);
        let wrapped_of = |kid: &KeyId| {
            stored
                .iter()
                .find(|key| &key.schedule.kid == kid)
                .and_then(|key| key.wrapped_private.clone())
        };

        if let Some(new_key) = &plan.create {
            let generated = material::generate(new_key.algorithm, new_key.kid.as_str())?;
            let wrapped =
                self.keyring
                    .wrap(key_set, new_key.kid.as_str(), &generated.private_key)?;
            let schedule = KeySchedule {
                kid: new_key.kid.clone(),
                key_set,
                algorithm: new_key.algorithm,
                created_at: now,
                activates_at: new_key.activates_at,
                deactivates_at: None,
                verify_until: None,
                revoked_at: None,
                public_jwk: generated.public_jwk,
            };
            writes.push(KeyWrite::Insert(StoredKey {
                schedule: schedule.clone(),
                wrapped_private: Some(wrapped),
            }));
            changes.push(BundleChange::KeyUpserted { key: schedule });
            audit.push(audit_entry(AuditAction::KeyCreate, new_key.kid.as_str()));
        }
        for schedule in &plan.rescheduled {
            let revoked = plan.revoked.contains(&schedule.kid);
            writes.push(KeyWrite::Update(StoredKey {
                schedule: schedule.clone(),
                // A revoked key never signs again: its private key goes at once.
                wrapped_private: if revoked {
                    None
                } else {
                    wrapped_of(&schedule.kid)
                },
            }));
            if revoked {
                changes.push(BundleChange::KeyRevoked {
                    key: schedule.clone(),
                });
                audit.push(audit_entry(AuditAction::KeyRevoke, schedule.kid.as_str()));
            } else {
                changes.push(BundleChange::KeyUpserted {
                    key: schedule.clone(),
                });
            }
        }
        for kid in plan.retired.iter().chain(&plan.drop_private) {
            if let Some(key) = stored.iter().find(|key| &key.schedule.kid == kid) {
                writes.push(KeyWrite::Update(StoredKey {
                    schedule: key.schedule.clone(),
                    wrapped_private: None,
                }));
            }
            if plan.retired.contains(kid) {
                changes.push(BundleChange::KeyUnpublished { kid: kid.clone() });
                audit.push(audit_entry(AuditAction::KeyRetire, kid.as_str()));
            }
        }
        let rotated = match trigger {
            Trigger::Emergency => Some(AuditAction::KeyRotateEmergency),
            Trigger::Manual { .. } => Some(AuditAction::KeyRotate),
            Trigger::Scheduled if plan.previous_signer.is_some() && plan.create.is_some() => {
                Some(AuditAction::KeyRotateScheduled)
            }
            _ => None,
        };
        if let Some(action) = rotated {
            audit.push(audit_entry(action, key_set.as_str()));
        }
        // Filtered at the source: a set that is not published (HMAC) puts nothing in the
        // event log, so neither the hub nor any sidecar ever receives its keys.
        if !key_set.is_published() {
            changes.clear();
        }
        Ok(KeyCommit {
            key_set,
            expected_generation: generation,
            writes,
            changes,
            audit,
            at: now,
        })
    }
}

/// Returns the planner's view of stored keys.
fn key_views(keys: &[StoredKey]) -> Vec<KeyView> {
    keys.iter()
        .map(|key| KeyView {
            schedule: key.schedule.clone(),
            has_private: key.wrapped_private.is_some(),
        })
        .collect()
}

fn outcome_of(key_set: KeySetName, plan: &Plan, revision: Revision) -> RotationOutcome {
    let new_kid = plan
        .create
        .as_ref()
        .map(|new_key| new_key.kid.clone())
        .or_else(|| {
            // A manual rotation may promote an already-published successor.
            plan.rescheduled
                .iter()
                .find(|schedule| {
                    Some(&schedule.kid) != plan.previous_signer.as_ref()
                        && schedule.revoked_at.is_none()
                })
                .map(|schedule| schedule.kid.clone())
        });
    let activates_at = plan
        .create
        .as_ref()
        .map(|new_key| new_key.activates_at)
        .or_else(|| {
            plan.rescheduled
                .iter()
                .find(|schedule| Some(&schedule.kid) == new_kid.as_ref())
                .map(|schedule| schedule.activates_at)
        });
    let previous_verify_until = plan
        .rescheduled
        .iter()
        .find(|schedule| Some(&schedule.kid) == plan.previous_signer.as_ref())
        .and_then(|schedule| {
            if schedule.revoked_at.is_some() {
                None
            } else {
                schedule.verify_until
            }
        });
    RotationOutcome {
        key_set,
        new_kid,
        previous_kid: plan.previous_signer.clone(),
        activates_at,
        previous_verify_until,
        revoked_kids: plan.revoked.clone(),
        revision,
    }
}
