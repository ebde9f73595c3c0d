//! `tessera.v1.ValidatorService`: unary `ValidateToken` and the bidirectional
//! `ValidateStream` (answered by [`crate::stream`]).
//!
//! The service is routed by hand rather than through the generated server so that its
//! answers go through [`AnswerCodec`]: they are written straight from the verdict, the
//! claims of a verified token encoded once (`crate::answer`), with the bytes the generated
//! prost messages would have. Requests are decoded by prost into the generated messages,
//! as before; a method the protocol adds later answers UNIMPLEMENTED here until it is
//! routed.
//!
//! `ValidateApiKey`, `ValidateOpaqueToken`, `FetchServiceToken` and `ConsumeActionToken`
//! ([`crate::credentials`]) are routed here too, with tonic's standard prost codec: their
//! answers come from a cache or the issuer, not from the token fast path. `GetSecret`
//! ([`crate::secrets`]) answers from bytes encoded once per secret version.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tessera_proto::v1 as pb;
use tokio::sync::watch;
use tonic::codec::Codec;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;
use tracing::Instrument;

use crate::answer::{StreamAnswer, UnaryAnswer};
use crate::apikeys::ApiKeyAnswer;
use crate::codec::AnswerCodec;
use crate::convert;
use crate::credentials::Credentials;
use crate::secrets::{SecretAnswer, Secrets};
use crate::stream::AnswerStream;
use crate::validator::Validator;

pub use crate::stream::MAX_IN_FLIGHT_PER_STREAM;

const VALIDATE_TOKEN: &str = "/tessera.v1.ValidatorService/ValidateToken";
const VALIDATE_STREAM: &str = "/tessera.v1.ValidatorService/ValidateStream";
const VALIDATE_API_KEY: &str = "/tessera.v1.ValidatorService/ValidateApiKey";
const VALIDATE_OPAQUE_TOKEN: &str = "/tessera.v1.ValidatorService/ValidateOpaqueToken";
const FETCH_SERVICE_TOKEN: &str = "/tessera.v1.ValidatorService/FetchServiceToken";
const GET_SECRET: &str = "/tessera.v1.ValidatorService/GetSecret";
const CONSUME_ACTION_TOKEN: &str = "/tessera.v1.ValidatorService/ConsumeActionToken";

/// The gRPC face of the [`Validator`], ready for `tonic::service::Routes`.
#[derive(Clone, Debug)]
pub struct ValidatorGrpc {
    validator: Arc<Validator>,
    credentials: Arc<Credentials>,
    shutdown: watch::Receiver<bool>,
    max_decoding_message_size: Option<usize>,
}

impl ValidatorGrpc {
    /// Returns the service; open streams stop reading when `shutdown` turns true.
    pub fn new(
        validator: Arc<Validator>,
        credentials: Arc<Credentials>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        ValidatorGrpc {
            validator,
            credentials,
            shutdown,
            max_decoding_message_size: None,
        }
    }

    /// Refuses request messages larger than `limit` bytes.
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }

    fn grpc<Req, Ans>(&self) -> Grpc<AnswerCodec<Req, Ans>>
    where
        AnswerCodec<Req, Ans>: Codec,
    {
        Grpc::new(AnswerCodec::default())
            .apply_max_message_size_config(self.max_decoding_message_size, None)
    }

    fn prost<Req, Res>(&self) -> Grpc<ProstCodec<Res, Req>>
    where
        Req: prost::Message + Default + Send + 'static,
        Res: prost::Message + Send + 'static,
    {
        Grpc::new(ProstCodec::default())
            .apply_max_message_size_config(self.max_decoding_message_size, None)
    }
}

impl NamedService for ValidatorGrpc {
    const NAME: &'static str = "tessera.v1.ValidatorService";
}

