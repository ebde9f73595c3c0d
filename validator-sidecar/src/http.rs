//! Plain HTTP for probes and scraping: `/healthz` (the process is up), `/readyz` (503
//! until the first bundle and while stale under fail-closed), `/metrics` (Prometheus).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::health::ReadinessProbe;
use crate::state::Readiness;

#[derive(Clone)]
struct HttpState {
    probe: ReadinessProbe,
    metrics: PrometheusHandle,
}

/// Returns the HTTP routes.
pub fn router(probe: ReadinessProbe, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(HttpState { probe, metrics })
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    match state.probe.check() {
        Readiness::Ready => (StatusCode::OK, "ready\n"),
        Readiness::NoBundle => (StatusCode::SERVICE_UNAVAILABLE, "no trust bundle yet\n"),
        Readiness::Stale => (StatusCode::SERVICE_UNAVAILABLE, "trust bundle stale\n"),
    }
}

async fn render_metrics(
    State(state): State<HttpState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    // Refresh the staleness gauge at scrape time.
    state.probe.check();
    state.metrics.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
