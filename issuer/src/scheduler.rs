//! Background jobs: the rotation scheduler (bootstrap, due rotations, retirements), key-age
//! metrics and event-log pruning. Each run is audited by the key manager's commits.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::Clock;
use tessera_common::bundle::Revision;
use tessera_common::keys::KeySetName;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::actions::ActionLinks;
use crate::api_keys::ApiKeys;
use crate::audit::{Actor, AuditAction, AuditEntry, AuditOutcome};
use crate::hub::RETAINED_EVENTS;
use crate::keys::KeyManager;
use crate::keys::rotation::{KeyView, signer_at};
use crate::opaque_tokens::OpaqueTokens;
use crate::store::{SessionStore, Store};

/// Events kept in the store beyond the in-memory window (for resumption after restarts).
const EVENTS_KEPT: u64 = 10 * RETAINED_EVENTS as u64;

/// The standing credentials whose expiry the scheduler runs.
pub struct Standing {
    pub api_keys: Arc<ApiKeys>,
    pub opaque_tokens: Arc<OpaqueTokens>,
    /// Single-use tokens: records an hour past expiry deleted.
    pub actions: Arc<ActionLinks>,
    /// OTP and magic-link challenges: used and expired ones pruned after a day.
    pub challenges: Arc<crate::challenges::Challenges>,
    /// The secrets inventory: due rotations, unfinished ones, warnings (issue 12).
    pub secrets: Arc<crate::secrets::Secrets>,
}

/// Runs the scheduler every `interval` until `shutdown` fires.
pub async fn run(
    keys: Arc<KeyManager>,
    store: Arc<dyn Store>,
    sessions: Arc<dyn SessionStore>,
    standing: Standing,
    clock: Arc<dyn Clock>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let Standing {
        api_keys,
        opaque_tokens,
        actions,
        challenges,
        secrets,
    } = standing;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        run_once(&keys, &store, clock.as_ref()).await;
        if let Err(error) = sessions.prune_revocations(clock.now()).await {
            warn!(%error, "revocation pruning failed");
        }
        // API keys entering their last week are marked `expiring`, those past expiry
        // deactivated (each once, audited; conditional writes, so replicas agree).
        if let Err(error) = api_keys.run_expiry().await {
            warn!(%error, "api key expiry pass failed");
        }
        // Service and webhook tokens past expiry are marked `expired`, and rows a week
        // past it deleted, so the table holds about a week of tokens.
        if let Err(error) = opaque_tokens.sweep().await {
            warn!(%error, "opaque token sweep failed");
        }
        // Single-use token records an hour past expiry (used or not) are deleted, so the
        // table holds the live tokens and about an hour of expired ones.
        if let Err(error) = actions.prune().await {
            warn!(%error, "single-use token pruning failed");
        }
        // Challenges a day past expiry (verified, dead or unused alike) and ended rate
        // windows are deleted, so both tables hold about a day of rows.
        if let Err(error) = challenges.prune().await {
            warn!(%error, "challenge pruning failed");
        }
        // Secrets: unfinished rotations resumed, due ones rotated (90 % of the cadence),
        // warnings at 80 % recorded once; each step a generation-checked commit, so
        // replicas rotate a secret exactly once.
        for action in secrets.run_scheduled().await {
            info!(?action, "secrets scheduler");
        }
    }
}

/// One scheduler pass.
pub async fn run_once(keys: &KeyManager, store: &Arc<dyn Store>, clock: &dyn Clock) {
    match keys.run_scheduled().await {
        Ok(outcomes) => {
            for outcome in outcomes {
                info!(key_set = %outcome.key_set, new_kid = ?outcome.new_kid.as_ref().map(|kid| kid.to_string()), "scheduled key change committed");
            }
        }
        Err(error) => {
            warn!(%error, "scheduled rotation failed");
            metrics::counter!("tessera_rotation_failures_total").increment(1);
            let actor = Actor::system(uuid::Uuid::now_v7().to_string(), "scheduled rotation");
            let entry = AuditEntry {
                outcome: AuditOutcome::Failed,
                ..actor.entry(clock.now(), AuditAction::KeyRotateScheduled, "keys")
            };
            if let Err(error) = store.append_audit(entry).await {
                warn!(%error, "audit append failed");
            }
        }
    }
    record_key_ages(keys, clock).await;
    if let Ok(latest) = store.latest_revision().await
        && latest.0 > EVENTS_KEPT
        && let Err(error) = store.prune_events(Revision(latest.0 - EVENTS_KEPT)).await
    {
        warn!(%error, "event pruning failed");
    }
}

async fn record_key_ages(keys: &KeyManager, clock: &dyn Clock) {
    let now = clock.now();
    for key_set in KeySetName::ALL {
        let Ok(schedules) = keys.list(Some(key_set)).await else {
            continue;
        };
        let views: Vec<KeyView> = schedules
            .into_iter()
            .map(|schedule| KeyView {
                schedule,
                has_private: true,
            })
            .collect();
        if let Some(signer) = signer_at(&views, now) {
            metrics::gauge!("tessera_signing_key_age_seconds", "key_set" => key_set.as_str())
                .set(now.since(signer.activates_at).as_secs_f64());
        }
    }
}
