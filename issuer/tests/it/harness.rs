//! In-process issuer servers on real sockets (127.0.0.1:0), with clients that carry a
//! credential, for the server tests.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::{Clock, SystemClock};
use tessera_issuer::app::App;
use tessera_issuer::config::IssuerConfig;
use tessera_issuer::server::Issuer;
use tessera_proto::v1 as pb;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running issuer; dropping it shuts the server down.
pub struct TestIssuer {
    pub grpc_addr: std::net::SocketAddr,
    pub admin_token: String,
    pub app: Arc<App>,
    /// Kept alive for the server's lifetime.
    _data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestIssuer {
    /// Starts an issuer on SQLite in a fresh directory.
    pub async fn start() -> TestIssuer {
        Self::start_with(|_| {}, Arc::new(SystemClock)).await
    }

    /// Starts an issuer after `adjust` has changed the development config.
    pub async fn start_with(
        adjust: impl FnOnce(&mut IssuerConfig),
        clock: Arc<dyn Clock>,
    ) -> TestIssuer {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config = IssuerConfig::development(data_dir.path());
        adjust(&mut config);
        Self::start_in(config, data_dir, clock).await
    }

    /// Starts an issuer with `config` whose files live in `data_dir`.
    pub async fn start_in(
        config: IssuerConfig,
        data_dir: tempfile::TempDir,
        clock: Arc<dyn Clock>,
    ) -> TestIssuer {
        let issuer = Issuer::start(config, clock).await.expect("issuer starts");
        let admin_token =
            std::fs::read_to_string(issuer.admin_token_path.as_ref().expect("admin token path"))
                .expect("admin token")
                .trim()
                .to_owned();
        let app = issuer.app.clone();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind grpc");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind http");
        let grpc_addr = grpc.local_addr().expect("addr");
        let (shutdown, stop) = oneshot::channel::<()>();
        let handle = tokio::spawn(issuer.serve(grpc, http, async move {
            let _ = stop.await;
        }));
        TestIssuer {
            grpc_addr,
            admin_token,
            app,
            _data_dir: data_dir,
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    /// Returns a channel to the gRPC server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// Begins a graceful shutdown and waits for the server to stop.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            let result = tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("server stops within 15 s");
            result.expect("join").expect("serve returns Ok");
        }
    }

    /// Returns a key-service client.
    pub async fn keys(&self) -> pb::key_service_client::KeyServiceClient<Channel> {
        pb::key_service_client::KeyServiceClient::new(self.channel().await)
    }

    /// Returns a token-service client.
    pub async fn tokens(&self) -> pb::token_service_client::TokenServiceClient<Channel> {
        pb::token_service_client::TokenServiceClient::new(self.channel().await)
    }

    /// Returns a trust-bundle client.
    pub async fn bundle(
        &self,
    ) -> pb::trust_bundle_service_client::TrustBundleServiceClient<Channel> {
        pb::trust_bundle_service_client::TrustBundleServiceClient::new(self.channel().await)
    }

    /// Returns an admin client.
    pub async fn admin(&self) -> pb::admin_service_client::AdminServiceClient<Channel> {
        pb::admin_service_client::AdminServiceClient::new(self.channel().await)
    }

    /// Wraps `message` with the admin credential.
    pub fn as_admin<T>(&self, message: T) -> tonic::Request<T> {
        with_credential(message, &self.admin_token)
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Wraps `message` with `authorization: Bearer <credential>`.
pub fn with_credential<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().expect("ascii"),
    );
    request
}

/// A plain issuance request for `tenant`.
pub fn issue_request(tenant: &str) -> pb::IssueAccessTokenRequest {
    pb::IssueAccessTokenRequest {
        subject: "alice".into(),
        tenant_id: tenant.into(),
        role: "staff".into(),
        permissions: vec!["invoices:read".into()],
        ..Default::default()
    }
}

/// Polls `condition` every 20 ms until it holds or `patience` runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($condition:expr, $patience:expr, $($message:tt)+) => {{
        let deadline = std::time::Instant::now() + $patience;
        loop {
            if $condition {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!($($message)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}
