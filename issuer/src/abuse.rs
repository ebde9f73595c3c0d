//! Abuse resistance for calls without a valid credential: per-peer rate limiting of
//! refusals and their summary in the audit log.
//!
//! Contract (see ARCHITECTURE.md, "Abuse"): a call refused for a missing or invalid
//! credential takes a token from its peer's bucket (`bucket.rs`); once the peer has none,
//! further such calls get `RESOURCE_EXHAUSTED` with `retry-after`, and the authenticator
//! consults nothing but its caches for that peer, so a flood costs no database work. A
//! valid credential is never refused for its peer's budget. Every such refusal is counted
//! in the peer's burst (`digest.rs`), and a background task writes one `auth.denied` row
//! per ended burst.

pub mod bucket;
pub mod digest;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tessera_common::{Clock, UnixMillis};
use tokio::sync::watch;
use tracing::{Instrument, info_span, warn};

pub use self::bucket::{BucketPolicy, Peer, PeerLimiter};
pub use self::digest::{DenialDigest, DenialSummary, DigestPolicy};
use crate::audit::{AuditAction, AuditEntry, AuditOutcome, Principal};
use crate::store::Store;

/// How often the flusher looks for ended bursts.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The metric label of refusals for a missing or invalid credential (DESIGN §9).
const SCOPE_AUTH_FAILURE: &str = "auth_failure";

/// What to answer a call refused for want of a valid credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Within the peer's budget: `UNAUTHENTICATED`.
    Unauthenticated,
    /// Over it: `RESOURCE_EXHAUSTED`, try again after the duration.
    RateLimited { retry_after: Duration },
}

/// The per-peer budgets and the open bursts of one issuer.
pub struct AbuseGuard {
    limiter: PeerLimiter,
    denials: Mutex<DenialDigest>,
    flusher_started: AtomicBool,
}

// === impl AbuseGuard ===

impl AbuseGuard {
    pub fn new(bucket_policy: BucketPolicy, digest_policy: DigestPolicy) -> Self {
        AbuseGuard {
            limiter: PeerLimiter::new(bucket_policy),
            denials: Mutex::new(DenialDigest::new(digest_policy)),
            flusher_started: AtomicBool::new(false),
        }
    }

    /// Returns how long `peer` must wait when it is over its budget; such a peer's
    /// credentials are checked against the caches only.
    pub fn over_budget(&self, peer: Peer, now: UnixMillis) -> Option<Duration> {
        self.limiter.over_budget(peer, now)
    }

    /// Charges a call of `rpc` from `peer` refused for want of a valid credential, counts
    /// it in the peer's burst and decides the answer.
    pub fn refuse(&self, peer: Peer, rpc: &str, now: UnixMillis) -> Refusal {
        metrics::counter!("tessera_ratelimit_attempts_total", "scope" => SCOPE_AUTH_FAILURE)
            .increment(1);
        let refusal = match self.limiter.charge(peer, now) {
            Ok(()) => Refusal::Unauthenticated,
            Err(retry_after) => {
                metrics::counter!("tessera_ratelimit_exceeded_total", "scope" => SCOPE_AUTH_FAILURE)
                    .increment(1);
                Refusal::RateLimited { retry_after }
            }
        };
        let rate_limited = matches!(refusal, Refusal::RateLimited { .. });
        self.digest().record(peer, rpc, rate_limited, now);
        refusal
    }

    /// Removes and returns the bursts that ended by `now`.
    pub fn take_due(&self, now: UnixMillis) -> Vec<DenialSummary> {
        self.digest().take_due(now)
    }

    /// Removes and returns every open burst.
    pub fn take_all(&self) -> Vec<DenialSummary> {
        self.digest().take_all()
    }

    /// Starts the task that writes ended bursts to the audit log, unless it runs already.
    /// Started with the first refusal, so an issuer nobody attacks runs no such task.
    pub fn start_flusher(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
    ) {
        if self.flusher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(
            run_flusher(self.clone(), store, clock, shutdown)
                .instrument(info_span!("denial_flusher")),
        );
    }

    fn digest(&self) -> std::sync::MutexGuard<'_, DenialDigest> {
        // A poisoned lock still guards a consistent digest: each update completes before
        // anything that could panic.
        self.denials.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for AbuseGuard {
    fn default() -> Self {
        AbuseGuard::new(BucketPolicy::default(), DigestPolicy::default())
    }
}

/// Returns the audit row of one ended burst, stamped `at`.
pub fn summary_entry(summary: &DenialSummary, at: UnixMillis) -> AuditEntry {
    AuditEntry {
        at,
        actor: Principal::Anonymous,
        action: AuditAction::AuthDenied,
        target: summary.target(),
        // A summary stands for many requests; it gets an id of its own.
        request_id: uuid::Uuid::now_v7().to_string(),
        reason: summary.reason(),
        outcome: AuditOutcome::Denied,
    }
}

/// Appends one audit row per summary, logging (not stopping) on a store failure.
pub async fn write_summaries(store: &dyn Store, summaries: Vec<DenialSummary>, at: UnixMillis) {
    for summary in summaries {
        if let Err(error) = store.append_audit(summary_entry(&summary, at)).await {
            warn!(%error, n_refused = summary.n_refused, "audit append of a denial summary failed");
        }
    }
}

/// Writes ended bursts every `FLUSH_INTERVAL`, and every open one when the server shuts
/// down.
async fn run_flusher(
    guard: Arc<AbuseGuard>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = clock.now();
                write_summaries(store.as_ref(), guard.take_due(now), now).await;
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    write_summaries(store.as_ref(), guard.take_all(), clock.now()).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn guard() -> AbuseGuard {
        AbuseGuard::new(
            BucketPolicy {
                burst: 3,
                refill_per_second: 1,
                max_peers: 100,
            },
            DigestPolicy::default(),
        )
    }

    const PEER: Peer = Peer::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));

    #[test]
    fn refusals_beyond_the_burst_are_rate_limited_and_all_are_summarised() {
        let guard = guard();
        let now = UnixMillis(5_000);
        let refusals: Vec<Refusal> = (0..5).map(|_| guard.refuse(PEER, "K/L", now)).collect();
        assert_eq!(&refusals[..3], [Refusal::Unauthenticated; 3]);
        assert_eq!(
            refusals[3],
            Refusal::RateLimited {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(guard.over_budget(PEER, now), Some(Duration::from_secs(1)));
        let later = now.plus(Duration::from_secs(10));
        assert_eq!(guard.over_budget(PEER, later), None);
        let summaries = guard.take_due(later);
        assert_eq!(summaries.len(), 1);
        assert_eq!(
            (summaries[0].n_refused, summaries[0].n_rate_limited),
            (5, 2)
        );
        let entry = summary_entry(&summaries[0], later);
        assert_eq!(
            (
                entry.actor.as_str(),
                entry.action.as_str(),
                entry.target.as_str()
            ),
            ("anonymous", "auth.denied", "K/L")
        );
        assert!(
            entry.reason.starts_with("5 refused calls from 127.0.0.1"),
            "{}",
            entry.reason
        );
    }
}
