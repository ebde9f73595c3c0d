//! Readiness: turns the bundle state into `grpc.health.v1` statuses and gauges. NOT_SERVING
//! until the first bundle (from the stream or the cache file), and while the bundle is
//! stale beyond `max_staleness` under the fail-closed policy.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::Clock;
use tessera_proto::v1::validator_service_server::ValidatorServiceServer;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::ValidationConfig;
use crate::metrics;
use crate::service::ValidatorGrpc;
use crate::state::{BundleState, Readiness};

/// How often staleness is re-evaluated between bundle changes.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The service name whose status the validator reports (besides the server's, "").
pub const VALIDATOR_SERVICE: &str = <ValidatorServiceServer<ValidatorGrpc> as NamedService>::NAME;

/// Computes readiness for probes.
#[derive(Clone)]
pub struct ReadinessProbe {
    pub state: Arc<BundleState>,
    pub clock: Arc<dyn Clock>,
    pub config: ValidationConfig,
}

impl std::fmt::Debug for ReadinessProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessProbe")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ReadinessProbe {
    /// Returns the current readiness and publishes the bundle gauges.
    pub fn check(&self) -> Readiness {
        let now = self.clock.now();
        metrics::record_bundle(self.state.revision(), self.state.staleness(now));
        self.state
            .readiness(now, self.config.max_staleness, self.config.stale_policy)
    }
}

/// Sets `reporter`'s statuses from the probe until `shutdown`, then reports NOT_SERVING.
pub async fn run_monitor(
    probe: ReadinessProbe,
    reporter: HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = probe.state.subscribe();
    let mut reported = None;
    loop {
        let readiness = probe.check();
        if reported != Some(readiness) {
            let status = match readiness {
                Readiness::Ready => ServingStatus::Serving,
                Readiness::NoBundle | Readiness::Stale => ServingStatus::NotServing,
            };
            tracing::info!(?readiness, "validator readiness changed");
            set_status(&reporter, status).await;
            reported = Some(readiness);
        }
        tokio::select! {
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
            _ = changes.changed() => {}
            _ = shutdown.changed() => break,
        }
    }
    set_status(&reporter, ServingStatus::NotServing).await;
}

/// Sets the status of the server ("") and of the validator service.
pub async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(VALIDATOR_SERVICE, status).await;
}
