//! Several contexts in one process (`pim dev`, the test harness), each exporting its spans
//! under its own `service.name`.
//!
//! A process has one `tracing` subscriber and so one tracer, but each context gets a span
//! pipeline (batch processor, exporter and resource) of its own. Which context a span belongs
//! to travels in the OpenTelemetry context as a [`ServiceScope`]: the gRPC server layer, the
//! event consumer and [`in_service`] put it there, every child span inherits it through its
//! parent's context, and [`RoutingSpanProcessor`] sends the finished span to that context's
//! pipeline. Spans no context claims go to the process's own pipeline.

use std::{collections::HashMap, sync::Arc, time::Duration};

use opentelemetry::{Context, KeyValue, trace::FutureExt as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanProcessor},
};

/// The context a span belongs to, carried in the OpenTelemetry context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceScope(pub Arc<str>);

/// Marks a span for routing between `on_start` (which sees the parent context) and `on_end`
/// (which sees only the span); removed before export.
const ROUTE: &str = "pim.route";

/// Adds `service`'s scope to `cx`, unless it already has one.
pub(crate) fn scoped(cx: Context, service: &str) -> Context {
    if cx.get::<ServiceScope>().is_some() {
        cx
    } else {
        cx.with_value(ServiceScope(service.into()))
    }
}

/// The scope of the code running now: of the current span, or of the task ([`in_service`]).
pub(crate) fn current_scope() -> Option<ServiceScope> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    tracing::Span::current()
        .context()
        .get::<ServiceScope>()
        .cloned()
        .or_else(|| Context::current().get::<ServiceScope>().cloned())
}

/// Runs `future` as part of `service`: spans started in it without a parent of their own
/// (timer firings, background loops) are that context's.
pub fn in_service<F: std::future::Future>(
    service: &str,
    future: F,
) -> opentelemetry::trace::WithContext<F> {
    future.with_context(scoped(Context::current(), service))
}

/// Sends each finished span to the pipeline of the context it belongs to.
#[derive(Debug)]
pub(crate) struct RoutingSpanProcessor<P> {
    fallback: P,
    contexts: HashMap<Arc<str>, P>,
}

impl<P: SpanProcessor> RoutingSpanProcessor<P> {
    /// `contexts` are (scope, processor, resource); the fallback gets the provider's resource.
    pub(crate) fn new(fallback: P, contexts: Vec<(String, P, Resource)>) -> Self {
        let contexts = contexts
            .into_iter()
            .map(|(scope, mut processor, resource)| {
                processor.set_resource(&resource);
                (Arc::from(scope), processor)
            })
            .collect();
        Self { fallback, contexts }
    }

    fn each(&self, f: impl Fn(&P) -> OTelSdkResult) -> OTelSdkResult {
        let mut result = f(&self.fallback);
        for processor in self.contexts.values() {
            if let Err(e) = f(processor) {
                result = Err(e);
            }
        }
        result
    }
}

impl<P: SpanProcessor> SpanProcessor for RoutingSpanProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        use opentelemetry::trace::Span as _;
        match cx.get::<ServiceScope>() {
            Some(ServiceScope(service)) if self.contexts.contains_key(service) => {
                span.set_attribute(KeyValue::new(ROUTE, service.to_string()));
                self.contexts[service].on_start(span, cx);
            }
            _ => self.fallback.on_start(span, cx),
        }
    }

    fn on_end(&self, mut span: SpanData) {
        let route = span
            .attributes
            .iter()
            .position(|kv| kv.key.as_str() == ROUTE);
        let processor = match route {
            Some(i) => {
                let service = span.attributes.swap_remove(i).value.to_string();
                self.contexts
                    .get(service.as_str())
                    .unwrap_or(&self.fallback)
            }
            None => &self.fallback,
        };
        processor.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.each(SpanProcessor::force_flush)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.each(|p| p.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The contexts keep the resources they were built with.
        self.fallback.set_resource(resource);
    }
}
