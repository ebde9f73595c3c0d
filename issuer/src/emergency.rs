//! Emergency revocation (DESIGN §5): of one tenant (a tenant entry ending all its
//! sessions and refresh families) or of everything (an emergency rotation of every key
//! set plus an `all` entry ending every session).
//!
//! Contract:
//! - One incident, one unit. The incident's record, the key sets' rotations and the
//!   revocation are one store transaction (`SessionStore::commit_emergency`): all of it
//!   is in force, or none of it and not the record either. So a failure — an error, a
//!   crash, a lost connection — never leaves the incident id burned: a retry with the
//!   same id does the whole work. A global emergency is all-or-nothing across key sets
//!   for the same reason (we chose one commit over completing the rest on retry: no
//!   reader ever sees one set rotated and the next not, and there is no partial state
//!   to reason about).
//! - Idempotent per incident: once recorded, the same incident id answers `Replayed`
//!   and changes nothing. Of concurrent calls with one id exactly one applies.
//! - The incident id is scoped by what it revokes (one tenant, or everything): an admin
//!   confined to one tenant cannot, by choosing an id first, turn another tenant's
//!   emergency with the same id into a replay that revokes nothing.
//! - A tenant emergency also deactivates, in that same transaction, every live API key,
//!   service token and webhook token of the tenant (revoked; counted in the audit
//!   entry's reason). Verifiers learn it from the tenant entry the commit publishes (a
//!   cached answer verified before its `revoked_at` is dropped), not from one event per
//!   credential. A global emergency leaves standing credentials alone: they are not
//!   signed by the rotated keys, and revoking every tenant's integrations at once is a
//!   tenant-by-tenant decision.
//! - Every emergency (tenant or global) also invalidates the scope's live OTP and
//!   magic-link challenges and unused one-time tokens (`Challenges::invalidate_all`,
//!   audited as `challenge.emergency_invalidate`), before its commit: a failure there
//!   fails the emergency, and a retry invalidates again (idempotent). A replay of a
//!   recorded incident invalidates what was started since too, which is what an operator
//!   re-asserting an incident wants.
//! - Every key set is planned on its current state; if one changes before the commit
//!   (a scheduled rotation on another replica), the commit fails as a whole and is
//!   planned again.

use std::time::Duration;

use tessera_common::bundle::Revision;
use tessera_common::ids::{IdError, KeyId, TenantId, check_identifier};
use tessera_common::keys::KeySetName;
use tessera_common::revocation::{RevocationEntry, RevocationKind};
use tessera_common::{Clock, UnixMillis};
use tracing::{info, warn};

use crate::audit::{Actor, AuditAction};
use crate::keys::KeyManager;
use crate::keys::manager::{KeyError, PreparedChange};
use crate::keys::rotation::Trigger;
use crate::store::{
    DeactivatedCredentials, EmergencyCommit, EmergencyCommitted, IncidentRecord, Revocation,
    RevocationEffect, SessionStore, Store, StoreError,
};

/// Plans of a global emergency tried before giving up on key sets that keep changing.
const MAX_COMMIT_ATTEMPTS: usize = 5;

/// An operator-chosen incident id (a ticket number): the idempotency key of an emergency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentId(String);

impl IncidentId {
    /// Validates `value` as an identifier (it reaches the audit log).
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_identifier("incident_id", &value)?;
        Ok(IncidentId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IncidentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an emergency revokes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmergencyScope {
    /// Every token and session of one tenant.
    Tenant(TenantId),
    /// Every key (each set rotated in emergency mode), token and session.
    Global,
}

/// The effect of an emergency that was carried out now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmergencyApplied {
    pub revision: Revision,
    pub n_sessions: u64,
    /// The tenant's API keys, service tokens and webhook tokens deactivated in the same
    /// transaction (tenant only: a global emergency leaves standing credentials alone).
    pub deactivated: DeactivatedCredentials,
    /// The successor of each key set (global only).
    pub new_kids: Vec<KeyId>,
    /// Every key revoked (global only): signers, retiring and pending keys alike.
    pub revoked_kids: Vec<KeyId>,
}

/// What an emergency call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmergencyOutcome {
    Applied(EmergencyApplied),
    /// The incident had already been handled; nothing changed.
    Replayed,
}

/// Why an emergency failed. Nothing of it is in force; a retry with the same incident
/// id does the work.
#[derive(Debug, thiserror::Error)]
pub enum EmergencyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("key sets keep changing concurrently; retry")]
    Busy,
}

/// The emergency revoker: borrows what it needs from the application state for one call.
pub struct Emergency<'a> {
    pub store: &'a dyn Store,
    pub sessions: &'a dyn SessionStore,
    pub keys: &'a KeyManager,
    pub clock: &'a dyn Clock,
    /// How long a revocation entry is kept (the longest token lifetime + leeway).
    pub revocation_horizon: Duration,
    /// Live OTP and magic-link challenges and unused one-time tokens (action links,
    /// resets, verifications) of the scope are invalidated first (`None`: not part of
    /// this emergency).
    pub challenges: Option<&'a crate::challenges::Challenges>,
}

