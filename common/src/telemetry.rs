//! Tracing initialisation shared by both programs: human or JSON logs on stderr, plus
//! OpenTelemetry spans over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What the OTLP layer exports, whatever `RUST_LOG` says about the logs.
const OTLP_FILTER: &str =
    "info,tessera::store=debug,tonic=off,h2=off,hyper=off,tower=off,opentelemetry=off";

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
    // exported whenever spans are, yet absent from the logs at the usual `info`.
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(EnvFilter::new(OTLP_FILTER))
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