impl<B> Service<http::Request<B>> for ValidatorGrpc
where
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
        match request.uri().path() {
            VALIDATE_TOKEN => {
                let mut grpc = self.grpc::<pb::ValidateTokenRequest, UnaryAnswer>();
                let method = ValidateToken(self.validator.clone());
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
            VALIDATE_STREAM => {
                let mut grpc = self.grpc::<pb::ValidateStreamRequest, StreamAnswer>();
                let method = ValidateStream {
                    validator: self.validator.clone(),
                    shutdown: self.shutdown.clone(),
                };
                Box::pin(async move { Ok(grpc.streaming(method, request).await) })
            }
            VALIDATE_API_KEY => {
                // Answers through the answer codec: a cache hit writes bytes encoded once.
                let mut grpc = self.grpc::<pb::ValidateApiKeyRequest, ApiKeyAnswer>();
                let method = CredentialMethod(self.credentials.clone(), validate_api_key);
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
            VALIDATE_OPAQUE_TOKEN => {
                let mut grpc = self.prost::<pb::ValidateOpaqueTokenRequest, _>();
                let method = CredentialMethod(self.credentials.clone(), validate_opaque_token);
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
            FETCH_SERVICE_TOKEN => {
                let mut grpc = self.prost::<pb::FetchServiceTokenRequest, _>();
                let method = CredentialMethod(self.credentials.clone(), fetch_service_token);
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
            GET_SECRET => {
                // A cached secret is answered without a task switch, from bytes encoded
                // once per version (crate::secrets).
                let mut grpc = self.grpc::<pb::GetSecretValueRequest, SecretAnswer>();
                let method = GetSecret(self.credentials.secrets.clone());
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
            CONSUME_ACTION_TOKEN => {
                let mut grpc = self.prost::<pb::ConsumeActionTokenRequest, _>();
                let method = CredentialMethod(self.credentials.clone(), consume_action_token);
                Box::pin(async move { Ok(grpc.unary(method, request).await) })
            }
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

/// `ValidateToken`: one verdict per call.
struct ValidateToken(Arc<Validator>);

impl UnaryService<pb::ValidateTokenRequest> for ValidateToken {
    type Response = UnaryAnswer;
    type Future = BoxFuture<Response<UnaryAnswer>, Status>;

    fn call(&mut self, request: Request<pb::ValidateTokenRequest>) -> Self::Future {
        let validator = self.0.clone();
        let answer = async move {
            let request = request.into_inner();
            let verdict = match convert::query(&request) {
                Ok(query) => validator.validate(&query).await,
                Err(rejection) => validator.refuse(rejection),
            };
            if let Err(rejection) = &verdict {
                tracing::debug!(reason = rejection.as_str(), "token rejected");
            }
            Ok(Response::new(UnaryAnswer(verdict)))
        };
        Box::pin(answer.instrument(tracing::debug_span!("validate_token")))
    }
}

/// `ValidateStream`: answers as each validation completes ([`AnswerStream`]).
struct ValidateStream {
    validator: Arc<Validator>,
    shutdown: watch::Receiver<bool>,
}

impl StreamingService<pb::ValidateStreamRequest> for ValidateStream {
    type Response = StreamAnswer;
    type ResponseStream = AnswerStream;
    type Future = BoxFuture<Response<AnswerStream>, Status>;

    fn call(&mut self, request: Request<Streaming<pb::ValidateStreamRequest>>) -> Self::Future {
        let _span = tracing::debug_span!("validate_stream").entered();
        let answers = AnswerStream::new(
            self.validator.clone(),
            request.into_inner(),
            self.shutdown.clone(),
        );
        Box::pin(async move { Ok(Response::new(answers)) })
    }
}

/// `GetSecret`: answered from the cache when it can be, else after an issuer call.
struct GetSecret(Secrets);

impl UnaryService<pb::GetSecretValueRequest> for GetSecret {
    type Response = SecretAnswer;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Response<SecretAnswer>, Status>>,
        BoxFuture<Response<SecretAnswer>, Status>,
    >;

    fn call(&mut self, request: Request<pb::GetSecretValueRequest>) -> Self::Future {
        use futures_util::future::Either;
        let request = request.into_inner();
        if let Some(answered) = self.0.try_cached(&request) {
            return Either::Left(std::future::ready(answered.map(Response::new)));
        }
        let secrets = self.0.clone();
        let span = tracing::debug_span!("get_secret");
        let answer = async move { secrets.get(&request).await.map(Response::new) };
        Either::Right(Box::pin(answer.instrument(span)))
    }
}

/// A unary method of [`Credentials`]: `handler` answers the request.
struct CredentialMethod<Req, Res>(
    Arc<Credentials>,
    fn(Arc<Credentials>, Req) -> BoxFuture<Res, Status>,
);

impl<Req: Send + 'static, Res: Send + 'static> UnaryService<Req> for CredentialMethod<Req, Res> {
    type Response = Res;
    type Future = BoxFuture<Response<Res>, Status>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let answer = (self.1)(self.0.clone(), request.into_inner());
        Box::pin(async move { answer.await.map(Response::new) })
    }
}

fn validate_api_key(
    credentials: Arc<Credentials>,
    request: pb::ValidateApiKeyRequest,
) -> BoxFuture<ApiKeyAnswer, Status> {
    let span = tracing::debug_span!("validate_api_key");
    Box::pin(async move { credentials.api_keys.validate(&request).await }.instrument(span))
}

fn validate_opaque_token(
    credentials: Arc<Credentials>,
    request: pb::ValidateOpaqueTokenRequest,
) -> BoxFuture<pb::ValidateOpaqueTokenResponse, Status> {
    let span = tracing::debug_span!("validate_opaque_token");
    Box::pin(async move { credentials.opaque_tokens.validate(&request).await }.instrument(span))
}

fn consume_action_token(
    credentials: Arc<Credentials>,
    request: pb::ConsumeActionTokenRequest,
) -> BoxFuture<pb::ConsumeActionTokenResponse, Status> {
    let span = tracing::debug_span!("consume_action_token");
    Box::pin(async move { credentials.actions.consume(request).await }.instrument(span))
}

fn fetch_service_token(
    credentials: Arc<Credentials>,
    _request: pb::FetchServiceTokenRequest,
) -> BoxFuture<pb::FetchServiceTokenResponse, Status> {
    let answer = credentials.service_tokens.fetch(credentials.now());
    Box::pin(async move { answer })
}
