//! Where a server listens and how the load generator reaches it: several HTTP/2
//! connections (tonic `Channel`s) over TCP or a Unix socket, so one connection's
//! serialisation never caps the rate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The transport of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Tcp,
    Uds,
}

impl Transport {
    /// Returns the lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Uds => "uds",
        }
    }
}

/// A server address.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Uds(PathBuf),
}

/// Opens `n_connections` separate HTTP/2 connections to `target`.
pub async fn connect(target: &Target, n_connections: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n_connections);
    for _ in 0..n_connections.max(1) {
        channels.push(connect_one(target).await?);
    }
    Ok(channels)
}

/// Opens one connection, retrying for a few seconds while the server starts.
async fn connect_one(target: &Target) -> anyhow::Result<Channel> {
    let mut attempts = 0;
    loop {
        match try_connect(target).await {
            Ok(channel) => return Ok(channel),
            Err(_) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error).with_context(|| format!("connecting to {target:?}")),
        }
    }
}

/// Opens one connection, once.
pub async fn try_connect(target: &Target) -> Result<Channel, tonic::transport::Error> {
    match target {
        Target::Tcp(addr) => {
            Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await
        }
        Target::Uds(path) => {
            let path = path.clone();
            // The URI is required by the API but unused: the connector dials the socket.
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
        }
    }
}
