//! Tessera sidecar injector: a Kubernetes mutating admission webhook that adds the
//! validator sidecar to pods annotated `tessera.dev/inject: "true"`.
//!
//! The decision is pure ([`mutate::mutate`] over a pod, [`review::review`] over an
//! `AdmissionReview` body); [`run`] serves it over HTTPS. The injector calls no
//! Kubernetes API and needs no RBAC: everything it decides is in the review.

pub mod annotations;
pub mod config;
pub mod mutate;
pub mod patch;
pub mod review;
pub mod server;
pub mod tls;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{ConfigError, EXIT_CONFIG, InjectorConfig};

/// A failure to start serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Serves the webhook on `listener` with `cert` (loaded by the caller before binding,
/// [`tls::ReloadingCert::load`]) until `shutdown` completes.
pub async fn run(
    config: InjectorConfig,
    cert: Arc<tls::ReloadingCert>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let tls_config = Arc::new(tls::server_config(cert.clone())?);
    let router = server::router(Arc::new(config.sidecar), config.serve.max_body_bytes);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let reload = tokio::spawn(cert.watch(config.serve.tls_reload_interval, shutdown_rx.clone()));
    let serving = tokio::spawn(server::serve(listener, tls_config, router, shutdown_rx));
    shutdown.await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = serving.await;
    let _ = reload.await;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
