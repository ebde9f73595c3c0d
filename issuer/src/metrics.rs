//! The Prometheus recorder, installed once per process and rendered at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (first call) and returns its handle; `None` if another recorder
/// was installed by the embedding program.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok();
            describe_one_time_metrics();
            handle
        })
        .as_ref()
}

/// Describes the seed runbook's token-lifecycle metrics (DESIGN §9), emitted by sessions,
/// standing credentials, action links and challenges alike. Label values:
/// `method` — access, session, refresh, service, webhook, action_link, password_reset,
/// email_verification, otp_email, otp_sms, magic_link; `outcome` — success,
/// invalid_otp, expired, too_many_attempts, not_found, invalidated, already_used (and
/// the action-link reasons); `scope` — user, ip (one-time limits), the API-key and
/// auth-failure scopes; `reason` — what invalidated the tokens. Alert rules over them:
/// `deploy/prometheus/one_time_alerts.yml`.
fn describe_one_time_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "tessera_token_generation_total",
        Unit::Count,
        "Tokens and one-time codes issued, by method"
    );
    describe_histogram!(
        "tessera_token_generation_duration_seconds",
        Unit::Seconds,
        "Time to generate and store a token or one-time code, by method"
    );
    describe_counter!(
        "tessera_auth_validation_attempt_total",
        Unit::Count,
        "One-time code and token verification attempts, by outcome"
    );
    describe_counter!(
        "tessera_ratelimit_attempts_total",
        Unit::Count,
        "Calls charged to a rate limit, by scope"
    );
    describe_counter!(
        "tessera_ratelimit_exceeded_total",
        Unit::Count,
        "Calls refused by a rate limit, by scope"
    );
    describe_counter!(
        "tessera_token_invalidation_total",
        Unit::Count,
        "Tokens, sessions and challenges invalidated, by reason"
    );
    describe_counter!(
        "tessera_challenge_deliveries_total",
        Unit::Count,
        "Challenge delivery attempts, by provider and outcome"
    );
    describe_counter!(
        "tessera_challenge_failovers_total",
        Unit::Count,
        "Challenges delivered by a backup provider, by the provider that took them"
    );
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
