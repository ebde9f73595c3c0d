//! The issuer's shared state, handed to every gRPC service and HTTP handler, and the one
//! place calls are authorized (and refusals audited).

use std::sync::Arc;
use std::time::Duration;

use tessera_common::{Clock, UnixMillis};
use tokio::sync::watch;
use tonic::Status;
use tracing::warn;

use crate::abuse::{self, Peer, Refusal};
use crate::actions::ActionLinks;
use crate::api_keys::ApiKeys;
use crate::audit::{Actor, AuditAction, AuditEntry, AuditOutcome};
use crate::auth::{AuthError, Authenticator, Caller, Scope, StoreAccess};
use crate::hub::BundleHub;
use crate::keys::KeyManager;
use crate::opaque_tokens::OpaqueTokens;
use crate::sessions::SessionService;
use crate::store::{SessionStore, Store};
use crate::tokens::TokenPolicy;

/// Everything a request handler needs.
pub struct App {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyManager>,
    pub hub: Arc<BundleHub>,
    pub auth: Arc<Authenticator>,
    pub sessions: Arc<SessionService>,
    pub session_store: Arc<dyn SessionStore>,
    /// Tenant API keys (and their usage batch, flushed on shutdown).
    pub api_keys: Arc<ApiKeys>,
    /// Service identities, service tokens and webhook tokens.
    pub opaque_tokens: Arc<OpaqueTokens>,
    /// Single-use tokens: action links, password reset, email verification (its store
    /// also serves the emergency paths' `invalidate_one_time_tokens`).
    pub actions: Arc<ActionLinks>,
    /// OTP and magic-link challenges, their delivery providers and the one-time rate
    /// limits (also charged by password-reset and email-verification requests).
    pub challenges: Arc<crate::challenges::Challenges>,
    /// The secrets inventory and its rotations (issue 12).
    pub secrets: Arc<crate::secrets::Secrets>,
    pub clock: Arc<dyn Clock>,
    pub tokens: TokenPolicy,
    pub heartbeat: Duration,
    /// Flips to true when the server starts shutting down; streams end on it.
    pub shutdown: watch::Receiver<bool>,
}

impl App {
    /// Returns the current time.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Authenticates the caller of `rpc` and checks `scope`. A call without a valid
    /// credential takes from its peer's failure budget and is counted in the peer's burst,
    /// summarised later in one audit row (`abuse`); once the peer is over budget such calls
    /// are `RESOURCE_EXHAUSTED` and its credentials are checked against the caches only.
    /// Refusals of an authenticated caller for a missing scope are audited one by one.
    pub async fn authorize<T>(
        &self,
        request: &tonic::Request<T>,
        rpc: &str,
        scope: Scope,
    ) -> Result<Caller, Status> {
        let peer = Peer::of(request);
        let now = self.now();
        let access = match self.auth.abuse().over_budget(peer, now) {
            Some(_) => StoreAccess::KnownClientsOnly,
            None => StoreAccess::Any,
        };
        match self.auth.authenticate_request_with(request, access).await {
            Ok(caller) if caller.has(scope) => Ok(caller),
            Ok(caller) => {
                self.audit_denial(
                    &caller,
                    rpc,
                    &request_id(request),
                    &format!("missing scope {}", scope.as_str()),
                )
                .await;
                Err(Status::permission_denied(format!(
                    "this credential lacks the `{}` scope",
                    scope.as_str()
                )))
            }
            Err(AuthError::Store(error)) => {
                warn!(%error, rpc, "credential lookup failed");
                Err(Status::unavailable("credential store unavailable"))
            }
            Err(_) => Err(self.refuse_unauthenticated(peer, rpc, now)),
        }
    }

    /// Writes every open burst of refused anonymous calls to the audit log now instead of
    /// when it ends, for tests that read the log right after the refusals.
    pub async fn flush_denial_summaries(&self) {
        let summaries = self.auth.abuse().take_all();
        abuse::write_summaries(self.store.as_ref(), summaries, self.now()).await;
    }

