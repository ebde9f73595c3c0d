//! Per-key rate-limit windows (issue 10): one row per API key holding, for the current
//! minute, hour and day window (fixed, UTC, aligned to the epoch), the admissions
//! charged. A lease charges every window at once, in one atomic statement or
//! transaction, so concurrent leases on any number of replicas never charge a window
//! beyond its limit. The arithmetic is `api_keys::ratelimit::charge`; a backend only
//! makes it atomic.

use async_trait::async_trait;
use tessera_common::UnixMillis;

use super::StoreError;
use crate::api_keys::ratelimit::{Lease, RateLimits};

/// The rate-limit windows' storage. A supertrait of `ApiKeyStore`, so every API-key
/// store has it.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Charges up to `want` admissions of key `key_id` under `limits` at `now`: per
    /// window, the count restarts when the window changed, then `granted = min(want,
    /// what every window has left)` is added to all three. Atomic: of concurrent leases
    /// on any replica, the sum granted within a window never exceeds its limit. Does not
    /// check that the key exists (the caller has read it).
    async fn lease(
        &self,
        key_id: &str,
        limits: RateLimits,
        want: u32,
        now: UnixMillis,
    ) -> Result<Lease, StoreError>;
}
