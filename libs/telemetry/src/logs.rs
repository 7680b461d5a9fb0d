//! The log layer: JSON lines (or pretty text for a terminal) under their own filter, each JSON
//! line carrying the `trace_id` and `span_id` of the span it was written in, so a log line
//! leads to its trace and back.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{
        FmtContext, FormatEvent, FormatFields, MakeWriter,
        format::{JsonFields, Writer},
    },
    registry::LookupSpan,
};

/// A boxed log layer writing to `writer`, filtered by `filter` (`PIM_LOG` syntax).
pub fn log_layer<S, W>(
    filter: &str,
    json: bool,
    writer: W,
) -> anyhow::Result<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("PIM_LOG: {e}"))?;
    Ok(if json {
        tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    })
}

/// A subscriber that only logs, as [`crate::init`]'s log layer does: for tests that read what
/// a service writes.
pub fn log_dispatch<W>(filter: &str, writer: W) -> anyhow::Result<tracing::Dispatch>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    Ok(tracing::Dispatch::new(
        tracing_subscriber::registry().with(log_layer(filter, true, writer)?),
    ))
}

/// Puts `trace_id` and `span_id` first in each JSON line written inside a recorded span.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The OpenTelemetry layer makes an entered span's context the current one; asking the
        // `tracing` dispatcher instead would re-enter it from inside its own callback.
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let ids = span.span_context();
        match line.strip_prefix('{') {
            Some(rest) if ids.is_valid() => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id(),
                ids.span_id()
            ),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_or(Ok(0), |mut all| {
                all.extend_from_slice(bytes);
                Ok(bytes.len())
            })
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_in_a_span_carry_its_trace_and_span_ids_and_others_none() {
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(log_layer("info", true, move || writer.clone()).unwrap_or_else(|e| panic!("{e}")))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            tracing::info!("outside");
            let span = tracing::info_span!("request");
            let _entered = span.enter();
            tracing::info!("inside");
            let cx = span.context();
            let ids = cx.span().span_context().clone();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        });
        let text = String::from_utf8(lines.0.lock().map(|l| l.clone()).unwrap_or_default())
            .unwrap_or_default();
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(parsed.len(), 2, "{text}");
        assert!(parsed[0].get("trace_id").is_none(), "{}", parsed[0]);
        assert_eq!(parsed[1]["trace_id"], trace_id.as_str());
        assert_eq!(parsed[1]["span_id"], span_id.as_str());
        assert_eq!(parsed[1]["fields"]["message"], "inside");
    }
}