    /// Checks that `caller` may act on `tenant_id`.
    pub async fn check_tenant(
        &self,
        caller: &Caller,
        tenant_id: &str,
        rpc: &str,
        request_id: &str,
    ) -> Result<(), Status> {
        if caller.may_act_on(tenant_id) {
            return Ok(());
        }
        self.audit_denial(
            caller,
            rpc,
            request_id,
            &format!("tenant {tenant_id} not allowed"),
        )
        .await;
        Err(Status::permission_denied(
            "this credential may not act on that tenant",
        ))
    }

    /// Checks that `caller` is confined to no tenant, for operations that span tenants or
    /// the whole platform (keys, global revocation, the audit log): a tenant's admin must
    /// not change or read what every other tenant relies on.
    pub async fn require_unconfined(
        &self,
        caller: &Caller,
        rpc: &str,
        request_id: &str,
    ) -> Result<(), Status> {
        if !caller.is_confined() {
            return Ok(());
        }
        Err(self
            .deny(
                caller,
                rpc,
                request_id,
                "platform-wide operation refused to a tenant-confined caller",
                "this credential is confined to tenants; the operation spans every tenant",
            )
            .await)
    }

    /// Audits a refusal of `caller` (why: `reason`) and returns the `PERMISSION_DENIED`
    /// carrying `message` to send back.
    pub async fn deny(
        &self,
        caller: &Caller,
        rpc: &str,
        request_id: &str,
        reason: &str,
        message: &'static str,
    ) -> Status {
        self.audit_denial(caller, rpc, request_id, reason).await;
        Status::permission_denied(message)
    }

    /// Appends an audit entry, logging (not failing the call) if the store refuses it.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(error) = self.store.append_audit(entry).await {
            warn!(%error, "audit append failed");
        }
    }

    /// Charges a call without a valid credential to its peer and answers it; the audit row
    /// comes later, in the peer's burst summary.
    fn refuse_unauthenticated(&self, peer: Peer, rpc: &str, now: UnixMillis) -> Status {
        metrics::counter!("tessera_auth_denied_total", "rpc" => rpc.to_owned()).increment(1);
        let abuse = self.auth.abuse();
        abuse.start_flusher(
            self.store.clone(),
            self.clock.clone(),
            self.shutdown.clone(),
        );
        match abuse.refuse(peer, rpc, now) {
            Refusal::Unauthenticated => Status::unauthenticated(
                "missing or invalid credential: send `authorization: Bearer <credential>`",
            ),
            Refusal::RateLimited { retry_after } => rate_limited(retry_after),
        }
    }

    async fn audit_denial(&self, caller: &Caller, rpc: &str, request_id: &str, reason: &str) {
        metrics::counter!("tessera_auth_denied_total", "rpc" => rpc.to_owned()).increment(1);
        let actor = Actor::client(
            caller.client_id.clone(),
            request_id.to_owned(),
            reason.to_owned(),
        );
        self.audit(AuditEntry {
            outcome: AuditOutcome::Denied,
            ..actor.entry(self.now(), AuditAction::AuthDenied, rpc)
        })
        .await;
    }
}

/// Returns `RESOURCE_EXHAUSTED` with `retry-after` (whole seconds, at least 1) in the
/// response metadata, as HTTP's header of that name.
fn rate_limited(retry_after: Duration) -> Status {
    let seconds = retry_after
        .as_secs()
        .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
        .max(1);
    let mut status = Status::resource_exhausted(format!(
        "too many refused calls from this address: retry after {seconds} s"
    ));
    // Digits always make a valid header value.
    if let Ok(value) = seconds.to_string().parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

/// Returns the caller's `x-request-id` (if short and printable) or a fresh one.
pub fn request_id<T>(request: &tonic::Request<T>) -> String {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty() && value.len() <= 128 && value.chars().all(|c| c.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let seconds = |wait: Duration| {
            rate_limited(wait)
                .metadata()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(seconds(Duration::ZERO).as_deref(), Some("1"));
        assert_eq!(seconds(Duration::from_millis(100)).as_deref(), Some("1"));
        assert_eq!(seconds(Duration::from_secs(2)).as_deref(), Some("2"));
        assert_eq!(seconds(Duration::from_millis(2001)).as_deref(), Some("3"));
        assert_eq!(
            rate_limited(Duration::from_millis(100)).code(),
            tonic::Code::ResourceExhausted
        );
    }
}
