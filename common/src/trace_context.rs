//! W3C trace context over gRPC metadata (DESIGN §9), so one trace spans
//! app → sidecar → issuer: servers continue the caller's trace from its `traceparent`
//! header, clients send theirs.
//!
//! Both halves cost nothing when tracing is not exported: the server layer adds a span
//! only for requests that carry a valid `traceparent`, and the client side injects only
//! when the current span belongs to an OpenTelemetry trace (an OTLP endpoint is set).

use std::task::{Context as TaskContext, Poll};

use futures_util::future::Either;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries the caller's trace and span ids.
pub const TRACEPARENT: &str = "traceparent";

/// Server side: continues the caller's trace. Add with `Server::builder().layer(…)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer;

impl<S> tower::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService { inner }
    }
}

/// See [`TraceContextLayer`].
#[derive(Clone, Debug)]
pub struct TraceContextService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(parent) = remote_parent(request.headers()) else {
            return Either::Left(self.inner.call(request));
        };
        // The handler's own span (`#[instrument]`) opens while this one is current, so
        // it joins the caller's trace as this span's child.
        let span = tracing::info_span!(
            "grpc.server",
            otel.kind = "server",
            rpc.method = %request.uri().path(),
        );
        // Fails only when no OpenTelemetry layer is installed: nothing to continue then.
        let _ = span.set_parent(parent);
        Either::Right(self.inner.call(request).instrument(span))
    }
}

/// Returns the caller's trace context when `headers` carry a valid `traceparent`.
pub fn remote_parent(headers: &http::HeaderMap) -> Option<Context> {
    headers.get(TRACEPARENT)?;
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    context.span().span_context().is_valid().then_some(context)
}

/// Client side: writes the current span's trace context into `metadata` when that span is
/// part of an OpenTelemetry trace.
pub fn inject_current(metadata: &mut MetadataMap) {
    if let Some(context) = current_context() {
        TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
    }
}

/// The OpenTelemetry context of the current span or, when the OTLP layer does not see that
/// span (a debug-level handler span that `RUST_LOG=debug` enables for the logs only), of
/// its nearest ancestor the layer sees; `None` outside any exported trace.
fn current_context() -> Option<Context> {
    let span = tracing::Span::current();
    let context = span.context();
    if context.span().span_context().is_valid() {
        return Some(context);
    }
    let id = span.id()?;
    tracing::dispatcher::get_default(|dispatch| {
        use tracing_subscriber::registry::LookupSpan as _;
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        // Ids first: the lookups below lock each span's extensions.
        let ancestors: Vec<tracing::span::Id> = registry
            .span(&id)?
            .scope()
            .skip(1)
            .map(|ancestor| ancestor.id())
            .collect();
        ancestors.iter().find_map(|ancestor| {
            tracing_opentelemetry::get_otel_context(ancestor, dispatch)
                .filter(|context| context.span().span_context().is_valid())
        })
    })
}

/// The trace context of the span that was current where it was taken, for work done later
/// on that span's behalf in another task: the sidecar's subscription task runs the resync
/// an application's request asked for, and its call to the issuer belongs to that
/// request's trace.
#[derive(Clone, Debug)]
pub struct TraceParent(Context);

impl TraceParent {
    /// Returns the current span's trace context when that span is part of an OpenTelemetry
    /// trace (`None` when no span is exported, at no cost beyond a lookup).
    pub fn current() -> Option<TraceParent> {
        current_context().map(TraceParent)
    }

    /// Makes `span` a child of this context. Call it before `span` is first entered.
    pub fn adopt(&self, span: &tracing::Span) {
        // Fails only when the span is disabled or already started: it stays where it was.
        let _ = span.set_parent(self.0.clone());
    }
}

