//! The Tessera validator sidecar: subscribes to the issuer's trust-bundle stream, keeps
//! keys and revocations in memory, and validates tokens locally over gRPC on a Unix
//! socket (and optionally TCP), with health, reflection and Prometheus metrics.
//!
//! `main` parses a [`SidecarConfig`], binds [`Listeners`] and calls [`run`]; tests call
//! the same `run` with their own listeners and shutdown signal.

pub mod action;
pub mod answer;
pub mod apikeys;
pub mod backoff;
pub mod cache;
pub mod codec;
pub mod config;
pub mod convert;
pub mod credcache;
pub mod credential_request;
pub mod credentials;
pub mod health;
pub mod http;
pub mod issuer_client;
pub mod lease;
pub mod listen;
pub mod metrics;
pub mod opaque;
pub mod persist;
pub mod resync;
pub mod secrets;
pub mod server;
pub mod service;
pub mod service_token;
pub mod state;
pub mod stream;
pub mod subscription;
pub mod validator;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tessera_common::trace_context::TraceContextLayer;
use tessera_common::{Clock, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::Instrument;

pub use config::{ConfigError, SidecarConfig, StalePolicy, TelemetryConfig};
pub use server::{BindError, Listeners};

/// Largest request message accepted (tokens are at most 8 KiB; the slack lets an
/// oversize token reach the validator and get its TOO_LARGE answer).
const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// How long in-flight RPCs may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the sidecar could not run.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs the sidecar on `listeners` until `shutdown` completes, then stops accepting,
/// lets in-flight RPCs finish (up to a grace period), persists the bundle and removes
/// the socket file.
pub async fn run(
    config: SidecarConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SidecarError> {
    run_with_clock(config, listeners, shutdown, Arc::new(SystemClock)).await
}

/// Like [`run`], with the clock made explicit.
pub async fn run_with_clock(
    config: SidecarConfig,
    mut listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
) -> Result<(), SidecarError> {
    let prometheus = metrics::install();
    let state = Arc::new(state::BundleState::new(config.validation.audiences.clone()));
    if let Some(path) = &config.bundle_cache {
        persist::restore(path, &state, clock.now());
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let resync = Arc::new(resync::ResyncSignal::new());
    let validator = Arc::new(validator::Validator::new(
        state.clone(),
        resync.clone(),
        config.validation.clone(),
        clock.clone(),
    ));
    let probe = health::ReadinessProbe {
        state: state.clone(),
        clock: clock.clone(),
        config: config.validation.clone(),
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // The reporter starts SERVING: set the real status (a bundle loaded from the cache
    // file may already be fresh enough) before anything is served.
    let initial_status = match probe.check() {
        state::Readiness::Ready => ServingStatus::Serving,
        state::Readiness::NoBundle | state::Readiness::Stale => ServingStatus::NotServing,
    };
    health::set_status(&health_reporter, initial_status).await;
    let credentials = Arc::new(credentials::Credentials::new(
        &config.credentials,
        &config.issuer,
        state.clone(),
        clock.clone(),
    )?);
    let routes = grpc_routes(
        validator,
        credentials.clone(),
        health_service,
        shutdown_rx.clone(),
    )?;

    let mut background = JoinSet::new();
    let monitor = health::run_monitor(probe.clone(), health_reporter, shutdown_rx.clone());
    background.spawn(monitor.instrument(tracing::info_span!("health")));
    let subscription = subscription::Subscription {
        config: config.issuer.clone(),
        state: state.clone(),
        clock,
        resync,
        shutdown: shutdown_rx.clone(),
        listeners: credentials.listeners(),
    };
    let subscription_span = tracing::info_span!("subscription", issuer = %config.issuer.addr);
    background.spawn(subscription.run().instrument(subscription_span));
    if let Some(identity) = credentials.service_tokens.identity() {
        let span = tracing::info_span!(
            "service_token",
            tenant = %identity.tenant_id,
            service = %identity.service
        );
        let holder = credentials.service_tokens.clone().run(
            credentials.issuer.clone(),
            config.issuer.subscriber_id.clone(),
            shutdown_rx.clone(),
        );
        background.spawn(holder.instrument(span));
    }
    if let Some(path) = config.bundle_cache.clone() {
        let writer = persist::run_writer(path, state.clone(), shutdown_rx.clone());
        background.spawn(writer.instrument(tracing::info_span!("bundle_cache")));
    }

    // The socket file stays owned here and is removed once everything has stopped.
    let mut unix_socket = listeners.unix.take();
    let unix_listener = unix_socket.as_mut().and_then(|socket| {
        let path = socket.path().to_owned();
        socket.take_listener().map(|listener| (listener, path))
    });
    let http_router = http::router(probe, prometheus);
    let mut servers = spawn_servers(unix_listener, listeners, &routes, http_router, &shutdown_rx);

    // Stop on the caller's signal, or when a server fails.
    let mut failure = None;
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        Some(result) = servers.join_next() => {
            if let Ok(Err(error)) = result {
                tracing::error!(%error, "a server failed; shutting down");
                failure = Some(error);
            }
        }
    }
    let _ = shutdown_tx.send(true);
    drain(servers, background).await;
    drop(unix_socket);
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Serves `routes` on the Unix socket and the TCP port, and `http_router` on the HTTP
/// port, each until `shutdown` turns true.
fn spawn_servers(
    unix_listener: Option<(tokio::net::UnixListener, std::path::PathBuf)>,
    mut listeners: Listeners,
    routes: &Routes,
    http_router: axum::Router,
    shutdown: &watch::Receiver<bool>,
) -> JoinSet<Result<(), SidecarError>> {
    let mut servers = JoinSet::new();
    if let Some((listener, path)) = unix_listener {
        tracing::info!(path = %path.display(), "serving gRPC on the unix socket");
        let serve = Server::builder()
            .layer(TraceContextLayer)
            .add_routes(routes.clone())
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                signalled(shutdown.clone()),
            );
        servers.spawn(async move { Ok(serve.await?) });
    }
    if let Some(listener) = listeners.grpc_tcp.take() {
        tracing::info!(addr = ?listener.local_addr().ok(), "serving gRPC on tcp");
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = Server::builder()
            .layer(TraceContextLayer)
            .add_routes(routes.clone())
            .serve_with_incoming_shutdown(incoming, signalled(shutdown.clone()));
        servers.spawn(async move { Ok(serve.await?) });
    }
    if let Some(listener) = listeners.http.take() {
        tracing::info!(addr = ?listener.local_addr().ok(), "serving http");
        let serve =
            axum::serve(listener, http_router).with_graceful_shutdown(signalled(shutdown.clone()));
        servers.spawn(async move { Ok(serve.await?) });
    }
    servers
}

/// Waits for the servers to finish their in-flight RPCs and the background tasks to
/// finish (the bundle writer writes once more); aborts what is left after the grace
/// period.
async fn drain(mut servers: JoinSet<Result<(), SidecarError>>, mut background: JoinSet<()>) {
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(result) = servers.join_next().await {
            if let Ok(Err(error)) = result {
                tracing::warn!(%error, "server ended with an error during shutdown");
            }
        }
        while background.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; aborting what is left");
        servers.abort_all();
        background.abort_all();
    }
}

/// Builds the gRPC routes shared by every listener: the validator, health and reflection.
fn grpc_routes(
    validator: Arc<validator::Validator>,
    credentials: Arc<credentials::Credentials>,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: watch::Receiver<bool>,
) -> Result<Routes, SidecarError> {
    let validator_service = service::ValidatorGrpc::new(validator, credentials, shutdown)
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    // Reflection lists only what this server answers; the shared descriptor set also
    // describes the issuer's services.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("tessera.v1.ValidatorService")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    Ok(Routes::new(validator_service)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn signalled(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; waiting for ctrl-c");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
