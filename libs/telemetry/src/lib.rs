//! Logs, traces and metrics: the `tracing` subscriber (JSON or pretty) with per-layer filters,
//! span and metric export over OTLP configured by the standard `OTEL_*` variables, W3C
//! trace-context propagation through gRPC metadata and stream entries, and the catalogue of
//! PIM's metrics.

mod db_spans;
mod grpc_status;
mod logs;
pub mod metrics;
mod options;
mod propagation;
mod routing;

use anyhow::Context as _;
pub use db_spans::db_statement;
pub use grpc_status::{grpc_status_name, grpc_status_of};
pub use logs::{log_dispatch, log_layer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    metrics::SdkMeterProvider,
    propagation::TraceContextPropagator,
    trace::{BatchSpanProcessor, Sampler, SdkTracerProvider},
};
pub use options::{Root, Sampling, TelemetryOptions};
pub use propagation::{
    TraceContext, current_trace_context, current_trace_id, inject_into_metadata, resume,
    set_parent_from, set_parent_from_http, timer_span,
};
pub use routing::{ServiceScope, in_service};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Keeps the providers alive; flush them on shutdown.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span and the metrics' current values now; tests call it before
    /// reading what the collector got.
    pub fn flush(&self) {
        if let Some(tracer) = &self.tracer
            && let Err(e) = tracer.force_flush()
        {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        if let Some(meter) = &self.meter
            && let Err(e) = meter.force_flush()
        {
            tracing::warn!(error = %e, "flushing metrics failed");
        }
    }

    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(e) = tracer.shutdown()
        {
            tracing::warn!(error = %e, "shutting down the tracer provider failed");
        }
        if let Some(meter) = self.meter
            && let Err(e) = meter.shutdown()
        {
            tracing::warn!(error = %e, "shutting down the meter provider failed");
        }
    }
}

/// Installs the global subscriber, propagator and meter provider. Must run inside a Tokio
/// runtime when OTLP export is on, because the tonic exporters need one. Calling it twice
/// fails.
pub fn init(options: &TelemetryOptions) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let log = log_layer(&options.log_filter, options.log_json, std::io::stdout)?;
    let tracer = tracer_provider(options)?;
    // Spans are made even with export off, unsampled: trace context still propagates and log
    // lines still carry trace ids. Separate filters per layer: one global filter at `warn`
    // would disable the INFO spans that carry trace context, and trace ids would be zeros.
    let trace_filter = EnvFilter::try_new(&options.trace_filter).context("PIM_TRACE_FILTER")?;
    db_spans::install(tracer.tracer("pim.db"));
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("pim"))
        .with_filter(trace_filter);
    let meter = match &options.otlp_endpoint {
        Some(endpoint) => Some(meter_provider(options, endpoint)?),
        None => None,
    };
    tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init()
        .context("installing the tracing subscriber")?;
    if let Some(meter) = &meter {
        opentelemetry::global::set_meter_provider(meter.clone());
    }
    Ok(TelemetryGuard {
        tracer: Some(tracer),
        meter,
    })
}

/// One span pipeline per hosted context (see [`routing`]), or one for the process.
fn tracer_provider(options: &TelemetryOptions) -> anyhow::Result<SdkTracerProvider> {
    let Some(endpoint) = &options.otlp_endpoint else {
        return Ok(SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build());
    };
    let pipeline = || -> anyhow::Result<BatchSpanProcessor> {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .context("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        Ok(BatchSpanProcessor::builder(exporter).build())
    };
    let builder = SdkTracerProvider::builder()
        .with_sampler(options.sampling.sampler())
        .with_resource(options.resource(&options.service_name));
    let builder = if options.contexts.is_empty() {
        builder.with_span_processor(pipeline()?)
    } else {
        let contexts = options
            .contexts
            .iter()
            .map(|context| {
                let resource = options.resource(&format!("pim-{context}"));
                Ok((context.clone(), pipeline()?, resource))
            })
            .collect::<anyhow::Result<_>>()?;
        builder.with_span_processor(routing::RoutingSpanProcessor::new(pipeline()?, contexts))
    };
    Ok(builder.build())
}

/// Metrics pushed over OTLP every `metric_interval`, cumulative, so a collector can expose them
/// to Prometheus as they are.
fn meter_provider(options: &TelemetryOptions, endpoint: &str) -> anyhow::Result<SdkMeterProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter)
        .with_interval(options.metric_interval)
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(options.resource(&options.service_name))
        .build())
}
