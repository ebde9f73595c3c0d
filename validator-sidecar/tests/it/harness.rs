//! Runs the real sidecar library in-process on a Unix socket in a temporary directory,
//! and connects tonic clients over that socket.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tessera_common::{Clock, SystemClock};
use tessera_proto::v1 as pb;
use tessera_proto::v1::validator_service_client::ValidatorServiceClient;
use tessera_sidecar::{Listeners, SidecarConfig};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::fake_issuer::CREDENTIAL;

/// A sidecar running in this process.
pub struct Sidecar {
    pub socket: PathBuf,
    pub bundle_cache: PathBuf,
    pub http_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    /// Opens a `ValidateStream` that sends `requests` and returns its answers.
    pub async fn stream<I>(&self, requests: I) -> tonic::Streaming<pb::ValidateStreamResponse>
    where
        I: IntoIterator<Item = pb::ValidateStreamRequest>,
        I::IntoIter: Send + 'static,
    {
        self.client()
            .await
            .validate_stream(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner()
    }

    /// Starts a sidecar subscribed to `issuer_url`, with its socket and bundle cache in
    /// `dir`, plus `extra` flags.
    pub async fn start(issuer_url: &str, dir: &Path, extra: &[&str]) -> Sidecar {
        Sidecar::start_with_clock(issuer_url, dir, extra, Arc::new(SystemClock)).await
    }

    /// Like [`Sidecar::start`], reading the time from `clock`.
    pub async fn start_with_clock(
        issuer_url: &str,
        dir: &Path,
        extra: &[&str],
        clock: Arc<dyn Clock>,
    ) -> Sidecar {
        let socket = dir.join("sidecar.sock");
        let bundle_cache = dir.join("bundle.json");
        let mut args: Vec<String> = vec![
            "tessera-sidecar".into(),
            "--issuer-addr".into(),
            issuer_url.into(),
            "--socket".into(),
            socket.display().to_string(),
            "--bundle-cache".into(),
            bundle_cache.display().to_string(),
            "--issuer-token".into(),
            CREDENTIAL.into(),
            "--subscriber-id".into(),
            "it".into(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let config = SidecarConfig::parse_from(args).unwrap();
        let listeners = Listeners::bind(&config.serve).await.unwrap();
        let http_addr = listeners
            .http
            .as_ref()
            .map(|listener| listener.local_addr().unwrap());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            tessera_sidecar::run_with_clock(config, listeners, stopped, clock)
                .await
                .unwrap();
        });
        Sidecar {
            socket,
            bundle_cache,
            http_addr,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// Opens a channel over the Unix socket.
    pub async fn channel(&self) -> Channel {
        let socket = self.socket.clone();
        Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
            }))
            .await
            .unwrap()
    }

    /// Returns a validator client over the socket.
    pub async fn client(&self) -> ValidatorServiceClient<Channel> {
        ValidatorServiceClient::new(self.channel().await)
    }

    /// Returns the validator's `grpc.health.v1` status.
    pub async fn health(&self) -> ServingStatus {
        let mut client = HealthClient::new(self.channel().await);
        let request = tonic_health::pb::HealthCheckRequest {
            service: "tessera.v1.ValidatorService".into(),
        };
        let status = client.check(request).await.unwrap().into_inner().status;
        ServingStatus::try_from(status).unwrap()
    }

    /// Stops the sidecar and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("sidecar did not stop in time")
            .unwrap();
    }
}

/// Validates `token` with default requirements.
pub async fn validate(
    client: &mut ValidatorServiceClient<Channel>,
    token: &str,
) -> pb::ValidateTokenResponse {
    validate_with(
        client,
        pb::ValidateTokenRequest {
            token: token.into(),
            ..Default::default()
        },
    )
    .await
}

/// Sends `request`.
pub async fn validate_with(
    client: &mut ValidatorServiceClient<Channel>,
    request: pb::ValidateTokenRequest,
) -> pb::ValidateTokenResponse {
    client.validate_token(request).await.unwrap().into_inner()
}

/// Returns the reason of a response.
pub fn reason(response: &pb::ValidateTokenResponse) -> pb::Reason {
    pb::Reason::try_from(response.reason).unwrap()
}

/// Polls `condition` every 20 ms until it holds or `patience` runs out.
pub async fn eventually<F, Fut>(patience: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the sidecar reports SERVING.
pub async fn wait_serving(sidecar: &Sidecar) {
    assert!(
        eventually(Duration::from_secs(10), || async {
            sidecar.health().await == ServingStatus::Serving
        })
        .await,
        "sidecar never became ready"
    );
}

/// A sidecar with default flags subscribed to `issuer`, in a fresh temporary directory,
/// once it reports SERVING. The directory must live as long as the sidecar.
pub async fn serving(issuer: &crate::fake_issuer::FakeIssuer) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(&issuer.url(), dir.path(), &[]).await;
    wait_serving(&sidecar).await;
    (sidecar, dir)
}
