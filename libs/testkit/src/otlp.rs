//! A real OTLP/gRPC receiver of traces and metrics on port 0, so telemetry tests see exactly
//! what a collector would.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    metrics::v1::metric::Data,
    resource::v1::Resource,
};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Request, Response, Status};

/// One received span, reduced to what trace tests compare.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub service_name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CONSUMER`, …
    pub kind: String,
    pub attributes: HashMap<String, String>,
    pub links: Vec<String>,
}

/// One data point of a received metric.
#[derive(Debug, Clone)]
pub struct ReceivedMetric {
    pub name: String,
    pub unit: String,
    pub service_name: String,
    pub attributes: HashMap<String, String>,
    /// The value of a sum or gauge point, or the count of a histogram point.
    pub value: f64,
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    metrics: Arc<Mutex<Vec<ReceivedMetric>>>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .map(|a| text(a.value.as_ref()))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = service_name(resource_spans.resource.as_ref());
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    let kind =
                        opentelemetry_proto::tonic::trace::v1::span::SpanKind::try_from(span.kind)
                            .map(|k| k.as_str_name().to_owned())
                            .unwrap_or_default();
                    received.push(ReceivedSpan {
                        name: span.name,
                        trace_id: hex::encode(span.trace_id),
                        span_id: hex::encode(span.span_id),
                        parent_span_id: hex::encode(span.parent_span_id),
                        service_name: service_name.clone(),
                        kind,
                        attributes: attributes(&span.attributes),
                        links: span.links.iter().map(|l| hex::encode(&l.span_id)).collect(),
                    });
                }
            }
        }
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(received);
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut received = Vec::new();
        for resource_metrics in request.into_inner().resource_metrics {
            let service_name = service_name(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    let point = |attrs: &[KeyValue], value: f64| ReceivedMetric {
                        name: metric.name.clone(),
                        unit: metric.unit.clone(),
                        service_name: service_name.clone(),
                        attributes: attributes(attrs),
                        value,
                    };
                    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
                    let number = |v: Option<N>| match v {
                        Some(N::AsDouble(d)) => d,
                        Some(N::AsInt(i)) => i as f64,
                        None => 0.0,
                    };
                    match &metric.data {
                        Some(Data::Sum(sum)) => received.extend(
                            sum.data_points
                                .iter()
                                .map(|p| point(&p.attributes, number(p.value))),
                        ),
                        Some(Data::Gauge(gauge)) => received.extend(
                            gauge
                                .data_points
                                .iter()
                                .map(|p| point(&p.attributes, number(p.value))),
                        ),
                        Some(Data::Histogram(histogram)) => received.extend(
                            histogram
                                .data_points
                                .iter()
                                .map(|p| point(&p.attributes, p.count as f64)),
                        ),
                        _ => {}
                    }
                }
            }
        }
        if let Ok(mut metrics) = self.metrics.lock() {
            metrics.extend(received);
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Receives OTLP trace and metric exports until dropped.
pub struct OtlpReceiver {
    pub endpoint: String,
    collector: Collector,
    _shutdown: DropGuard,
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let collector = Collector::default();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone().cancelled_owned();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector.clone()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    signal,
                ),
        );
        Ok(Self {
            endpoint,
            collector,
            _shutdown: shutdown.drop_guard(),
        })
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Every data point received so far, oldest first.
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.collector
            .metrics
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}