/// A tonic interceptor that calls [`inject_current`] on every request.
pub fn propagate(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_current(request.metadata_mut());
    Ok(request)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tower::{Layer, Service, ServiceExt};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Keeps every exported span.
    #[derive(Clone, Debug, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn traced() -> (
        SdkTracerProvider,
        Collect,
        impl tracing::Subscriber + Send + Sync,
    ) {
        let spans = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        (provider, spans, subscriber)
    }

    /// A service that opens a span of its own, as a `#[instrument]`ed handler does, and
    /// returns the `traceparent` it would send on to the next hop.
    async fn handler(_: http::Request<()>) -> Result<Option<String>, std::convert::Infallible> {
        let span = tracing::info_span!("handler");
        let next_hop = async {
            let mut metadata = MetadataMap::new();
            inject_current(&mut metadata);
            metadata
                .get(TRACEPARENT)
                .map(|value| value.to_str().unwrap().to_owned())
        }
        .instrument(span)
        .await;
        Ok(next_hop)
    }

    #[tokio::test]
    async fn a_request_with_traceparent_continues_the_callers_trace_and_passes_it_on() {
        let (provider, spans, subscriber) = traced();
        let _guard = tracing::subscriber::set_default(subscriber);
        let mut service = TraceContextLayer.layer(tower::service_fn(handler));
        let request = http::Request::builder()
            .uri("/tessera.v1.TokenService/IssueAccessToken")
            .header(TRACEPARENT, CALLER)
            .body(())
            .unwrap();
        let next_hop = service.ready().await.unwrap().call(request).await.unwrap();
        provider.force_flush().unwrap();

        let caller_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let spans = spans.0.lock().unwrap().clone();
        let server = spans
            .iter()
            .find(|span| span.name == "grpc.server")
            .unwrap();
        let handler = spans.iter().find(|span| span.name == "handler").unwrap();
        assert_eq!(server.span_context.trace_id(), caller_trace);
        assert_eq!(
            server.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert!(server.parent_span_is_remote);
        assert_eq!(handler.span_context.trace_id(), caller_trace);
        assert_eq!(handler.parent_span_id, server.span_context.span_id());
        // The next hop gets the same trace, with the handler's span as its parent.
        let next_hop = next_hop.expect("a traceparent for the next hop");
        assert_eq!(
            next_hop,
            format!("00-{}-{}-01", caller_trace, handler.span_context.span_id())
        );
    }

    #[test]
    fn a_trace_parent_taken_in_one_span_parents_a_span_opened_later_elsewhere() {
        let (provider, spans, subscriber) = traced();
        let _guard = tracing::subscriber::set_default(subscriber);
        assert!(TraceParent::current().is_none(), "no span is current");
        let request = tracing::info_span!("request");
        let parent = request
            .in_scope(TraceParent::current)
            .expect("the request's span is traced");
        drop(request);
        // Later, with no span current (another task): a root span unless adopted.
        let later = tracing::info_span!(parent: None, "later");
        parent.adopt(&later);
        later.in_scope(|| tracing::info_span!("beneath").in_scope(|| {}));
        drop(later);
        provider.force_flush().unwrap();

        let spans = spans.0.lock().unwrap().clone();
        let find = |name: &str| spans.iter().find(|span| span.name == name).unwrap();
        let (request, later, beneath) = (find("request"), find("later"), find("beneath"));
        assert_eq!(later.parent_span_id, request.span_context.span_id());
        assert_eq!(
            later.span_context.trace_id(),
            request.span_context.trace_id()
        );
        assert_eq!(beneath.parent_span_id, later.span_context.span_id());
        assert_eq!(
            beneath.span_context.trace_id(),
            request.span_context.trace_id()
        );
    }

    #[test]
    fn a_span_the_otlp_layer_filters_out_passes_on_its_nearest_traced_ancestor() {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::filter::LevelFilter;

        let spans = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        // As in `telemetry::init` under RUST_LOG=debug: the logs see debug spans, the OTLP
        // layer does not.
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(LevelFilter::INFO),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_filter(LevelFilter::DEBUG),
            );
        let _guard = tracing::subscriber::set_default(subscriber);
        let server = tracing::info_span!("server");
        let (parent, next_hop) = server.in_scope(|| {
            tracing::debug_span!("handler").in_scope(|| {
                let mut metadata = MetadataMap::new();
                inject_current(&mut metadata);
                (TraceParent::current(), metadata.get(TRACEPARENT).cloned())
            })
        });
        drop(server);
        provider.force_flush().unwrap();

        let spans = spans.0.lock().unwrap().clone();
        let server = spans.iter().find(|span| span.name == "server").unwrap();
        assert!(spans.iter().all(|span| span.name != "handler"));
        let next_hop = next_hop.expect("a traceparent for the next hop");
        assert_eq!(
            next_hop.to_str().unwrap(),
            format!(
                "00-{}-{}-01",
                server.span_context.trace_id(),
                server.span_context.span_id()
            )
        );
        let parent = parent.expect("the server span's context");
        assert_eq!(
            parent.0.span().span_context().span_id(),
            server.span_context.span_id()
        );
    }

    #[tokio::test]
    async fn without_traceparent_or_with_a_malformed_one_nothing_is_added() {
        let (provider, spans, subscriber) = traced();
        let _guard = tracing::subscriber::set_default(subscriber);
        for header in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let mut builder = http::Request::builder().uri("/x");
            if let Some(header) = header {
                builder = builder.header(TRACEPARENT, header);
            }
            let mut service = TraceContextLayer.layer(tower::service_fn(handler));
            service
                .ready()
                .await
                .unwrap()
                .call(builder.body(()).unwrap())
                .await
                .unwrap();
        }
        provider.force_flush().unwrap();
        let spans = spans.0.lock().unwrap().clone();
        assert!(spans.iter().all(|span| span.name != "grpc.server"));
        // Each handler span is a root of its own trace.
        assert!(
            spans
                .iter()
                .all(|span| span.parent_span_id == SpanId::INVALID)
        );
    }
}
