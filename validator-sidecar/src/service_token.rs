//! `FetchServiceToken`: the sidecar holds the current token of the service identity it is
//! configured for (`--service-identity NAME --service-tenant TENANT`) and hands it to the
//! application on request.
//!
//! A background task asks the issuer for a token (`IssueServiceToken`, naming the token
//! it replaces and the sidecar as holder), installs it, then confirms it
//! (`ConfirmServiceToken`, which revokes the predecessor), and does it again at the
//! token's `renew_at` (80 % of its life). Failures are retried with the reconnect backoff.
//! A token past its expiry, or one the issuer pushed as revoked, is never handed out:
//! until a new one is installed the answer is UNAVAILABLE. When the held token is revoked
//! (its `CredentialChanged` event, or an emergency revocation of its tenant) a new one is
//! fetched at once, replacing nothing (the old one is dead). After a snapshot (events may
//! have been missed in the gap before it) the held token is checked at the issuer.
//!
//! The token never reaches a log line or `Debug`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tessera_common::bundle::{BundleChange, BundleEvent, StandingKind, TrustBundle};
use tessera_common::credential::CredentialKind;
use tessera_common::revocation::RevocationKind;
use tessera_common::{Clock, UnixMillis};
use tessera_proto::v1 as pb;
use tokio::sync::{Notify, watch};
use tonic::Status;

use crate::backoff::Backoff;
use crate::convert::{millis, timestamp};
use crate::credential_request::{Shape, shape};
use crate::issuer_client::IssuerClient;
use crate::listen::BundleListener;
use crate::metrics;

/// Longest wait between two looks at the held token, so a wall-clock jump is noticed.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Attempts at confirming an installed token before leaving its predecessor to expire.
const CONFIRM_ATTEMPTS: u32 = 3;

/// Which identity the sidecar holds tokens of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceIdentity {
    pub tenant_id: String,
    pub service: String,
}

/// One token held.
#[derive(Clone)]
struct Held {
    token: zeroize::Zeroizing<String>,
    token_id: String,
    tenant_id: String,
    service: String,
    issued_at: UnixMillis,
    expires_at: UnixMillis,
    renew_at: UnixMillis,
    /// Pushed as revoked (or its tenant revoked): never handed out again.
    revoked: bool,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .field("tenant_id", &self.tenant_id)
            .field("expires_at", &self.expires_at)
            .field("renew_at", &self.renew_at)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// What the renewal task does next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Ask for a token replacing this one ("" for none).
    Fetch {
        replaces: String,
    },
    Wait(Duration),
}

/// The service token holder.
pub struct ServiceTokens {
    identity: Option<ServiceIdentity>,
    held: RwLock<Option<Held>>,
    /// Wakes the renewal task when the held token is revoked, or must be checked.
    wake: Notify,
    /// Set by a snapshot: events may have been missed, so the held token is checked at
    /// the issuer (`ValidateServiceToken`) before it is trusted further.
    check: AtomicBool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ServiceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTokens")
            .field("identity", &self.identity)
            .field(
                "held",
                &*self.held.read().unwrap_or_else(PoisonError::into_inner),
            )
            .finish_non_exhaustive()
    }
}

impl ServiceTokens {
    /// Returns a holder for `identity` (none: FetchServiceToken is FAILED_PRECONDITION).
    pub fn new(identity: Option<ServiceIdentity>, clock: Arc<dyn Clock>) -> Self {
        ServiceTokens {
            identity,
            held: RwLock::new(None),
            wake: Notify::new(),
            check: AtomicBool::new(false),
            clock,
        }
    }

    /// Returns the configured identity.
    pub fn identity(&self) -> Option<&ServiceIdentity> {
        self.identity.as_ref()
    }

    /// Answers one `FetchServiceToken` at `now`.
    pub fn fetch(&self, now: UnixMillis) -> Result<pb::FetchServiceTokenResponse, Status> {
        if self.identity.is_none() {
            return Err(Status::failed_precondition(
                "no service identity is configured (--service-identity and --service-tenant)",
            ));
        }
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        match held.as_ref() {
            Some(held) if !held.revoked && now < held.expires_at => {
                Ok(pb::FetchServiceTokenResponse {
                    token: held.token.to_string(),
                    token_id: held.token_id.clone(),
                    tenant_id: held.tenant_id.clone(),
                    service: held.service.clone(),
                    expires_at: Some(timestamp(held.expires_at)),
                    renew_at: Some(timestamp(held.renew_at)),
                })
            }
            _ => Err(Status::unavailable(
                "no live service token yet: the issuer has not issued one; retry",
            )),
        }
    }

