//! `pim bench --suite tracing`: what exporting traces costs. The activation suite runs in
//! child processes of this binary (a process installs its tracing subscriber once), in
//! alternate order, with export off and with export on: every span sampled and exported over
//! OTLP/gRPC to a receiver in this process that discards what it gets. Reported: the median
//! sustained throughput of each, and the share of it that export keeps.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use pim_config::ServiceName;
use tokio_util::sync::CancellationToken;

use super::BenchOptions;

/// Runs of each mode; the median of each is reported.
const ROUNDS: usize = 3;
/// Set in a child: install telemetry from the `OTEL_*` variables it is given.
const CHILD: &str = "PIM_BENCH_TELEMETRY";

/// In a child of this suite, telemetry as `pim dev` has it: each context under its own name,
/// export on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. `None` elsewhere.
pub(super) fn child_telemetry() -> anyhow::Result<Option<pim_telemetry::TelemetryGuard>> {
    if std::env::var_os(CHILD).is_none() {
        return Ok(None);
    }
    let mut options =
        pim_telemetry::TelemetryOptions::from_vars("pim-bench", |key| std::env::var(key).ok())?;
    options.log_json = false;
    options.contexts = ServiceName::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    Ok(Some(pim_telemetry::init(&options)?))
}

pub(super) async fn run(options: &BenchOptions) -> anyhow::Result<()> {
    let receiver = DiscardingReceiver::start().await?;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which mode goes first, so whatever warms up across runs favours neither.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for export in order {
            let before = receiver.spans();
            let run = child(options, export.then_some(receiver.endpoint.as_str())).await?;
            let spans = receiver.spans() - before;
            println!(
                "{:<44} {:>9.0} ops/s  {:>9.0} ops/s caught up  {:>8} spans received",
                format!(
                    "  round {}: export {}",
                    round + 1,
                    if export { "on" } else { "off" }
                ),
                run.sustained,
                run.caught_up,
                spans
            );
            anyhow::ensure!(
                export == (spans > 0),
                "export {} but the receiver got {spans} spans",
                if export { "on" } else { "off" }
            );
            if export { &mut on } else { &mut off }.push(run);
        }
    }
    let median = |runs: &[Run], of: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(of).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    for (what, of) in [
        ("Submit", (|r: &Run| r.sustained) as fn(&Run) -> f64),
        ("until caught up", |r: &Run| r.caught_up),
    ] {
        let (on, off) = (median(&on, of), median(&off, of));
        println!(
            "{:<44} {:>9.0} ops/s on, {:>9.0} ops/s off: export keeps {:.1}%",
            format!("tracing: sustained activation, {what}"),
            on,
            off,
            100.0 * on / off
        );
    }
    Ok(())
}

/// The activation suite's sustained throughput in one child process.
struct Run {
    /// Submits per second, `in_flight` at a time.
    sustained: f64,
    /// Activations per second until every consumer caught up.
    caught_up: f64,
}

async fn child(options: &BenchOptions, endpoint: Option<&str>) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args(["bench", "--suite", "activation"])
        .args(["--database-url", &options.database_url])
        .args(["--redis-url", &options.redis_url])
        // The baseline and the other runs of the suite as short as they go; the sustained
        // run as configured.
        .args([
            "--events",
            "1600",
            "--seconds",
            "1",
            "--activation-rate",
            "50",
        ])
        .args(["--approvals", "10"])
        .args(["--activations", &options.activations.to_string()])
        .args(["--in-flight", &options.in_flight.to_string()])
        .env(CHILD, "1")
        .env("PIM_LOG", "warn")
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(endpoint) = endpoint {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    let output = command
        .output()
        .await
        .context("running the activation suite")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "the activation suite failed: {}\n{stdout}",
        output.status
    );
    let ops_of = |prefix: &str| -> anyhow::Result<f64> {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .with_context(|| format!("no {prefix:?} line in:\n{stdout}"))?;
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let at = tokens
            .iter()
            .position(|t| *t == "ops/s")
            .with_context(|| format!("no ops/s in {line:?}"))?;
        Ok(tokens[at - 1].parse()?)
    };
    Ok(Run {
        sustained: ops_of("activation: sustained")?,
        caught_up: ops_of("(until every consumer caught up)")?,
    })
}

/// An OTLP/gRPC endpoint that accepts traces and metrics and keeps only a count of spans.
struct DiscardingReceiver {
    endpoint: String,
    spans: Arc<AtomicU64>,
    _stop: tokio_util::sync::DropGuard,
}

#[derive(Clone)]
struct Discard(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Discard {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Discard {
    async fn export(
        &self,
        _request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl DiscardingReceiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let spans = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let service = Discard(spans.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(MetricsServiceServer::new(service))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        Ok(Self {
            endpoint,
            spans,
            _stop: stop.drop_guard(),
        })
    }

    fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}
