//! Prometheus metrics of the sidecar (names per DESIGN §9), rendered at `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tessera_common::verify::Rejection;

/// Validations by outcome (`valid` or the rejection reason).
pub const VALIDATION_ATTEMPTS: &str = "tessera_auth_validation_attempt_total";
/// Revision of the bundle held.
pub const BUNDLE_REVISION: &str = "tessera_trust_bundle_revision";
/// Seconds since the last message from the issuer.
pub const BUNDLE_STALENESS: &str = "tessera_sidecar_bundle_staleness_seconds";
/// Resyncs triggered by unknown kids.
pub const RESYNCS: &str = "tessera_sidecar_resync_total";
/// Connections to the issuer's stream, by result.
pub const SUBSCRIPTIONS: &str = "tessera_sidecar_subscription_attempts_total";
/// Admissions checked against a rate limit, by scope (`api_key`): the issuer's names.
pub const RATELIMIT_ATTEMPTS: &str = "tessera_ratelimit_attempts_total";
/// Admissions refused over a rate limit, by scope.
pub const RATELIMIT_EXCEEDED: &str = "tessera_ratelimit_exceeded_total";
/// Expiry (Unix seconds) of the service token the sidecar holds for FetchServiceToken;
/// 0 while none is usable. Alert on `… - time()` running low: renewal keeps failing.
pub const SERVICE_TOKEN_EXPIRY: &str = "tessera_sidecar_service_token_expires_at_seconds";
/// Validations of standing opaque credentials (API keys, service and webhook tokens) by
/// kind and by where the answer came from (`cache`, `issuer`, `local`).
pub const CREDENTIAL_VALIDATIONS: &str = "tessera_sidecar_credential_validations_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// The `valid` outcome's counter, looked up once the recorder is installed: the common
/// outcome skips the registry's per-call key hashing and lookup.
static VALID: OnceLock<metrics::Counter> = OnceLock::new();
/// The counters of a cached API-key validation, looked up once for the same reason: the
/// hit path counts an admission and a cache answer on every call.
static API_KEY_ADMITTED: OnceLock<metrics::Counter> = OnceLock::new();
static API_KEY_FROM_CACHE: OnceLock<metrics::Counter> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle. Several sidecars in
/// one process (tests) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            // Present from the first scrape, so rate() has a starting point.
            let valid = metrics::counter!(VALIDATION_ATTEMPTS, "outcome" => "valid");
            valid.absolute(0);
            let _ = VALID.set(valid);
            let admitted = metrics::counter!(RATELIMIT_ATTEMPTS, "scope" => "api_key");
            admitted.absolute(0);
            let _ = API_KEY_ADMITTED.set(admitted);
            let _ = API_KEY_FROM_CACHE.set(metrics::counter!(
                CREDENTIAL_VALIDATIONS,
                "kind" => "api_key",
                "source" => "cache"
            ));
            handle
        })
        .clone()
}

/// Counts one validation.
pub fn record_validation<T>(verdict: &Result<T, Rejection>) {
    let outcome = match verdict {
        Ok(_) => match VALID.get() {
            Some(valid) => return valid.increment(1),
            None => "valid",
        },
        Err(rejection) => rejection.as_str(),
    };
    metrics::counter!(VALIDATION_ATTEMPTS, "outcome" => outcome).increment(1);
}

/// Counts one resync.
pub fn record_resync() {
    metrics::counter!(RESYNCS).increment(1);
}

/// Counts one connection attempt to the issuer (`ok` or `error`).
pub fn record_subscription(result: &'static str) {
    metrics::counter!(SUBSCRIPTIONS, "result" => result).increment(1);
}

/// Publishes the bundle's revision and staleness (`None`: never heard from the issuer).
pub fn record_bundle(revision: u64, staleness: Option<Duration>) {
    metrics::gauge!(BUNDLE_REVISION).set(revision as f64);
    let seconds = staleness.map_or(f64::INFINITY, |staleness| staleness.as_secs_f64());
    metrics::gauge!(BUNDLE_STALENESS).set(seconds);
}

/// Counts one admission checked against an API key's rate limits, and whether it was
/// refused.
pub fn record_api_key_admission(admitted: bool) {
    match API_KEY_ADMITTED.get() {
        Some(attempts) => attempts.increment(1),
        None => metrics::counter!(RATELIMIT_ATTEMPTS, "scope" => "api_key").increment(1),
    }
    if !admitted {
        metrics::counter!(RATELIMIT_EXCEEDED, "scope" => "api_key").increment(1);
    }
}

/// Counts one validation of a standing credential of `kind` answered from `source`.
pub fn record_credential_validation(kind: &'static str, source: &'static str) {
    if (kind, source) == ("api_key", "cache")
        && let Some(hits) = API_KEY_FROM_CACHE.get()
    {
        return hits.increment(1);
    }
    metrics::counter!(CREDENTIAL_VALIDATIONS, "kind" => kind, "source" => source).increment(1);
}

/// Publishes the held service token's expiry (`None`: no usable token).
pub fn record_service_token(expires_at: Option<tessera_common::UnixMillis>) {
    let seconds = expires_at.map_or(0.0, |at| at.0 as f64 / 1000.0);
    metrics::gauge!(SERVICE_TOKEN_EXPIRY).set(seconds);
}
