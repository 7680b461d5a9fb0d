//! Logs and traces: the `tracing` subscriber (JSON or pretty) with per-layer filters, the OTLP
//! span exporter driven by the standard `OTEL_*` variables, and W3C trace-context propagation
//! through gRPC metadata and stream entries.

mod propagation;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
pub use propagation::{
    TraceContext, current_trace_context, current_trace_id, inject_into_metadata, resume,
    set_parent_from, set_parent_from_http,
};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// How to set up telemetry for a process.
#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    pub service_name: String,
    pub log_filter: String,
    pub log_json: bool,
    pub trace_filter: String,
    /// OTLP/gRPC endpoint; `None` turns span export off.
    pub otlp_endpoint: Option<String>,
}

/// Keeps the tracer provider alive; flush it on shutdown.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now; tests call it before reading what the collector got.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.force_flush()
        {
            tracing::warn!(error = %e, "flushing spans failed");
        }
    }

    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "shutting down the tracer provider failed");
        }
    }
}

/// Installs the global subscriber and propagator. Must run inside a Tokio runtime when OTLP
/// export is on, because the tonic exporter needs one. Calling it twice fails.
pub fn init(options: &TelemetryOptions) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Separate filters per layer: one global filter at `warn` would disable the INFO spans that
    // carry trace context, and trace ids would come out as zeros.
    let log_filter = EnvFilter::try_new(&options.log_filter).context("PIM_LOG")?;
    let fmt_layer = if options.log_json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_filter(log_filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_filter(log_filter)
            .boxed()
    };
    let (otel_layer, provider) = match &options.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig as _;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .context("OTEL_EXPORTER_OTLP_ENDPOINT")?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(options.service_name.clone())
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("pim");
            let trace_filter =
                EnvFilter::try_new(&options.trace_filter).context("PIM_TRACE_FILTER")?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(trace_filter);
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}
