//! Tracing initialisation shared by both programs: human or JSON logs on stderr, plus
//! OpenTelemetry spans over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::subscriber::Interest;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, dynamic_filter_fn};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// What the OTLP layer exports, whatever `RUST_LOG` says about the logs.
const OTLP_FILTER: &str =
    "info,tessera::store=debug,tonic=off,h2=off,hyper=off,tower=off,opentelemetry=off";
/// Target of the issuer's per-operation store spans (`store::shared::SPAN_TARGET`).
const STORE_SPANS: &str = "tessera::store";

/// The OTLP layer's filter: [`OTLP_FILTER`], and store spans only inside a span the layer
/// exports. A store call outside any request (the bundle pump polls the event log every
/// second, the scheduler checks rotations) would otherwise be a one-span trace each time.
fn otlp_filter<S>() -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let inside_a_trace = dynamic_filter_fn(|metadata, cx| {
        metadata.target() != STORE_SPANS || !metadata.is_span() || cx.lookup_current().is_some()
    })
    .with_callsite_filter(|metadata| {
        if metadata.target() == STORE_SPANS && metadata.is_span() {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    });
    EnvFilter::new(OTLP_FILTER).and(inside_a_trace)
}

/// Keeps the OTLP pipeline alive; flushes on drop.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Shutdown blocks on a final export; never let it stall process exit for long.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

/// Installs the global subscriber. `otlp_endpoint` enables span export (call from inside
/// a tokio runtime). `json` switches log lines to JSON.
pub fn init(service_name: &'static str, otlp_endpoint: Option<&str>, json: bool) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = otlp_endpoint.and_then(|endpoint| build_provider(service_name, endpoint));
    // The exporter's own gRPC stack must not be traced, or every export would emit spans.
    // The issuer's per-operation store spans are debug-level (target `tessera::store`):
    // exported within traced work, yet absent from the logs at the usual `info`.
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(otlp_filter())
    });
    let registry = tracing_subscriber::registry().with(otel_layer);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
    };
    if result.is_err() {
        // Already initialised (tests that start several servers in one process).
        return TelemetryGuard { provider: None };
    }
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
    TelemetryGuard { provider }
}

use tracing_subscriber::Layer as _;

fn build_provider(service_name: &'static str, endpoint: &str) -> Option<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build();
    match exporter {
        Ok(exporter) => Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service_name)
                        .build(),
                )
                .build(),
        ),
        Err(error) => {
            eprintln!("otlp exporter disabled: {error}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};

    use super::*;

    /// Keeps every exported span.
    #[derive(Clone, Debug, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn store_spans_are_exported_inside_traced_work_only_and_the_exporters_stack_never() {
        let spans = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("test"))
                .with_filter(otlp_filter()),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        // A background poll: no span around it.
        tracing::debug_span!(target: "tessera::store", "store.events_after").in_scope(|| {});
        tracing::info_span!("grpc.server").in_scope(|| {
            tracing::debug_span!(target: "tessera::store", "store.client").in_scope(|| {});
            tracing::debug_span!("handler").in_scope(|| {
                tracing::debug_span!(target: "tessera::store", "store.session").in_scope(|| {});
            });
            tracing::info_span!(target: "h2::proto", "h2").in_scope(|| {});
        });
        provider.force_flush().unwrap();

        let mut names: Vec<String> = spans
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|span| span.name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["grpc.server", "store.client", "store.session"]);
    }
}