    /// Decides what to do at `now`.
    fn next(&self, now: UnixMillis) -> Next {
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        match held.as_ref() {
            None => Next::Fetch {
                replaces: String::new(),
            },
            Some(held) if held.revoked || now >= held.expires_at => Next::Fetch {
                replaces: String::new(),
            },
            Some(held) if now >= held.renew_at => Next::Fetch {
                replaces: held.token_id.clone(),
            },
            Some(held) => Next::Wait(held.renew_at.since(now).min(MAX_WAIT)),
        }
    }

    /// Keeps a live token until `shutdown`; `holder` names this sidecar to the issuer.
    pub async fn run(
        self: Arc<Self>,
        issuer: IssuerClient,
        holder: String,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let mut backoff = Backoff::new();
        loop {
            if self.check.swap(false, Ordering::AcqRel) {
                self.check_held(&issuer).await;
            }
            let wait = match self.next(self.clock.now()) {
                Next::Wait(wait) => wait,
                Next::Fetch { replaces } => {
                    match self.renew(&issuer, &identity, &holder, replaces).await {
                        Ok(()) => {
                            backoff.reset();
                            continue;
                        }
                        Err(status) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(
                                code = ?status.code(),
                                message = status.message(),
                                retry_in_ms = delay.as_millis() as u64,
                                "could not obtain a service token"
                            );
                            delay
                        }
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Issues a token replacing `replaces`, installs it and confirms it.
    async fn renew(
        &self,
        issuer: &IssuerClient,
        identity: &ServiceIdentity,
        holder: &str,
        replaces: String,
    ) -> Result<(), Status> {
        let request = |replaces: String| pb::IssueServiceTokenRequest {
            tenant_id: identity.tenant_id.clone(),
            service: identity.service.clone(),
            replaces,
            holder: holder_name(holder),
        };
        let issued = match issuer.issue_service_token(request(replaces.clone())).await {
            // The token it replaces is gone (revoked or expired meanwhile): start afresh.
            Err(status)
                if !replaces.is_empty()
                    && matches!(
                        status.code(),
                        tonic::Code::FailedPrecondition | tonic::Code::NotFound
                    ) =>
            {
                issuer.issue_service_token(request(String::new())).await?
            }
            other => other?,
        };
        let held = held_from(issued)?;
        let token_id = held.token_id.clone();
        tracing::info!(
            token_id = %held.token_id,
            replaces = %replaces,
            expires_at = held.expires_at.0,
            "installed a service token"
        );
        let expires_at = held.expires_at;
        *self.held.write().unwrap_or_else(PoisonError::into_inner) = Some(held);
        metrics::record_service_token(Some(expires_at));
        // Installed first, then confirmed: a holder that dies in between leaves its
        // predecessor to expire, never itself without a token.
        let mut backoff = Backoff::with_bounds(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..=CONFIRM_ATTEMPTS {
            let confirm = pb::ConfirmServiceTokenRequest {
                token_id: token_id.clone(),
            };
            match issuer.confirm_service_token(confirm).await {
                Ok(_) => break,
                Err(status) if attempt == CONFIRM_ATTEMPTS => tracing::warn!(
                    code = ?status.code(),
                    %token_id,
                    "could not confirm the service token; its predecessor will expire on its own"
                ),
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
        Ok(())
    }

    /// Asks the issuer whether the held token still works (after a snapshot, when its
    /// revocation may have been missed); marks it revoked if not. An issuer that cannot
    /// answer changes nothing: the token stays until its renewal.
    async fn check_held(&self, issuer: &IssuerClient) {
        let token = match &*self.held.read().unwrap_or_else(PoisonError::into_inner) {
            Some(held) if !held.revoked => held.token.clone(),
            _ => return,
        };
        let request = pb::ValidateOpaqueTokenRequest {
            token: token.to_string(),
            ..Default::default()
        };
        match issuer.validate_service_token(request).await {
            Ok(answer) if !answer.valid => {
                self.revoke_if(|held| held.token == token);
            }
            Ok(_) => {}
            Err(status) => {
                tracing::debug!(code = ?status.code(), "could not check the held service token")
            }
        }
    }

    /// Marks the held token revoked when `covers` says so, and wakes the renewal task.
    fn revoke_if(&self, covers: impl Fn(&Held) -> bool) {
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = held.as_mut()
            && !held.revoked
            && covers(held)
        {
            tracing::warn!(token_id = %held.token_id, "the held service token was revoked; fetching a new one");
            held.revoked = true;
            metrics::record_service_token(None);
            self.wake.notify_one();
        }
    }
}

/// Reads an issuer answer into a held token, refusing one that is not a `tbs_` token or
/// lacks its instants.
fn held_from(issued: pb::IssueServiceTokenResponse) -> Result<Held, Status> {
    let malformed =
        || Status::internal("the issuer answered IssueServiceToken without a usable token");
    let info = issued.info.ok_or_else(malformed)?;
    if !matches!(shape(&issued.token, &[CredentialKind::Service]), Shape::Ok { id, .. } if id == info.token_id)
    {
        return Err(malformed());
    }
    let issued_at = info.issued_at.as_ref().map(millis).ok_or_else(malformed)?;
    let expires_at = info.expires_at.as_ref().map(millis).ok_or_else(malformed)?;
    let renew_at = info
        .renew_at
        .as_ref()
        .map(millis)
        .unwrap_or_else(|| eighty_percent(issued_at, expires_at));
    Ok(Held {
        token: zeroize::Zeroizing::new(issued.token),
        token_id: info.token_id,
        tenant_id: info.tenant_id,
        service: info.subject,
        issued_at,
        expires_at,
        renew_at: renew_at.min(expires_at),
        revoked: false,
    })
}

/// Returns `holder` cut to the issuer's bound (128 bytes) at a character boundary: a long
/// `--subscriber-id` must not make every issuance INVALID_ARGUMENT.
fn holder_name(holder: &str) -> String {
    let mut end = holder.len().min(128);
    while !holder.is_char_boundary(end) {
        end -= 1;
    }
    holder[..end].to_owned()
}

/// Returns the instant 80 % of the way from `issued_at` to `expires_at`.
fn eighty_percent(issued_at: UnixMillis, expires_at: UnixMillis) -> UnixMillis {
    issued_at.plus(expires_at.since(issued_at).mul_f64(0.8))
}

impl BundleListener for ServiceTokens {
    fn on_snapshot(&self, _now: UnixMillis, bundle: &TrustBundle) {
        self.revoke_if(|held| {
            bundle
                .revocations
                .tenant_cutoff(&held.tenant_id)
                .is_some_and(|cutoff| cutoff >= held.issued_at)
        });
        if self.identity.is_some() {
            self.check.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    fn on_event(&self, _now: UnixMillis, event: &BundleEvent) {
        match &event.change {
            BundleChange::CredentialChanged { change }
                if change.kind == StandingKind::ServiceToken
                    && matches!(change.state.as_str(), "revoked" | "expired") =>
            {
                self.revoke_if(|held| held.token_id == change.credential_id);
            }
            BundleChange::RevocationAdded { entry } => {
                let applies = |held: &Held| {
                    let tenant_matches = match entry.kind {
                        RevocationKind::Tenant => entry.value == held.tenant_id,
                        RevocationKind::All => true,
                        _ => false,
                    };
                    tenant_matches
                        && entry
                            .tenant_id
                            .as_ref()
                            .is_none_or(|scope| *scope == held.tenant_id)
                        && entry.revoked_at >= held.issued_at
                };
                self.revoke_if(applies);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_common::SystemClock;
    use tessera_common::bundle::{CredentialChange, Revision};
    use tessera_common::credential::Credential;
    use tessera_common::revocation::RevocationEntry;

    use super::*;

    fn holder() -> ServiceTokens {
        let identity = ServiceIdentity {
            tenant_id: "t1".into(),
            service: "billing".into(),
        };
        ServiceTokens::new(Some(identity), Arc::new(SystemClock))
    }

    /// An issuer answer for a token issued at 1,000,000 ms living 100 s.
    fn issued(renew_at: bool) -> pb::IssueServiceTokenResponse {
        let credential = Credential::generate(CredentialKind::Service);
        pb::IssueServiceTokenResponse {
            token: credential.expose(),
            info: Some(pb::OpaqueTokenInfo {
                token_id: credential.id.clone(),
                kind: "service".into(),
                tenant_id: "t1".into(),
                subject: "billing".into(),
                issued_at: Some(timestamp(UnixMillis(1_000_000))),
                expires_at: Some(timestamp(UnixMillis(1_100_000))),
                renew_at: renew_at.then(|| timestamp(UnixMillis(1_080_000))),
                ..Default::default()
            }),
        }
    }

    fn install(holder: &ServiceTokens, held: Held) {
        *holder.held.write().unwrap() = Some(held);
    }

    fn event(change: BundleChange) -> BundleEvent {
        BundleEvent {
            revision: Revision(9),
            at: UnixMillis(0),
            change,
        }
    }

    #[test]
    fn renewal_is_at_renew_at_and_an_expired_token_is_never_handed_out() {
        let holder = holder();
        assert_eq!(
            holder.fetch(UnixMillis(1_000_000)).unwrap_err().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            holder.next(UnixMillis(1_000_000)),
            Next::Fetch {
                replaces: String::new()
            }
        );
        let held = held_from(issued(false)).unwrap();
        // Without renew_at from the issuer: 80 % of the life.
        assert_eq!(held.renew_at, UnixMillis(1_080_000));
        let id = held.token_id.clone();
        install(&holder, held);
        assert_eq!(
            holder.next(UnixMillis(1_050_000)),
            Next::Wait(Duration::from_secs(30))
        );
        assert_eq!(
            holder.next(UnixMillis(1_080_000)),
            Next::Fetch {
                replaces: id.clone()
            }
        );
        assert_eq!(holder.fetch(UnixMillis(1_099_999)).unwrap().token_id, id);
        assert_eq!(
            holder.fetch(UnixMillis(1_100_000)).unwrap_err().code(),
            tonic::Code::Unavailable
        );
        // Past expiry nothing is replaced: the old token is dead.
        assert_eq!(
            holder.next(UnixMillis(1_100_000)),
            Next::Fetch {
                replaces: String::new()
            }
        );
    }

    #[test]
    fn no_identity_is_failed_precondition_and_debug_hides_the_token() {
        let none = ServiceTokens::new(None, Arc::new(SystemClock));
        assert_eq!(
            none.fetch(UnixMillis(0)).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        let holder = holder();
        let answer = issued(true);
        let token = answer.token.clone();
        install(&holder, held_from(answer).unwrap());
        let debug = format!("{holder:?}");
        assert!(!debug.contains(&token), "{debug}");
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn the_holder_name_fits_the_issuers_bound() {
        assert_eq!(holder_name("pod-1/42"), "pod-1/42");
        let long = "é".repeat(100);
        let cut = holder_name(&long);
        assert!(cut.len() <= 128 && long.starts_with(&cut));
        assert_eq!(cut.len(), 128);
    }

    #[test]
    fn an_answer_that_is_not_a_service_token_is_refused() {
        let mut answer = issued(true);
        answer.token = Credential::generate(CredentialKind::ApiKey).expose();
        assert!(held_from(answer).is_err());
        let mut answer = issued(true);
        answer.info.as_mut().unwrap().token_id = "another".into();
        assert!(held_from(answer).is_err());
    }

    #[test]
    fn a_pushed_revocation_or_tenant_entry_makes_the_token_unusable() {
        let holder = holder();
        let held = held_from(issued(true)).unwrap();
        let id = held.token_id.clone();
        install(&holder, held.clone());
        let changed = |id: &str, state: &str| {
            event(BundleChange::CredentialChanged {
                change: CredentialChange {
                    kind: StandingKind::ServiceToken,
                    credential_id: id.into(),
                    tenant_id: "t1".into(),
                    state: state.into(),
                    grace_until: None,
                    expires_at: UnixMillis(1_100_000),
                },
            })
        };
        holder.on_event(UnixMillis(0), &changed("other", "revoked"));
        holder.on_event(UnixMillis(0), &changed(&id, "expiring"));
        assert!(holder.fetch(UnixMillis(1_010_000)).is_ok());
        holder.on_event(UnixMillis(0), &changed(&id, "revoked"));
        assert_eq!(
            holder.fetch(UnixMillis(1_010_000)).unwrap_err().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            holder.next(UnixMillis(1_010_000)),
            Next::Fetch {
                replaces: String::new()
            }
        );
        // A tenant entry older than the token does not cover it; a newer one does.
        install(&holder, held);
        let tenant = |revoked_at: i64, value: &str| {
            event(BundleChange::RevocationAdded {
                entry: RevocationEntry {
                    kind: RevocationKind::Tenant,
                    value: value.into(),
                    tenant_id: None,
                    revoked_at: UnixMillis(revoked_at),
                    drop_after: UnixMillis(revoked_at + 1_000_000),
                },
            })
        };
        holder.on_event(UnixMillis(0), &tenant(999_999, "t1"));
        holder.on_event(UnixMillis(0), &tenant(1_050_000, "t2"));
        assert!(holder.fetch(UnixMillis(1_010_000)).is_ok());
        holder.on_event(UnixMillis(0), &tenant(1_050_000, "t1"));
        assert!(holder.fetch(UnixMillis(1_060_000)).is_err());
    }
}
