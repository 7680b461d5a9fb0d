//! A client span for every database statement, made after the fact from the duration the
//! driver reports (SeaORM's metric callback runs in the caller's task right after the
//! statement), as a child of the span that ran it. Only the statement's text with its
//! placeholders is recorded, never its bound values.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use opentelemetry::{
    KeyValue,
    trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _},
};
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Called once by `init`: where database spans go.
pub(crate) fn install(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// Records one statement that took `elapsed` and just ended. `system` is `postgresql` or
/// `sqlite`. Nothing is made unless the current span is sampled: with export off this costs a
/// lookup.
pub fn db_statement(system: &'static str, sql: &str, elapsed: Duration, failed: bool) {
    let Some(tracer) = TRACER.get() else { return };
    let parent = tracing::Span::current().context();
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let end = SystemTime::now();
    let operation = sql
        .split_whitespace()
        .next()
        .unwrap_or("QUERY")
        .to_ascii_uppercase();
    let mut span = tracer
        .span_builder(operation.clone())
        .with_kind(SpanKind::Client)
        .with_start_time(end.checked_sub(elapsed).unwrap_or(end))
        .with_attributes([
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.query.text", truncate(sql, 2048).to_owned()),
        ])
        .start_with_context(tracer, &parent);
    if failed {
        span.set_status(Status::error("the statement failed"));
    }
    span.end_with_timestamp(end);
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
