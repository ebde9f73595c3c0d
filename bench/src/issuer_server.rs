//! An issuer started in-process exactly as `tessera-issuer serve` starts it (same
//! `Issuer::start` and `serve`), with its own temporary data directory (SQLite, KEK,
//! admin credential), gRPC and HTTP on 127.0.0.1:0, and the chosen access algorithm.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tessera_common::SystemClock;
use tessera_common::keys::{Algorithm, KeySetName};
use tessera_issuer::app::App;
use tessera_issuer::config::IssuerConfig;
use tessera_issuer::server::Issuer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};

/// A running issuer; stopped with [`InProcessIssuer::stop`].
pub struct InProcessIssuer {
    pub grpc_addr: SocketAddr,
    /// `Bearer <admin credential>`, ready to attach to requests.
    pub authorization: MetadataValue<Ascii>,
    /// Path of the admin credential file (sidecars read it as their issuer token).
    pub admin_token_path: std::path::PathBuf,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    _data_dir: tempfile::TempDir,
}

impl InProcessIssuer {
    /// Starts an issuer whose `access` keys use `algorithm`.
    pub async fn start(algorithm: Algorithm) -> anyhow::Result<InProcessIssuer> {
        let data_dir = tempfile::tempdir().context("creating the issuer's data directory")?;
        let mut config = IssuerConfig::development(data_dir.path());
        config
            .key_policies
            .get_mut(&KeySetName::Access)
            .context("the default configuration has no access key set")?
            .algorithm = algorithm;
        let issuer = Issuer::start(config, Arc::new(SystemClock)).await?;
        let admin_token_path = issuer
            .admin_token_path
            .clone()
            .context("the development setup wrote no admin credential")?;
        let credential = std::fs::read_to_string(&admin_token_path)?;
        let authorization = format!("Bearer {}", credential.trim())
            .parse()
            .context("the admin credential is not valid header text")?;
        let app = issuer.app.clone();
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(issuer.serve(grpc, http, async move {
            let _ = stopped.await;
        }));
        Ok(InProcessIssuer {
            grpc_addr,
            authorization,
            admin_token_path,
            app,
            stop: Some(stop),
            task,
            _data_dir: data_dir,
        })
    }

    /// Shuts the issuer down gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.context("issuer task")?
    }
}