// === impl Emergency ===

impl Emergency<'_> {
    /// Carries out the emergency `incident` over `scope`, once: a repeat is `Replayed`.
    pub async fn revoke(
        &self,
        incident: &IncidentId,
        scope: &EmergencyScope,
        actor: &Actor,
    ) -> Result<EmergencyOutcome, EmergencyError> {
        if self.handled_by_an_earlier_version(incident).await? {
            return Ok(EmergencyOutcome::Replayed);
        }
        let actor = Actor {
            reason: format!("emergency {incident}: {}", actor.reason),
            ..actor.clone()
        };
        // Before the commit, so a failure here fails the emergency and its retry (same
        // incident, not yet recorded) invalidates again; invalidating is idempotent.
        if let Some(challenges) = self.challenges {
            let tenant = match scope {
                EmergencyScope::Tenant(tenant) => Some(tenant),
                EmergencyScope::Global => None,
            };
            challenges
                .invalidate_all(tenant, &actor)
                .await
                .map_err(|error| match error {
                    crate::challenges::ChallengeError::Store(error) => EmergencyError::Store(error),
                    other => EmergencyError::Store(StoreError::Unavailable(other.to_string())),
                })?;
        }
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let prepared = self.prepare_rotations(scope, &actor).await?;
            let commit = self.commit_of(incident, scope, &actor, &prepared);
            match self.sessions.commit_emergency(commit).await {
                Ok(EmergencyCommitted::Applied {
                    revision,
                    n_sessions,
                    deactivated,
                }) => {
                    return Ok(EmergencyOutcome::Applied(
                        self.applied(scope, &prepared, revision, n_sessions, deactivated)
                            .await,
                    ));
                }
                Ok(EmergencyCommitted::AlreadyRecorded) => return Ok(EmergencyOutcome::Replayed),
                Err(StoreError::Conflict) if !prepared.is_empty() => {
                    warn!(incident = %incident, "a key set changed during the emergency; re-planning");
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(EmergencyError::Busy)
    }

    /// Plans the emergency rotation of every key set (global) or none (tenant).
    async fn prepare_rotations(
        &self,
        scope: &EmergencyScope,
        actor: &Actor,
    ) -> Result<Vec<PreparedChange>, EmergencyError> {
        if *scope != EmergencyScope::Global {
            return Ok(Vec::new());
        }
        let mut prepared = Vec::new();
        for key_set in KeySetName::ALL {
            let change = self
                .keys
                .prepare(key_set, &Trigger::Emergency, actor)
                .await?
                .ok_or(KeyError::NoSigner(key_set))?;
            prepared.push(change);
        }
        Ok(prepared)
    }

    fn commit_of(
        &self,
        incident: &IncidentId,
        scope: &EmergencyScope,
        actor: &Actor,
        prepared: &[PreparedChange],
    ) -> EmergencyCommit {
        let now = self.clock.now();
        let (entry, effect) = revocation_of(scope, now, now.plus(self.revocation_horizon));
        let audit = actor.entry(
            now,
            AuditAction::revocation(entry.kind),
            entry.value.clone(),
        );
        EmergencyCommit {
            incident: IncidentRecord {
                name: incident_record_name(incident, scope),
                value: format!("{} {} {}", actor.principal, actor.request_id, now.0).into_bytes(),
            },
            key_commits: prepared
                .iter()
                .map(|change| change.commit.clone())
                .collect(),
            revocation: Revocation {
                entries: vec![entry],
                effects: vec![effect],
                audit: vec![audit],
                at: now,
            },
        }
    }

    /// Reports a committed emergency and brings the in-memory keys up to date.
    async fn applied(
        &self,
        scope: &EmergencyScope,
        prepared: &[PreparedChange],
        revision: Revision,
        n_sessions: u64,
        deactivated: DeactivatedCredentials,
    ) -> EmergencyApplied {
        let kind = match scope {
            EmergencyScope::Tenant(_) => RevocationKind::Tenant,
            EmergencyScope::Global => RevocationKind::All,
        };
        metrics::counter!("tessera_token_invalidation_total", "reason" => kind.as_str())
            .increment(1);
        let mut new_kids = Vec::new();
        let mut revoked_kids = Vec::new();
        for change in prepared {
            let outcome = change.outcome(revision);
            new_kids.extend(outcome.new_kid);
            revoked_kids.extend(outcome.revoked_kids);
        }
        if !prepared.is_empty() {
            // The emergency is in force whatever happens here: the revoked keys are gone
            // from the store and the bundle pump reloads on their events anyway.
            if let Err(error) = self.keys.reload().await {
                warn!(%error, "reloading keys after an emergency failed");
            }
        }
        for (kind, n) in [
            ("emergency_api_key", deactivated.api_keys),
            ("emergency_service_token", deactivated.service_tokens),
            ("emergency_webhook_token", deactivated.webhook_tokens),
        ] {
            if n > 0 {
                metrics::counter!("tessera_token_invalidation_total", "reason" => kind)
                    .increment(n);
            }
        }
        info!(
            revision = revision.0,
            n_sessions,
            revoked = revoked_kids.len(),
            api_keys = deactivated.api_keys,
            service_tokens = deactivated.service_tokens,
            webhook_tokens = deactivated.webhook_tokens,
            "emergency revocation in force"
        );
        EmergencyApplied {
            revision,
            n_sessions,
            deactivated,
            new_kids,
            revoked_kids,
        }
    }

    /// Returns true when a version before the one-transaction emergency recorded this
    /// incident as handled: it claimed `incident:<id>` before doing the work and marked a
    /// failed claim `…:released`. Those records are never written any more, so reading
    /// them outside the transaction races with nothing.
    async fn handled_by_an_earlier_version(
        &self,
        incident: &IncidentId,
    ) -> Result<bool, StoreError> {
        let claim = format!("incident:{incident}");
        if self.store.meta(&claim).await?.is_none() {
            return Ok(false);
        }
        Ok(self
            .store
            .meta(&format!("{claim}:released"))
            .await?
            .is_none())
    }
}

/// The entry an emergency publishes (dropped at `drop_after`) and the sessions it ends.
fn revocation_of(
    scope: &EmergencyScope,
    now: UnixMillis,
    drop_after: UnixMillis,
) -> (RevocationEntry, RevocationEffect) {
    let (kind, value, tenant, effect) = match scope {
        EmergencyScope::Tenant(tenant) => (
            RevocationKind::Tenant,
            tenant.to_string(),
            Some(tenant.to_string()),
            RevocationEffect::Tenant(tenant.clone()),
        ),
        EmergencyScope::Global => (
            RevocationKind::All,
            String::new(),
            None,
            RevocationEffect::All,
        ),
    };
    let entry = RevocationEntry {
        kind,
        value,
        tenant_id: tenant,
        revoked_at: now,
        drop_after,
    };
    (entry, effect)
}

/// The metadata name an incident is recorded under: scoped by what it revokes, and
/// unambiguous (the tenant id, which may hold any printable character, is
/// length-prefixed). Distinct from the `incident:` names earlier versions wrote.
fn incident_record_name(incident: &IncidentId, scope: &EmergencyScope) -> String {
    match scope {
        EmergencyScope::Global => format!("incident/global/{incident}"),
        EmergencyScope::Tenant(tenant) => {
            format!(
                "incident/tenant/{}/{tenant}/{incident}",
                tenant.as_str().len()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_record_names_are_scoped_and_unambiguous() {
        let incident = |id: &str| IncidentId::new(id).unwrap();
        let tenant = |id: &str| EmergencyScope::Tenant(TenantId::new(id).unwrap());
        // The same id in two tenants, and in a tenant and globally, are two incidents.
        let names = [
            incident_record_name(&incident("inc-1"), &tenant("acme")),
            incident_record_name(&incident("inc-1"), &tenant("globex")),
            incident_record_name(&incident("inc-1"), &EmergencyScope::Global),
            // A separator inside the tenant id cannot make two pairs collide.
            incident_record_name(&incident("b/c"), &tenant("a")),
            incident_record_name(&incident("c"), &tenant("a/b")),
        ];
        for (i, name) in names.iter().enumerate() {
            assert!(!name.starts_with("incident:"), "{name}");
            for other in &names[i + 1..] {
                assert_ne!(name, other);
            }
        }
    }

    #[test]
    fn an_emergency_publishes_the_entry_of_its_scope() {
        let (entry, effect) = revocation_of(
            &EmergencyScope::Tenant(TenantId::new("acme").unwrap()),
            UnixMillis(5),
            UnixMillis(9),
        );
        assert_eq!(entry.kind, RevocationKind::Tenant);
        assert_eq!(entry.tenant_id.as_deref(), Some("acme"));
        assert_eq!(
            (entry.revoked_at, entry.drop_after),
            (UnixMillis(5), UnixMillis(9))
        );
        assert_eq!(
            effect,
            RevocationEffect::Tenant(TenantId::new("acme").unwrap())
        );
        let (entry, effect) = revocation_of(&EmergencyScope::Global, UnixMillis(5), UnixMillis(9));
        assert_eq!((entry.kind, entry.tenant_id), (RevocationKind::All, None));
        assert_eq!(effect, RevocationEffect::All);
    }
}
