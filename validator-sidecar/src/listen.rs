//! What the trust-bundle subscription tells the parts of the sidecar that cache answers
//! about credentials or hold one: every snapshot applied, and every delta event.

use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleEvent, TrustBundle};

/// Told of bundle changes by the subscription, after they are applied to the state.
pub trait BundleListener: Send + Sync {
    /// A snapshot replaced the bundle at `now` (events may have been missed before it).
    fn on_snapshot(&self, now: UnixMillis, bundle: &TrustBundle);
    /// A delta carried `event`, received at `now`.
    fn on_event(&self, now: UnixMillis, event: &BundleEvent);
}
