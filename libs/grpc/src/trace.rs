//! One span per RPC, continuing the caller's W3C trace, a request id on every request, and the
//! `rpc.server.call.duration` metric (rate, errors and duration per method).

use std::{
    task::{Context, Poll},
    time::Instant,
};

use futures_util::future::BoxFuture;
use pim_telemetry::metrics::{KeyValue, RPC_SERVER_DURATION};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument as _;

const REQUEST_ID: &str = "x-request-id";

#[derive(Debug, Clone)]
pub struct TraceLayer {
    service: &'static str,
}

impl TraceLayer {
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced {
            inner,
            service: self.service,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    service: &'static str,
}

impl<S, B> Service<http::Request<B>> for Traced<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let request_id = match request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
        {
            Some(id) if !id.is_empty() && id.len() <= 128 => id.to_owned(),
            _ => uuid::Uuid::now_v7().to_string(),
        };
        if let Ok(value) = http::HeaderValue::from_str(&request_id) {
            request.headers_mut().insert(REQUEST_ID, value);
        }
        let method = method_of(request.uri().path());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system.name = "grpc",
            rpc.method = %method,
            rpc.response.status_code = tracing::field::Empty,
            pim.service = self.service,
            request_id = %request_id,
        );
        pim_telemetry::set_parent_from_http(&span, request.headers(), self.service);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = inner.call(request).await;
                let code = match &result {
                    Ok(response) => pim_telemetry::grpc_status_of(response.headers()),
                    Err(_) => tonic::Code::Unknown,
                };
                let name = pim_telemetry::grpc_status_name(code);
                recorded.record("rpc.response.status_code", name);
                if is_server_error(code) {
                    recorded.record("otel.status_code", "ERROR");
                }
                RPC_SERVER_DURATION.record(
                    started.elapsed().as_secs_f64(),
                    &[
                        KeyValue::new("rpc.system.name", "grpc"),
                        KeyValue::new("rpc.method", method),
                        KeyValue::new("rpc.response.status_code", name),
                    ],
                );
                result
            }
            .instrument(span),
        )
    }
}

/// `package.Service/Method`, or `_OTHER` for a path that names no method: the metric's
/// attribute must stay a bounded set whatever a caller sends.
fn method_of(path: &str) -> String {
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method))
            if !service.is_empty()
                && !method.is_empty()
                && !method.contains('/')
                && path.len() <= 200 =>
        {
            format!("{service}/{method}")
        }
        _ => "_OTHER".to_owned(),
    }
}

/// The semantic conventions' server errors; the others are the caller's.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_in_full_and_junk_paths_are_one_value() {
        assert_eq!(
            method_of("/pim.activation.v1.ActivationService/Submit"),
            "pim.activation.v1.ActivationService/Submit"
        );
        assert_eq!(method_of("/"), "_OTHER");
        assert_eq!(method_of("/a/b/c"), "_OTHER");
        assert_eq!(method_of(&format!("/s/{}", "x".repeat(300))), "_OTHER");
    }

    #[test]
    fn the_status_comes_from_the_headers_or_is_ok() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(pim_telemetry::grpc_status_of(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(
            pim_telemetry::grpc_status_name(pim_telemetry::grpc_status_of(&headers)),
            "NOT_FOUND"
        );
        assert!(is_server_error(tonic::Code::Internal));
        assert!(!is_server_error(tonic::Code::PermissionDenied));
    }
}
