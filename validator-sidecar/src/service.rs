//! `tessera.v1.ValidatorService`: unary `ValidateToken` and the bidirectional
//! `ValidateStream`, whose responses go out as each validation completes.
//!
//! Backpressure in a stream: at most [`MAX_IN_FLIGHT_PER_STREAM`] validations run at once
//! and at most [`OUTBOUND_CAPACITY`] answers wait for the client; when both are full the
//! stream stops reading requests, so HTTP/2 flow control pushes back on the caller.
//! Nothing is queued without bound.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tessera_proto::v1 as pb;
use tessera_proto::v1::validator_service_server::ValidatorService;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::validator::Validator;

/// Validations running at once in one stream.
pub const MAX_IN_FLIGHT_PER_STREAM: usize = 64;
/// Answers buffered for a slow reader in one stream.
pub const OUTBOUND_CAPACITY: usize = 128;

/// The gRPC face of the [`Validator`].
#[derive(Clone, Debug)]
pub struct ValidatorGrpc {
    validator: Arc<Validator>,
    shutdown: watch::Receiver<bool>,
}

impl ValidatorGrpc {
    /// Returns the service; open streams end when `shutdown` turns true.
    pub fn new(validator: Arc<Validator>, shutdown: watch::Receiver<bool>) -> Self {
        ValidatorGrpc {
            validator,
            shutdown,
        }
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<pb::ValidateStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ValidatorService for ValidatorGrpc {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let request = request.into_inner();
        let verdict = match convert::query(&request) {
            Ok(query) => self.validator.validate(&query).await,
            Err(rejection) => self.validator.refuse(rejection),
        };
        if let Err(rejection) = &verdict {
            tracing::debug!(reason = rejection.as_str(), "token rejected");
        }
        Ok(Response::new(convert::response(&verdict)))
    }

    type ValidateStreamStream = ResponseStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn validate_stream(
        &self,
        request: Request<Streaming<pb::ValidateStreamRequest>>,
    ) -> Result<Response<Self::ValidateStreamStream>, Status> {
        let inbound = request.into_inner();
        let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        tokio::spawn(pump(
            self.validator.clone(),
            inbound,
            outbound,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Reads a stream's requests and answers each as it completes: from the caller's task
/// when no signature needs checking (cache hits, early rejections), otherwise from a task
/// of its own so expensive verifications run in parallel.
async fn pump(
    validator: Arc<Validator>,
    mut inbound: Streaming<pb::ValidateStreamRequest>,
    outbound: mpsc::Sender<Result<pb::ValidateStreamResponse, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_STREAM));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let message = tokio::select! {
            message = inbound.message() => message,
            () = outbound.closed() => break,
            _ = shutdown.changed() => break,
        };
        let request = match message {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%status, "validation stream ended by the client");
                break;
            }
        };
        let cheap = match convert::stream_query(&request) {
            Ok(query) => validator.validate_cheap(&query),
            Err(rejection) => Some(validator.refuse(rejection)),
        };
        if let Some(verdict) = cheap {
            let response = convert::stream_response(request.request_id, &verdict);
            drop(permit);
            if outbound.send(Ok(response)).await.is_err() {
                break;
            }
            continue;
        }
        let validator = validator.clone();
        let outbound = outbound.clone();
        tokio::spawn(async move {
            let verdict = match convert::stream_query(&request) {
                Ok(query) => validator.validate(&query).await,
                Err(rejection) => validator.refuse(rejection),
            };
            let _ = outbound
                .send(Ok(convert::stream_response(request.request_id, &verdict)))
                .await;
            drop(permit);
        });
    }
    // Let in-flight validations answer before the stream closes.
    let _ = permits.acquire_many(MAX_IN_FLIGHT_PER_STREAM as u32).await;
}
