//! A validator sidecar started in-process through `tessera_sidecar::run` (what the
//! binary calls), subscribed to an in-process issuer with the admin credential, serving
//! on a Unix socket in a temporary directory. Ready once its health says SERVING.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tessera_sidecar::{Listeners, SidecarConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::issuer_server::InProcessIssuer;
use crate::transport::{self, Target};

/// How long the sidecar may take to receive its first bundle.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running sidecar; stopped with [`InProcessSidecar::stop`].
pub struct InProcessSidecar {
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tessera_sidecar::SidecarError>>,
    _dir: tempfile::TempDir,
}

impl InProcessSidecar {
    /// Starts a sidecar on `issuer` with a verified-token cache of `cache_capacity`
    /// entries (0 disables it) and waits until it serves.
    pub async fn start(
        issuer: &InProcessIssuer,
        cache_capacity: u64,
    ) -> anyhow::Result<InProcessSidecar> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("sidecar.sock");
        let args: Vec<std::ffi::OsString> = vec![
            "tessera-sidecar".into(),
            "--issuer-addr".into(),
            format!("http://{}", issuer.grpc_addr).into(),
            "--issuer-token-file".into(),
            issuer.admin_token_path.clone().into(),
            "--socket".into(),
            socket.clone().into(),
            "--cache-capacity".into(),
            cache_capacity.to_string().into(),
            "--subscriber-id".into(),
            "tessera-bench".into(),
        ];
        let config = SidecarConfig::parse_from(args).context("sidecar configuration")?;
        let listeners = Listeners::bind(&config.serve).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tessera_sidecar::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        let sidecar = InProcessSidecar {
            socket,
            stop: Some(stop),
            task,
            _dir: dir,
        };
        sidecar.wait_until_serving().await?;
        Ok(sidecar)
    }

    /// Returns the socket as a load-generator target.
    pub fn target(&self) -> Target {
        Target::Uds(self.socket.clone())
    }

    async fn wait_until_serving(&self) -> anyhow::Result<()> {
        let channel = transport::connect(&self.target(), 1)
            .await?
            .pop()
            .context("no channel")?;
        let mut health = HealthClient::new(channel);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|response| response.into_inner().status);
            if matches!(status, Ok(status) if status == ServingStatus::Serving as i32) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the sidecar did not report SERVING within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shuts the sidecar down and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        Ok((&mut self.task).await.context("sidecar task")??)
    }
}
