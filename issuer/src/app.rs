//! The issuer's shared state, handed to every gRPC service and HTTP handler, and the one
//! place calls are authorized (and refusals audited).

use std::sync::Arc;
use std::time::Duration;

use tessera_common::{Clock, UnixMillis};
use tokio::sync::watch;
use tonic::Status;
use tracing::warn;

use crate::auth::{AuthError, Authenticator, Caller, Scope};
use crate::hub::BundleHub;
use crate::keys::KeyManager;
use crate::sessions::SessionService;
use crate::store::{AuditEntry, SessionStore, Store};
use crate::tokens::TokenPolicy;

/// Everything a request handler needs.
pub struct App {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyManager>,
    pub hub: Arc<BundleHub>,
    pub auth: Arc<Authenticator>,
    pub sessions: Arc<SessionService>,
    pub session_store: Arc<dyn SessionStore>,
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

    /// Authenticates the caller of `rpc` and checks `scope`; refusals of admin calls, and
    /// every refusal for a missing scope, are written to the audit log.
    pub async fn authorize<T>(
        &self,
        request: &tonic::Request<T>,
        rpc: &str,
        scope: Scope,
    ) -> Result<Caller, Status> {
        let request_id = request_id(request);
        let outcome = self.auth.authenticate_request(request).await;
        let caller = match outcome {
            Ok(caller) if caller.has(scope) => return Ok(caller),
            Ok(caller) => {
                self.audit_denial(
                    &caller.client_id.to_string(),
                    rpc,
                    &request_id,
                    &format!("missing scope {}", scope.as_str()),
                )
                .await;
                return Err(Status::permission_denied(format!(
                    "this credential lacks the `{}` scope",
                    scope.as_str()
                )));
            }
            Err(AuthError::Store(error)) => {
                warn!(%error, rpc, "credential lookup failed");
                return Err(Status::unavailable("credential store unavailable"));
            }
            Err(_) => None::<Caller>,
        };
        debug_assert!(caller.is_none());
        if scope == Scope::Admin {
            self.audit_denial(
                "anonymous",
                rpc,
                &request_id,
                "missing or invalid credential",
            )
            .await;
        }
        Err(Status::unauthenticated(
            "missing or invalid credential: send `authorization: Bearer <credential>`",
        ))
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
            &caller.client_id.to_string(),
            rpc,
            request_id,
            &format!("tenant {tenant_id} not allowed"),
        )
        .await;
        Err(Status::permission_denied(
            "this credential may not act on that tenant",
        ))
    }

    /// Appends an audit entry, logging (not failing the call) if the store refuses it.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(error) = self.store.append_audit(entry).await {
            warn!(%error, "audit append failed");
        }
    }

    async fn audit_denial(&self, actor: &str, rpc: &str, request_id: &str, reason: &str) {
        metrics::counter!("tessera_auth_denied_total", "rpc" => rpc.to_owned()).increment(1);
        self.audit(AuditEntry {
            at: self.now(),
            actor: actor.to_owned(),
            action: "auth.denied".into(),
            target: rpc.to_owned(),
            request_id: request_id.to_owned(),
            reason: reason.to_owned(),
            outcome: "denied".into(),
        })
        .await;
    }
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
