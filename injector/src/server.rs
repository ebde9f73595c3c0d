//! The webhook over HTTPS: the routes ([`MUTATE_PATH`] for the API server, [`HEALTH_PATH`]
//! for the kubelet) and the accept loop (TLS with rustls, HTTP/1.1 and HTTP/2).
//!
//! Limits on what a caller can hold: at most [`MAX_CONNECTIONS`] connections (more are
//! closed at once) and [`MAX_CONCURRENT_REQUESTS`] requests in progress,
//! [`HANDSHAKE_TIMEOUT`] to finish TLS, [`HEADER_TIMEOUT`] to send the request head,
//! [`REQUEST_TIMEOUT`] for a whole request (waiting for a turn included), and a body
//! limit (413 beyond).
//! Plain HTTP on the port fails the TLS handshake and the connection is closed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::SidecarDefaults;
use crate::review::{self, Outcome};

/// The path the `MutatingWebhookConfiguration` calls.
pub const MUTATE_PATH: &str = "/mutate";
/// The liveness and readiness path of the injector itself.
pub const HEALTH_PATH: &str = "/healthz";
/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Most requests read and answered at once; the others wait (within
/// [`REQUEST_TIMEOUT`]). Bounds memory: each holds a body of up to the body limit and its
/// parsed form.
pub const MAX_CONCURRENT_REQUESTS: usize = 16;
/// Time allowed for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for an HTTP/1.1 request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one request, body included. The API server gives the webhook
/// `timeoutSeconds` (10 in deploy/k8s) and gives up after that anyway.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open connections get to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns the HTTP routes.
pub fn router(defaults: Arc<SidecarDefaults>, max_body_bytes: usize) -> Router {
    let turns = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    // The last layer added runs first: the deadline covers the wait for a turn, and the
    // turn covers reading the body.
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(turns, one_turn))
        .route(HEALTH_PATH, get(|| async { "ok\n" }))
        .layer(middleware::from_fn(deadline))
        .with_state(defaults)
}

async fn one_turn(State(turns): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match turns.acquire().await {
        Ok(_turn) => next.run(request).await,
        // Never closed; answer as overloaded rather than panic.
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn mutate(State(defaults): State<Arc<SidecarDefaults>>, body: Bytes) -> Response {
    match review::review(&body, &defaults) {
        Ok(reviewed) => {
            match &reviewed.outcome {
                Outcome::Injected { n_ops } => tracing::info!(n_ops, "injected the sidecar"),
                Outcome::Unchanged { reason } => tracing::debug!(reason, "pod unchanged"),
                Outcome::Refused { message } => tracing::info!(%message, "refused a pod"),
            }
            axum::Json(reviewed.response).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "answered a request that is no admission review");
            (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response()
        }
    }
}

async fn deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` changes, then lets open
/// connections finish (at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(MAX_CONCURRENT_REQUESTS).unwrap_or(16));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; closing a new one");
            continue;
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let tls_stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "tls handshake timed out");
                        return;
                    }
                };
            let service = TowerToHyperService::new(router);
            let connection = builder.serve_connection(TokioIo::new(tls_stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                }
                _ = shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, connection).await;
                }
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open at the drain deadline were closed");
    }
}
