//! The trust-bundle subscription: keeps a `WatchTrustBundle` stream open to the issuer,
//! applies snapshots and deltas to the [`BundleState`], records every message as contact,
//! and reconnects with jittered exponential backoff, resuming from the last revision.
//!
//! Each attempt runs in a `bundle.subscribe` span, from connecting until the first
//! message is applied, whose context goes to the issuer in `traceparent`. A resync asked
//! for by a validation (an unknown kid) makes that span a child of the validation's span,
//! so the application's trace continues through the issuer to its store.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::Clock;
use tessera_proto::v1::WatchTrustBundleRequest;
use tessera_proto::v1::trust_bundle_service_client::TrustBundleServiceClient;
use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::IssuerConfig;
use crate::convert::{Update, update_from_proto};
use crate::listen::BundleListener;
use crate::metrics;
use crate::resync::ResyncSignal;
use crate::state::BundleState;

/// A stream silent for this long is presumed dead (the issuer heartbeats every 5 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often revocations and revoked keys that can no longer match are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("cannot connect")]
    Connect(#[from] tonic::transport::Error),
    #[error("issuer refused the subscription: {0}")]
    Refused(tonic::Status),
    #[error("stream failed: {0}")]
    Failed(tonic::Status),
    #[error("issuer closed the stream")]
    Closed,
    #[error("no message for {0:?}")]
    Idle(Duration),
    #[error("unusable message")]
    Protocol(#[from] crate::convert::ConvertError),
    #[error("resync requested")]
    Resync,
    #[error("credential unreadable: {0}")]
    Credential(std::io::Error),
    #[error("shutting down")]
    Shutdown,
}

/// The long-lived subscription task.
pub struct Subscription {
    pub config: IssuerConfig,
    pub state: Arc<BundleState>,
    pub clock: Arc<dyn Clock>,
    /// Raised when an unknown kid warrants a fresh stream.
    pub resync: Arc<ResyncSignal>,
    pub shutdown: watch::Receiver<bool>,
    /// Told of every snapshot and delta event once applied (credential caches, the
    /// service-token holder).
    pub listeners: Vec<Arc<dyn BundleListener>>,
}

impl Subscription {
    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut want_snapshot = false;
        loop {
            let mut delivered = false;
            let end = self.subscribe_once(want_snapshot, &mut delivered).await;
            // A resync asks for a full snapshot: whatever made a kid unknown, a snapshot
            // repairs it, where resuming would only replay what the issuer retained.
            want_snapshot = matches!(end, StreamEnd::Resync);
            if matches!(end, StreamEnd::Shutdown) {
                return;
            }
            if delivered {
                backoff.reset();
            }
            let delay = match end {
                // A resync reconnects at once; the validator's limiter bounds how often.
                StreamEnd::Resync => Duration::ZERO,
                _ => backoff.next_delay(),
            };
            match &end {
                StreamEnd::Resync => tracing::info!("resubscribing to the trust bundle"),
                end => tracing::warn!(
                    error = %error_chain(end),
                    retry_in_ms = delay.as_millis() as u64,
                    "trust-bundle stream ended"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // An unknown kid while disconnected cuts the wait short.
                () = self.resync.notified() => {}
                _ = self.shutdown.changed() => return,
            }
        }
    }

    async fn subscribe_once(&mut self, want_snapshot: bool, delivered: &mut bool) -> StreamEnd {
        // Lives until the first message is applied, or the attempt fails.
        let mut attempt = Some(tracing::info_span!(
            "bundle.subscribe",
            otel.kind = "client",
            resync = want_snapshot,
            revision = tracing::field::Empty,
            error = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        ));
        // A resync asked for by a traced validation continues that validation's trace.
        if let (Some(requester), Some(span)) = (self.resync.take_requester(), &attempt) {
            requester.adopt(span);
        }
        let end = self
            .subscribe_attempt(want_snapshot, delivered, &mut attempt)
            .await;
        if let Some(span) = attempt
            && !matches!(end, StreamEnd::Resync | StreamEnd::Shutdown)
        {
            span.record("error", tracing::field::display(error_chain(&end)));
            span.record("otel.status_code", "error");
        }
        end
    }

    /// [`Subscription::subscribe_once`] with its span: `attempt` is taken (and the span
    /// closed) once the first message is applied.
    async fn subscribe_attempt(
        &mut self,
        want_snapshot: bool,
        delivered: &mut bool,
        attempt: &mut Option<tracing::Span>,
    ) -> StreamEnd {
        let span = attempt.clone().unwrap_or_else(tracing::Span::none);
        let channel = tokio::select! {
            channel = connect(&self.config).instrument(span.clone()) => match channel {
                Ok(channel) => channel,
                Err(error) => {
                    metrics::record_subscription("error");
                    return error;
                }
            },
            _ = self.shutdown.changed() => return StreamEnd::Shutdown,
        };
        let credential = match self.config.credential.load() {
            Ok(credential) => credential,
            Err(error) => return StreamEnd::Credential(error),
        };
        let since_revision = if want_snapshot {
            0
        } else {
            self.state.revision()
        };
        let mut request = tonic::Request::new(WatchTrustBundleRequest {
            since_revision,
            subscriber_id: self.config.subscriber_id.clone(),
            // The sidecar drops cached API-key and opaque-token answers on these.
            credential_changes: true,
            // GetSecret fetches a cached secret again on these (crate::secrets).
            secret_changes: true,
        });
        if let Some(credential) = credential {
            match MetadataValue::try_from(format!("Bearer {credential}")) {
                Ok(value) => {
                    request.metadata_mut().insert("authorization", value);
                }
                Err(_) => {
                    return StreamEnd::Credential(std::io::Error::other("not valid in a header"));
                }
            }
        }
        // The issuer continues this attempt's trace (DESIGN §9).
        span.in_scope(|| tessera_common::trace_context::inject_current(request.metadata_mut()));
        let mut client = TrustBundleServiceClient::new(channel);
        let response = tokio::select! {
            response = client.watch_trust_bundle(request).instrument(span.clone()) => response,
            _ = self.shutdown.changed() => return StreamEnd::Shutdown,
        };
        let mut stream = match response {
            Ok(response) => response.into_inner(),
            Err(status) => {
                metrics::record_subscription("error");
                return StreamEnd::Refused(status);
            }
        };
        metrics::record_subscription("ok");
        span.in_scope(|| tracing::info!(since_revision, "subscribed to the trust bundle"));
        // The attempt's span must not outlive its first message by this handle.
        drop(span);
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            let message = tokio::select! {
                message = tokio::time::timeout(IDLE_TIMEOUT, stream.message()) => message,
                () = self.resync.notified() => return StreamEnd::Resync,
                _ = prune.tick() => {
                    let now = self.clock.now();
                    self.state.update(|bundle| {
                        let before = (bundle.keys.len(), bundle.revocations.len());
                        bundle.prune(now);
                        before != (bundle.keys.len(), bundle.revocations.len())
                    });
                    continue;
                }
                _ = self.shutdown.changed() => return StreamEnd::Shutdown,
            };
            let update = match message {
                Err(_) => return StreamEnd::Idle(IDLE_TIMEOUT),
                Ok(Err(status)) => return StreamEnd::Failed(status),
                Ok(Ok(None)) => return StreamEnd::Closed,
                Ok(Ok(Some(update))) => update,
            };
            let update = match update_from_proto(update) {
                Ok(update) => update,
                Err(error) => return StreamEnd::Protocol(error),
            };
            match attempt.take() {
                Some(span) => {
                    span.in_scope(|| self.apply(update));
                    span.record("revision", self.state.revision());
                }
                None => self.apply(update),
            }
            *delivered = true;
        }
    }

    fn apply(&self, update: Update) {
        let now = self.clock.now();
        // The contact is recorded before the bundle is swapped in: the other way round, a
        // readiness check between the two saw the first snapshot with no contact yet and
        // reported the sidecar stale for an instant (NoBundle → Stale → Ready).
        self.state.touch(now);
        match update {
            Update::Snapshot(mut bundle) => {
                bundle.prune(now);
                let revision = bundle.revision.0;
                self.state.replace(bundle);
                if let Some(view) = self.state.view() {
                    for listener in &self.listeners {
                        listener.on_snapshot(now, &view.bundle);
                    }
                }
                tracing::info!(revision, "applied a trust-bundle snapshot");
            }
            Update::Delta { revision, events } => {
                let n_events = events.len();
                self.state.update(|bundle| {
                    let mut changed = false;
                    for event in &events {
                        changed |= bundle.apply(event);
                    }
                    if revision > bundle.revision {
                        bundle.revision = revision;
                        changed = true;
                    }
                    changed
                });
                // Replayed events too: purging again is harmless, missing one is not.
                for event in &events {
                    for listener in &self.listeners {
                        listener.on_event(now, event);
                    }
                }
                tracing::debug!(
                    revision = revision.0,
                    n_events,
                    "applied a trust-bundle delta"
                );
            }
            Update::Heartbeat { revision } => {
                if revision.0 > self.state.revision() {
                    tracing::debug!(revision = revision.0, "heartbeat ahead of the bundle held");
                }
            }
        }
        metrics::record_bundle(self.state.revision(), self.state.staleness(now));
    }
}

/// Opens a channel to the issuer, with TLS when configured.
async fn connect(config: &IssuerConfig) -> Result<Channel, StreamEnd> {
    Ok(endpoint(config)?.connect().await?)
}

/// Returns the issuer's endpoint as configured (address, TLS, timeouts): the stream's,
/// and the unary calls' of [`crate::issuer_client`].
pub(crate) fn endpoint(config: &IssuerConfig) -> Result<Endpoint, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(config.addr.clone())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(tls) = &config.tls {
        let mut tls_config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some(identity) = &tls.client_identity {
            tls_config =
                tls_config.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
        }
        endpoint = endpoint.tls_config(tls_config)?;
    }
    Ok(endpoint)
}

/// Renders `error` with its sources ("cannot connect: transport error: …").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
