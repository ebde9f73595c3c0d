//! An issuer started in-process exactly as `tessera-issuer serve` starts it (same
//! `Issuer::start` and `serve`), with its own temporary data directory (SQLite, KEK,
//! admin credential), gRPC and HTTP on 127.0.0.1:0, and the chosen access algorithm.
//! Used by the propagation and refresh scenarios only; the DESIGN §10 suites run the
//! `tessera-issuer` binary as a separate process (`procs`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tessera_common::SystemClock;
use tessera_common::keys::{Algorithm, KeySetName};
use tessera_issuer::config::{IssuerConfig, KekSource, StoreConfig};
use tessera_issuer::server::Issuer;
use tessera_issuer::store::postgres::PostgresOptions;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};

/// A running issuer; stopped with [`InProcessIssuer::stop`].
pub struct InProcessIssuer {
    pub grpc_addr: SocketAddr,
    /// `Bearer <admin credential>`, ready to attach to requests.
    pub authorization: MetadataValue<Ascii>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    _data_dir: tempfile::TempDir,
}

impl InProcessIssuer {
    /// Starts an issuer on SQLite whose `access` keys use `algorithm`.
    pub async fn start(algorithm: Algorithm) -> anyhow::Result<InProcessIssuer> {
        let data_dir = tempfile::tempdir().context("creating the issuer's data directory")?;
        let mut config = IssuerConfig::development(data_dir.path());
        set_access_algorithm(&mut config, algorithm)?;
        InProcessIssuer::start_with(config, data_dir).await
    }

    /// Starts an issuer with `config`, whose data directory is `data_dir` (kept until
    /// the issuer is dropped).
    pub async fn start_with(
        config: IssuerConfig,
        data_dir: tempfile::TempDir,
    ) -> anyhow::Result<InProcessIssuer> {
        let issuer = Issuer::start(config, Arc::new(SystemClock)).await?;
        let admin_token_path = issuer
            .admin_token_path
            .clone()
            .context("the development setup wrote no admin credential")?;
        let credential = std::fs::read_to_string(&admin_token_path)?;
        let authorization = format!("Bearer {}", credential.trim())
            .parse()
            .context("the admin credential is not valid header text")?;
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

fn set_access_algorithm(config: &mut IssuerConfig, algorithm: Algorithm) -> anyhow::Result<()> {
    config
        .key_policies
        .get_mut(&KeySetName::Access)
        .context("the default configuration has no access key set")?
        .algorithm = algorithm;
    Ok(())
}

/// Starts `n` issuer replicas sharing one fresh schema of the PostgreSQL database at
/// `url` and one KEK, as a multi-replica deployment runs; returns them and the schema.
pub async fn postgres_replicas(
    url: &str,
    n: usize,
    algorithm: Algorithm,
    pool_size: usize,
) -> anyhow::Result<(Vec<InProcessIssuer>, String)> {
    let schema = fresh_schema(url).await?;
    let kek_dir = tempfile::tempdir().context("creating the KEK directory")?;
    let kek_path = kek_dir.path().join("kek");
    tessera_issuer::kek::Kek::load_or_create(&kek_path).context("creating the shared KEK")?;
    let mut replicas = Vec::with_capacity(n);
    for _ in 0..n {
        let data_dir = tempfile::tempdir().context("creating a replica's data directory")?;
        let mut config = IssuerConfig::development(data_dir.path());
        set_access_algorithm(&mut config, algorithm)?;
        config.store = StoreConfig::Postgres(PostgresOptions {
            url: url.to_owned(),
            pool_size,
            ca_file: None,
            schema: Some(schema.clone()),
        });
        config.kek = KekSource::File(kek_path.clone());
        replicas.push(InProcessIssuer::start_with(config, data_dir).await?);
    }
    // The KEK file is read at start; the directory may go now.
    drop(kek_dir);
    Ok((replicas, schema))
}

/// Creates an empty schema named `tessera_bench_<uuid>` and returns its name.
async fn fresh_schema(url: &str) -> anyhow::Result<String> {
    let name = format!("tessera_bench_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .context("creating the benchmark schema")?;
    Ok(name)
}
