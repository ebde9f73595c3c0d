//! `tessera.v1.TrustBundleService`: the trust-bundle stream. Each subscriber gets a
//! snapshot (or the retained deltas since its revision), then every committed change as
//! it is applied by the hub, and a heartbeat whenever the stream has been quiet.
//!
//! A subscriber confined to tenants receives only its tenants' revocation entries and the
//! tenant-less ones (`all`, `key`, platform-wide): another tenant's `RevocationAdded` is
//! replaced by an empty delta at its revision, so the subscriber's revision still advances
//! in step with the log and it resumes from the right place.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tessera_common::UnixMillis;
use tessera_common::bundle::{BundleChange, BundleEvent, Revision, TrustBundle};
use tessera_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span};

use super::convert;
use crate::app::App;
use crate::auth::{Caller, Scope};
use crate::hub::{Initial, event_visible, restrict};

/// Messages buffered per subscriber before the sender waits for the client.
const SUBSCRIBER_BUFFER: usize = 64;

/// The TrustBundleService implementation.
pub struct TrustBundleServiceImpl {
    pub app: Arc<App>,
}

/// Counts a connected subscriber for as long as it lives.
struct SubscriberGuard;

impl SubscriberGuard {
    fn new() -> Self {
        metrics::gauge!("tessera_trust_bundle_subscribers").increment(1.0);
        SubscriberGuard
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        metrics::gauge!("tessera_trust_bundle_subscribers").decrement(1.0);
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::TrustBundleUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl pb::trust_bundle_service_server::TrustBundleService for TrustBundleServiceImpl {
    type WatchTrustBundleStream = UpdateStream;

    async fn watch_trust_bundle(
        &self,
        request: Request<pb::WatchTrustBundleRequest>,
    ) -> Result<Response<Self::WatchTrustBundleStream>, Status> {
        let caller = self
            .app
            .authorize(
                &request,
                "TrustBundleService/WatchTrustBundle",
                Scope::BundleRead,
            )
            .await?;
        let message = request.into_inner();
        // Refused rather than cleaned: it is logged, and a silently altered id would not
        // match what the operator looks for.
        tessera_common::limits::check_text("subscriber_id", &message.subscriber_id, 128)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let subscriber_id = message.subscriber_id;
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let app = self.app.clone();
        let span = info_span!("bundle_subscriber", subscriber = %subscriber_id, client = %caller.client_id);
        let view = View {
            caller,
            credential_changes: message.credential_changes,
            secret_changes: message.secret_changes,
        };
        tokio::spawn(feed(app, view, Revision(message.since_revision), sender).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Sends the subscriber its initial message, then changes and heartbeats until the client
/// goes away or the server shuts down.
async fn feed(
    app: Arc<App>,
    view: View,
    since: Revision,
    sender: mpsc::Sender<Result<pb::TrustBundleUpdate, Status>>,
) {
    let _guard = SubscriberGuard::new();
    let (initial, mut events) = app.hub.subscribe(since);
    let mut sent = match initial {
        Initial::Snapshot(bundle) => {
            let revision = bundle.revision;
            if sender
                .send(Ok(snapshot_for(&view.caller, &bundle, app.now())))
                .await
                .is_err()
            {
                return;
            }
            revision
        }
        Initial::Deltas(deltas, current) => {
            let message = if deltas.is_empty() {
                heartbeat(current, &app)
            } else {
                delta_for(&view, &deltas, current, app.now())
            };
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
            current
        }
    };
    let mut shutdown = app.shutdown.clone();
    let mut heartbeat_timer = tokio::time::interval(app.heartbeat);
    heartbeat_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat_timer.reset();
    loop {
        let message = tokio::select! {
            received = events.recv() => match received {
                Ok(event) if event.revision <= sent => continue,
                Ok(event) => {
                    sent = event.revision;
                    Some(delta_for(&view, &[event], sent, app.now()))
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(missed, "subscriber lagged; resynchronising with a snapshot");
                    metrics::counter!("tessera_trust_bundle_resyncs_total").increment(1);
                    let bundle = app.hub.current();
                    sent = bundle.revision;
                    Some(snapshot_for(&view.caller, &bundle, app.now()))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = heartbeat_timer.tick() => Some(heartbeat(sent, &app)),
            _ = shutdown.changed() => return,
            _ = sender.closed() => return,
        };
        let Some(message) = message else { continue };
        if sender.send(Ok(message)).await.is_err() {
            return;
        }
        heartbeat_timer.reset();
    }
}

/// The snapshot `caller` may see: every key, and only the revocations it may see.
fn snapshot_for(caller: &Caller, bundle: &TrustBundle, now: UnixMillis) -> pb::TrustBundleUpdate {
    if !caller.is_confined() {
        return convert::snapshot(bundle, now);
    }
    convert::snapshot(&restrict(bundle, |entry| caller.may_see(entry)), now)
}

/// What one subscriber is sent: what its caller may see, of the change kinds it knows.
struct View {
    caller: Caller,
    /// The subscriber understands `BundleChange.credential_changed`.
    credential_changes: bool,
    /// The subscriber understands `BundleChange.secret_rotated`.
    secret_changes: bool,
}

impl View {
    fn sees(&self, event: &BundleEvent) -> bool {
        let known = match event.change {
            BundleChange::CredentialChanged { .. } => self.credential_changes,
            BundleChange::SecretRotated { .. } => self.secret_changes,
            _ => true,
        };
        if !known {
            return false;
        }
        event_visible(
            event,
            |entry| self.caller.may_see(entry),
            |tenant| self.caller.may_act_on(tenant),
        )
    }
}

/// One delta at `revision` (the last of `events`) with the events the subscriber is sent
/// (see [`View`]); empty when none, so that its revision still advances past them.
fn delta_for(
    view: &View,
    events: &[Arc<BundleEvent>],
    revision: Revision,
    now: UnixMillis,
) -> pb::TrustBundleUpdate {
    let visible: Vec<Arc<BundleEvent>> = events
        .iter()
        .filter(|event| view.sees(event))
        .cloned()
        .collect();
    let mut message = convert::delta(&visible, now).unwrap_or_else(|| pb::TrustBundleUpdate {
        revision: revision.0,
        sent_at: Some(convert::timestamp(now)),
        kind: Some(pb::trust_bundle_update::Kind::Delta(
            pb::TrustBundleDelta::default(),
        )),
    });
    message.revision = revision.0;
    message
}

fn heartbeat(revision: Revision, app: &App) -> pb::TrustBundleUpdate {
    pb::TrustBundleUpdate {
        revision: revision.0,
        sent_at: Some(convert::timestamp(app.now())),
        kind: Some(pb::trust_bundle_update::Kind::Heartbeat(pb::Heartbeat {})),
    }
}
