//! gRPC helpers: a runtime for the async parts of otherwise blocking tests, channels to
//! the issuer, requests carrying a bearer credential, and a trust-bundle watcher that
//! forwards the stream to a std channel so a test can run CLI commands meanwhile.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tessera_proto::v1 as pb;
use tessera_proto::v1::trust_bundle_service_client::TrustBundleServiceClient;
use tessera_proto::v1::trust_bundle_update::Kind;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// A small multi-threaded runtime; the stream watcher's task runs on it while the test
/// thread blocks on processes.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Connects a channel to `addr` (plaintext).
pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint URL")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {addr}: {error}"))
}

/// Wraps `message` in a request with `authorization: Bearer <credential>`.
pub fn with_bearer<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}")
            .parse()
            .expect("credential is a valid header value"),
    );
    request
}

/// What the watcher saw.
#[derive(Debug)]
pub enum StreamEvent {
    Update(Box<pb::TrustBundleUpdate>),
    /// The stream ended: `Ok` for a clean end (status OK), `Err` for an error status.
    Ended(Result<(), Status>),
}

/// A live `WatchTrustBundle` stream, read on the runtime, observed from the test thread.
pub struct BundleWatch {
    events: mpsc::Receiver<(Instant, StreamEvent)>,
}

impl BundleWatch {
    /// Opens the stream with `since_revision = 0` (a snapshot first).
    pub fn open(
        runtime: &tokio::runtime::Runtime,
        addr: SocketAddr,
        credential: &str,
        subscriber_id: &str,
    ) -> Result<BundleWatch, Status> {
        let request = with_bearer(
            pb::WatchTrustBundleRequest {
                since_revision: 0,
                subscriber_id: subscriber_id.to_owned(),
                credential_changes: true,
                secret_changes: true,
            },
            credential,
        );
        let mut stream = runtime.block_on(async move {
            let mut client = TrustBundleServiceClient::new(connect(addr).await);
            client
                .watch_trust_bundle(request)
                .await
                .map(|response| response.into_inner())
        })?;
        let (sender, events) = mpsc::channel();
        runtime.spawn(async move {
            loop {
                let event = match stream.message().await {
                    Ok(Some(update)) => StreamEvent::Update(Box::new(update)),
                    Ok(None) => StreamEvent::Ended(Ok(())),
                    Err(status) => StreamEvent::Ended(Err(status)),
                };
                let ended = matches!(event, StreamEvent::Ended(_));
                if sender.send((Instant::now(), event)).is_err() || ended {
                    return;
                }
            }
        });
        Ok(BundleWatch { events })
    }

    /// The next event, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(Instant, StreamEvent)> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Waits up to `timeout` for an update satisfying `wanted`, skipping others; on
    /// failure returns a description of everything seen.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut wanted: impl FnMut(&pb::TrustBundleUpdate) -> bool,
    ) -> Result<(Instant, pb::TrustBundleUpdate), String> {
        let end = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some((at, StreamEvent::Update(update))) => {
                    if wanted(&update) {
                        return Ok((at, *update));
                    }
                    seen.push(describe(&update));
                }
                Some((_, StreamEvent::Ended(result))) => {
                    return Err(format!("stream ended ({result:?}) after: {seen:?}"));
                }
                None => {
                    return Err(format!(
                        "nothing matching within {timeout:?}; saw: {seen:?}"
                    ));
                }
            }
        }
    }
}

/// One line per update, for failure messages.
pub fn describe(update: &pb::TrustBundleUpdate) -> String {
    match &update.kind {
        Some(Kind::Snapshot(snapshot)) => format!(
            "rev {} snapshot kids={:?}",
            update.revision,
            snapshot.keys.iter().map(|key| &key.kid).collect::<Vec<_>>()
        ),
        Some(Kind::Delta(delta)) => format!("rev {} delta {:?}", update.revision, delta.changes),
        Some(Kind::Heartbeat(_)) => format!("rev {} heartbeat", update.revision),
        None => format!("rev {} (empty)", update.revision),
    }
}
