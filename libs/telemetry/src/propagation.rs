//! W3C trace context across process boundaries: gRPC metadata and stream entries.

use std::collections::HashMap;

use opentelemetry::{
    propagation::{Extractor, Injector},
    trace::TraceContextExt as _,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The two W3C headers, as carried on an event envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: String,
}

/// The trace context of the current span, for writing onto an outbox row.
pub fn current_trace_context() -> TraceContext {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    TraceContext {
        traceparent: carrier.remove("traceparent").unwrap_or_default(),
        tracestate: carrier.remove("tracestate").unwrap_or_default(),
    }
}

/// The current trace id in hex, or empty when there is none.
pub fn current_trace_id() -> String {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Makes `span` a child of the context carried by an event envelope, as part of `service`
/// (see [`crate::in_service`]). Without a carried context it starts a trace of its own.
pub fn set_parent_from(span: &tracing::Span, trace: &TraceContext, service: &str) {
    let cx = crate::routing::scoped(extract(trace), service);
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "could not set the parent of a span");
    }
}

fn extract(trace: &TraceContext) -> opentelemetry::Context {
    if trace.traceparent.is_empty() {
        return opentelemetry::Context::new();
    }
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), trace.traceparent.clone());
    if !trace.tracestate.is_empty() {
        carrier.insert("tracestate".to_owned(), trace.tracestate.clone());
    }
    // From an empty context: the span continues the carried trace and nothing of the code
    // that happens to run it.
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&opentelemetry::Context::new(), &carrier)
    })
}

/// A span that resumes a request's own trace (stored with the request), linked to the current
/// span: the call that caused this step. So one trace follows an activation across the calls
/// of different people (the requestor's submission, the approver's decision) and the timers in
/// between.
pub fn resume(trace: &TraceContext, step: &str) -> tracing::Span {
    let caused_by = tracing::Span::current()
        .context()
        .span()
        .span_context()
        .clone();
    let span = tracing::info_span!("resume", otel.name = %step);
    // It belongs to the context doing the step, not to whichever started the trace.
    let mut cx = extract(trace);
    if let Some(scope) = crate::routing::current_scope() {
        cx = cx.with_value(scope);
    }
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "could not resume a request's trace");
    }
    if caused_by.is_valid() {
        span.add_link(caused_by);
    }
    span
}

/// Makes `span` continue the trace of an incoming gRPC request served by `service`.
pub fn set_parent_from_http(span: &tracing::Span, headers: &http::HeaderMap, service: &str) {
    let cx = crate::routing::scoped(extract_from_http(headers), service);
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "could not continue the caller's trace");
    }
}

fn extract_from_http(headers: &http::HeaderMap) -> opentelemetry::Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&opentelemetry::Context::new(), &Headers(headers))
    })
}

/// Writes the current span's context into outgoing gRPC metadata.
pub fn inject_into_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);
    impl Injector for Metadata<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                tonic::metadata::MetadataValue::try_from(value),
            ) {
                self.0.insert(key, value);
            }
        }
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut Metadata(metadata))
    });
}

/// The span of one timer firing that found work: `timer` names what fired (for example
/// `activation.request_expiry`), `key` what it fired for. It belongs to the context whose task
/// runs it ([`crate::in_service`]).
pub fn timer_span(timer: &str, key: &str) -> tracing::Span {
    tracing::info_span!(
        "timer.fire",
        otel.name = %timer,
        otel.kind = "internal",
        pim.timer = %timer,
        pim.timer.key = %key,
    )
}
