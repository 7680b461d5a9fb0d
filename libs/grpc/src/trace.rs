//! One span per RPC, continuing the caller's W3C trace, and a request id on every request.

use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
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
        let path = request.uri().path();
        let (rpc_service, rpc_method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %rpc_service,
            rpc.method = %rpc_method,
            pim.service = self.service,
            request_id = %request_id,
        );
        pim_telemetry::set_parent_from_http(&span, request.headers());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request).instrument(span))
    }
}
