//! The empty-RPC baselines, served by `tessera-bench serve-empty` in its own process: a
//! tonic server with the issuer's and the sidecar's builder settings (default
//! `Server::builder()`, TCP accepted through `TcpIncoming::from`, the socket through
//! `UnixListenerStream`, one-worker runtime once pinned to one core, as the binaries get)
//! serving the *same* services and message types with handlers that do no work:
//! `IssueAccessToken` and `ValidateToken` answer a canned response (the suites pass a copy
//! of the real server's own answer), `ValidateStream` echoes each `request_id` with the
//! canned verdict, and `grpc.health.v1` answers SERVING.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tessera_proto::v1 as pb;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::transport::Transport;

/// Largest request the sidecar accepts; mirrored so decoding limits match.
const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Answers buffered per stream by the echo task (the sidecar's bound while it answered
/// through a channel, until d90bca2).
const OUTBOUND_CAPACITY: usize = 128;

/// The canned answers, built once from a real token so sizes match the real path.
#[derive(Clone, Debug, Default)]
pub struct Canned {
    pub issue: pb::IssueAccessTokenResponse,
    pub validate: pb::ValidateTokenResponse,
}

/// Serves the empty server on `listen` (an `ip:port` for TCP, a socket path for a Unix
/// socket) until the process is killed: `tessera-bench serve-empty`, which the suites
/// start as a separate process pinned to the server cpus. `tcp_nodelay` sets
/// TCP_NODELAY on accepted connections, as the issuer's gRPC listener does.
pub async fn serve(
    transport: Transport,
    listen: &str,
    canned: Canned,
    tcp_nodelay: bool,
) -> anyhow::Result<()> {
    let routes = routes(canned).await;
    match transport {
        Transport::Tcp => {
            let listener = TcpListener::bind(listen).await?;
            Server::builder()
                .add_routes(routes)
                .serve_with_incoming(
                    TcpIncoming::from(listener).with_nodelay(tcp_nodelay.then_some(true)),
                )
                .await?;
        }
        Transport::Uds => {
            let listener = UnixListener::bind(listen)?;
            Server::builder()
                .add_routes(routes)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await?;
        }
    }
    Ok(())
}

async fn routes(canned: Canned) -> Routes {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let canned = Arc::new(canned);
    Routes::new(health_service)
        .add_service(NoopService::<TokenServiceName>::new(canned.clone()))
        .add_service(NoopService::<ValidatorServiceName>::new(canned))
}

/// A gRPC service answering without doing any work. It dispatches by path exactly as
/// generated servers do (`tonic::server::Grpc` with the prost codec) but is written by
/// hand, so RPCs added to the protocol later do not need no-op handlers here: they
/// answer UNIMPLEMENTED.
struct NoopService<N> {
    canned: Arc<Canned>,
    name: PhantomData<N>,
}

impl<N> NoopService<N> {
    fn new(canned: Arc<Canned>) -> Self {
        NoopService {
            canned,
            name: PhantomData,
        }
    }
}

impl<N> Clone for NoopService<N> {
    fn clone(&self) -> Self {
        NoopService::new(self.canned.clone())
    }
}

/// `tessera.v1.TokenService`.
struct TokenServiceName;
/// `tessera.v1.ValidatorService`.
struct ValidatorServiceName;

impl NamedService for NoopService<TokenServiceName> {
    const NAME: &'static str = "tessera.v1.TokenService";
}

impl NamedService for NoopService<ValidatorServiceName> {
    const NAME: &'static str = "tessera.v1.ValidatorService";
}

impl<N, B> Service<http::Request<B>> for NoopService<N>
where
    N: Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let canned = self.canned.clone();
        match request.uri().path() {
            "/tessera.v1.TokenService/IssueAccessToken" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default())
                    .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
                let answer = Answer::<pb::IssueAccessTokenRequest, _>::new(canned.issue.clone());
                Ok(grpc.unary(answer, request).await)
            }),
            "/tessera.v1.ValidatorService/ValidateToken" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default())
                    .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
                let answer = Answer::<pb::ValidateTokenRequest, _>::new(canned.validate.clone());
                Ok(grpc.unary(answer, request).await)
            }),
            "/tessera.v1.ValidatorService/ValidateStream" => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default())
                    .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
                Ok(grpc.streaming(Echo { canned }, request).await)
            }),
            _ => Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
                headers.insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
                Ok(response)
            }),
        }
    }
}

/// A unary handler answering a canned response (boxed future, as generated code does).
struct Answer<Req, Resp> {
    response: Resp,
    request: PhantomData<fn(Req)>,
}

impl<Req, Resp> Answer<Req, Resp> {
    fn new(response: Resp) -> Self {
        Answer {
            response,
            request: PhantomData,
        }
    }
}

impl<Req, Resp> UnaryService<Req> for Answer<Req, Resp>
where
    Resp: Clone + Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<Response<Resp>, Status>;

    fn call(&mut self, _request: Request<Req>) -> Self::Future {
        let response = self.response.clone();
        Box::pin(async move { Ok(Response::new(response)) })
    }
}

/// The streaming handler: echoes each `request_id` with the canned verdict, from a task
/// through a bounded channel, as the sidecar answered until d90bca2 (it now answers from
/// its response stream itself, with no task or channel in between): the empty stream is a
/// reference for the transport, not a copy of the sidecar's stream path.
struct Echo {
    canned: Arc<Canned>,
}

type StreamOf<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl StreamingService<pb::ValidateStreamRequest> for Echo {
    type Response = pb::ValidateStreamResponse;
    type ResponseStream = StreamOf<pb::ValidateStreamResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<pb::ValidateStreamRequest>>) -> Self::Future {
        let canned = self.canned.clone();
        Box::pin(async move {
            let mut inbound = request.into_inner();
            let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
            tokio::spawn(async move {
                let verdict = &canned.validate;
                while let Ok(Some(message)) = inbound.message().await {
                    let response = pb::ValidateStreamResponse {
                        request_id: message.request_id,
                        valid: verdict.valid,
                        reason: verdict.reason,
                        claims: verdict.claims.clone(),
                        claims_json: verdict.claims_json.clone(),
                    };
                    if outbound.send(Ok(response)).await.is_err() {
                        break;
                    }
                }
            });
            let stream: Self::ResponseStream = Box::pin(ReceiverStream::new(receiver));
            Ok(Response::new(stream))
        })
    }
}
