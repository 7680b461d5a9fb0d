//! A client span around every outgoing call, so a trace shows the call from the caller's side
//! (its duration includes the network and the peer's queue) and the peer's server span hangs
//! under it. The trace context injected into the call's metadata is this span's.

use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, Service, http};
use tracing::Instrument as _;

/// Wraps a client's service (the authorized channel) in client spans.
#[derive(Debug, Clone)]
pub struct ClientSpans<S> {
    inner: S,
}

impl<S> ClientSpans<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, R> Service<http::Request<B>> for ClientSpans<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let method = path.trim_start_matches('/');
        let (service, name) = method.split_once('/').unwrap_or((method, ""));
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %method,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system.name = "grpc",
            rpc.method = %method,
            rpc.service = %service,
            rpc.method.name = %name,
            rpc.response.status_code = tracing::field::Empty,
            server.address = request.uri().host().unwrap_or_default(),
        );
        // Entered while the inner service is called: its interceptor injects the current
        // span's context into the request, and that must be this span's.
        let future = span.in_scope(|| self.inner.call(request));
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => pim_telemetry::grpc_status_of(response.headers()),
                    Err(_) => tonic::Code::Unavailable,
                };
                recorded.record(
                    "rpc.response.status_code",
                    pim_telemetry::grpc_status_name(code),
                );
                if code != tonic::Code::Ok {
                    recorded.record("otel.status_code", "ERROR");
                }
                result
            }
            .instrument(span),
        )
    }
}
